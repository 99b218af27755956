"""Evaluation regimes (spec §8) and the training step/loop/schedule (spec §3.5, §7.3)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from geolip.aleph.bpb import bpb_streamed, bpb_windowed, target_nll_windowed
from geolip.aleph.config import TrainConfig
from geolip.aleph.data import trigram_view
from geolip.aleph.train import (
    NonFiniteLossError,
    build_optimizer,
    build_scheduler,
    train,
    train_step,
)
from geolip.aleph.train.optim import lr_factor

LN2 = math.log(2.0)


class CodeModel(nn.Module):
    """A stand-in LM whose NLL at a position is a unique function of the *target* trigram's index.

    The stream's trigram t encodes t in its bytes, so the total NLL scored by an evaluator equals
    ``Σ f(t)`` over the targets it scored — double-scored or skipped targets change the sum.
    """

    def __init__(self, T: int) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(seq_trigrams=T)
        self.dummy = nn.Parameter(torch.zeros(()))

    @staticmethod
    def f(t: torch.Tensor) -> torch.Tensor:
        return (t.double() + 1).sqrt()  # irrational: sums of different subsets differ

    def forward(self, ids, targets, state=None):
        t = targets[..., 0].long() * 256 + targets[..., 1].long()
        return SimpleNamespace(nll=self.f(t), state=state)


def _index_stream(n: int, extra: int) -> np.ndarray:
    """Trigram t = (t // 256, t % 256, 7); then ``extra`` trailing bytes."""
    t = np.arange(n)
    tri = np.stack([t // 256, t % 256, np.full(n, 7)], axis=1).astype(np.uint8)
    return np.concatenate([tri.reshape(-1), np.full(extra, 9, np.uint8)])


@pytest.mark.parametrize(("n", "T"), [(101, 32), (33, 32), (70, 8), (5, 32)])
def test_bpb_windowed_scores_every_target_once(n, T):
    arr = _index_stream(n, extra=2)
    assert len(arr) % 3 == 2
    res = bpb_windowed(CodeModel(T), arr, T=T, batch=3)
    assert res.regime == "windowed"
    assert res.bytes_scored == 3 * (n - 1)
    assert res.bytes_dropped == 2
    assert res.bytes_unscored == 3 + 2
    expected = float(CodeModel.f(torch.arange(1, n)).sum())
    assert res.nll_nats * (n - 1) == pytest.approx(expected, rel=1e-12)
    assert res.bpb == pytest.approx(res.nll_nats / (3 * LN2), rel=1e-12)


@pytest.mark.parametrize(("n", "T"), [(101, 32), (70, 8), (5, 32)])
def test_target_nll_is_each_target_in_order(n, T):
    """Per target, in target order: what a paired Δ between two models needs."""
    nll, dropped = target_nll_windowed(CodeModel(T), _index_stream(n, extra=1), T=T, batch=3)
    assert dropped == 1 and nll.dtype == torch.float64
    torch.testing.assert_close(nll, CodeModel.f(torch.arange(1, n)).double(), rtol=1e-12, atol=0)


@pytest.mark.parametrize(("n", "T", "streams"), [(101, 16, 1), (101, 16, 3), (20, 32, 2)])
def test_bpb_streamed_scores_each_stream_after_its_first_trigram(n, T, streams):
    arr = _index_stream(n, extra=1)
    res = bpb_streamed(CodeModel(T), arr, n_streams=streams, T=T)
    per = n // streams
    targets = [s * per + p for s in range(streams) for p in range(1, per)]
    assert res.bytes_scored == 3 * streams * (per - 1)
    assert res.bytes_dropped == 1 + 3 * (n - per * streams)
    expected = float(CodeModel.f(torch.tensor(targets)).sum())
    assert res.nll_nats * len(targets) == pytest.approx(expected, rel=1e-12)


def test_too_short_streams_are_refused():
    with pytest.raises(ValueError, match="2 trigrams"):
        bpb_windowed(CodeModel(8), np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="too few"):
        bpb_streamed(CodeModel(8), np.zeros(12, np.uint8), n_streams=3)


def test_streamed_equals_windowed_and_full_pass_in_one_segment(make_model, english):
    model = make_model("pmix", seed=30)
    arr = english[3000 : 3000 + 3 * 33 + 1]  # 33 trigrams (32 targets = T) + 1 dropped byte
    streamed = bpb_streamed(model, arr, n_streams=1)
    windowed = bpb_windowed(model, arr)
    tri, dropped = trigram_view(arr)
    assert dropped == 1
    with torch.no_grad():
        full = model(tri[None, :-1].long(), tri[None, 1:].long()).nll.double().mean()
    assert streamed.bpb == pytest.approx(windowed.bpb, abs=1e-6)
    assert streamed.nll_nats == pytest.approx(float(full), abs=1e-5)
    assert streamed.bytes_scored == windowed.bytes_scored == 3 * 32


def test_streamed_segments_equal_token_by_token_decode(make_model, english):
    model = make_model("byte", seed=31)
    arr = english[7000 : 7000 + 3 * 40]  # 40 trigrams, segments of T=16 with carried state
    res = bpb_streamed(model, arr, n_streams=1, T=16)
    tri, _ = trigram_view(arr)
    tri = tri.long().unsqueeze(0)
    with torch.no_grad():
        state, hs = None, []
        for t in range(39):
            h, state = model.step(tri[:, t], t % 16, state)
            hs.append(h)
        nll, _ = model.trigram_nll(torch.stack(hs, 1), tri[:, 1:])
    assert res.nll_nats == pytest.approx(float(nll.double().mean()), abs=1e-5)
    assert res.bytes_scored == 3 * 39


def test_train_loop_reduces_loss(make_model, english):
    model = make_model("byte", seed=32)
    cfg = TrainConfig(steps=60, batch_size=4, lr=3e-3, log_every=1, seed=3, amp="off")
    logged = []
    result = train(model, english[:40_000], cfg, on_log=logged.append)
    assert result.steps == 60 and len(result.history) == 60 and logged == result.history
    assert [h["step"] for h in result.history] == list(range(1, 61))
    assert all(math.isfinite(h["loss_main"]) for h in result.history)
    first = result.history[0]["loss_main"]
    last = float(np.mean([h["loss_main"] for h in result.history[-5:]]))
    # Measured ≈ 17 → ≈ 10 nats; a model that does not learn stays near 16.6 (uniform bytes).
    assert last < 0.7 * first and last < 13.0, f"loss did not fall: {first:.2f} → {last:.2f}"
    assert result.history[-1]["lr"] == pytest.approx(cfg.lr * cfg.lr_final_frac, rel=1e-6)


def test_non_finite_loss_raises_with_clear_message(make_model, text_windows):
    model = make_model("pmix", seed=33)
    with torch.no_grad():
        model.tail.proj[1].bias[5] = float("nan")
    cfg = TrainConfig(steps=10, batch_size=2, amp="off")
    opt = build_optimizer(model, cfg)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss nan at step 7"):
        train_step(model, opt, build_scheduler(opt, cfg), [text_windows(2, 32)], cfg, step=7)


def test_cosine_schedule_ends_at_final_fraction(make_model):
    cfg = TrainConfig(steps=20, lr=1e-3, lr_final_frac=0.1)
    assert lr_factor(0, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(0.55)
    assert lr_factor(20, cfg) == pytest.approx(0.1)
    assert lr_factor(500, cfg) == pytest.approx(0.1)  # holds the floor past the end
    factors = [lr_factor(s, cfg) for s in range(21)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))
    model = make_model(
        "byte", seed=34, codebook__preservation="slowlane", codebook__slowlane_mult=0.1
    )
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    assert {g["name"]: g["lr"] for g in opt.param_groups} == pytest.approx(
        {"main": 1e-3, "codebook": 1e-4}
    )
    for _ in range(cfg.steps):
        opt.step()
        sched.step()
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({"main": 1e-4, "codebook": 1e-5}, rel=1e-9)
    warm = TrainConfig(steps=20, lr=1e-3, warmup_steps=4)
    assert [lr_factor(s, warm) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_factor(20, warm) == pytest.approx(0.1)


def test_optimizer_is_plain_adam_without_weight_decay(make_model):
    model = make_model("pmix", seed=35)
    opt = build_optimizer(model, TrainConfig())
    assert type(opt) is torch.optim.Adam
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in model.parameters()}
