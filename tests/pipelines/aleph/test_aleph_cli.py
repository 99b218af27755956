"""``geolip aleph sample`` and ``geolip demo`` as a user runs them (through ``main``)."""

from __future__ import annotations

import torch

from geolip.aleph.bank import bank_from_bytes
from geolip.aleph.checkpoint import save_checkpoint
from geolip.aleph.model import AlephLM
from geolip.aleph.presets import tiny, with_head
from pipelines.cli import main


def _checkpoint(tmp_path, head="pmix"):
    run_cfg = with_head(tiny(), head)
    torch.manual_seed(0)
    bank = bank_from_bytes(b"the cat sat on the mat and the dog sat on the log " * 20, 64)
    model = AlephLM(run_cfg.model, bank)
    return save_checkpoint(tmp_path / "ck", model, run_cfg)


def test_sample_prints_prompt_and_n_bytes(tmp_path, capsys):
    ck = _checkpoint(tmp_path)
    argv = ["aleph", "sample", "--checkpoint", str(ck), "--prompt", "The ", "--bytes", "40"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert first.startswith("The ")
    assert main(argv) == 0  # same seed, same text
    assert capsys.readouterr().out == first


def test_sample_bad_input_is_one_line_error(tmp_path, capsys):
    assert main(["aleph", "sample", "--checkpoint", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("geolip: error:") and "nope" in err and "\n" not in err
    ck = _checkpoint(tmp_path)
    long_prompt = "x" * (3 * tiny().model.seq_trigrams + 3)
    assert main(["aleph", "sample", "--checkpoint", str(ck), "--prompt", long_prompt]) == 2
    assert "position table" in capsys.readouterr().err
    assert main(["aleph", "sample", "--checkpoint", str(ck), "--bytes", "0"]) == 2
    assert "--bytes" in capsys.readouterr().err
