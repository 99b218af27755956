"""``train.compile``: the compiled training step is used only after it reproduces eager mode;
a miscompiling or failing backend leaves training eager with the reason (real dynamo backends,
one of them deliberately wrong)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from geolip.aleph.model import AlephLM
from geolip.aleph.presets import tiny
from geolip.aleph.train import train
from geolip.aleph.train.compiled import compile_for_training
from geolip.config import ConfigError


@pytest.fixture
def setup(make_model, text_windows, english):
    """``setup(head, n_segments)`` -> (model, one micro-batch [4, T·n_seg + 1, 3], train config,
    the English bytes)."""

    def make(head="pmix", n_segments=2):
        model = make_model(head, seed=0, n_segments=n_segments)
        window = text_windows(4, model.cfg.seq_trigrams * n_segments)
        return model, window, tiny().train, english

    return make


def _wrong(gm, example_inputs):
    """A dynamo backend that miscompiles: every floating output 1% too large."""

    def run(*args):
        outs = gm(*args)
        return [o * 1.01 if torch.is_tensor(o) and o.is_floating_point() else o for o in outs]

    return run


def _broken(gm, example_inputs):
    raise RuntimeError("no code generator for this graph\nsecond line never shown")


@pytest.mark.slow
def test_a_faithful_compile_is_used_and_trains_as_eager(setup):
    """Inductor on CPU through the training loop: parity on two streamed segments (the second
    carries the hub state), then the steps from the same weights give eager's losses. About a
    minute of compiling on 2 cores, hence ``slow``."""
    model, _, tcfg, text = setup()
    twin = AlephLM(model.cfg, model.bank)
    twin.load_state_dict(model.state_dict())
    cfg = dataclasses.replace(tcfg, steps=2, log_every=1, compile=True)
    compiled = train(model, text, cfg)
    eager = train(twin, text, dataclasses.replace(cfg, compile=False))
    report = compiled.compile
    assert report is not None and report.used and report.worst < 1e-4, report
    assert "compiled and checked" in report.line() and eager.compile is None
    for a, b in zip(compiled.history, eager.history, strict=True):
        assert a["loss_main"] == pytest.approx(b["loss_main"], rel=1e-4)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)


def test_a_miscompiling_backend_is_caught_and_training_stays_eager(setup):
    model, window, tcfg, _ = setup(head="byte", n_segments=1)
    module, report = compile_for_training(model, window, tcfg, backend=_wrong)
    assert module is model and not report.used
    assert report.line().startswith("train.compile: training eagerly: compiled loss")


def test_a_failing_backend_is_reported_in_one_line(setup):
    model, window, tcfg, _ = setup(head="byte", n_segments=1)
    module, report = compile_for_training(model, window, tcfg, backend=_broken)
    assert module is model and not report.used
    assert "torch.compile failed" in report.reason and "no code generator" in report.reason
    assert "\n" not in report.line() and "second line" not in report.line()


def test_the_switch_is_a_boolean():
    with pytest.raises(ConfigError, match="train.compile must be true or false"):
        dataclasses.replace(tiny().train, compile="yes")
