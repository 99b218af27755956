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


def test_sample_output_is_the_prompt_and_the_generated_bytes(tmp_path, capsys):
    from geolip.aleph.checkpoint import load_checkpoint
    from geolip.aleph.generate import generate

    ck = _checkpoint(tmp_path)
    argv = ["aleph", "sample", "--checkpoint", str(ck), "--prompt", "Zoë ", "--bytes", "200"]
    assert main([*argv, "--seed", "3", "--temperature", "1.5"]) == 0
    model, _, _ = load_checkpoint(ck)
    text = generate(model, "Zoë ".encode(), 200, temperature=1.5, seed=3)
    want = "Zoë " + text.decode("utf-8", errors="replace") + "\n"
    assert capsys.readouterr().out == want


def test_sample_flags_are_checked_before_the_checkpoint(tmp_path, capsys):
    """Bad flags are usage errors naming the flag, even when the checkpoint is missing too."""
    missing = str(tmp_path / "nope")
    for flag, value in [
        ("--bytes", "99999999999999999999"),
        ("--bytes", "10000001"),
        ("--bytes", "-1"),
        ("--temperature", "nan"),
        ("--temperature", "inf"),
        ("--temperature", "0"),
        ("--prompt", "\udcff\udcfe"),  # argv bytes b"\xff\xfe", as Python hands them over
    ]:
        assert main(["aleph", "sample", "--checkpoint", missing, flag, value]) == 2
        err = capsys.readouterr().err.strip()
        assert f"argument {flag}:" in err and "nope" not in err and "\n" not in err
    assert main(["aleph", "sample", "--checkpoint", missing, "--prompt", "\udcff"]) == 2
    assert "not valid UTF-8 (byte 0xff at position 0)" in capsys.readouterr().err


def test_sample_stops_quietly_when_the_reader_leaves(tmp_path):
    """``geolip aleph sample ... | head -c 10``: the broken pipe ends the run at once, exit 0."""
    import subprocess
    import sys
    from pathlib import Path

    ck = _checkpoint(tmp_path)
    geolip = str(Path(sys.executable).with_name("geolip"))
    argv = [geolip, "aleph", "sample", "--checkpoint", str(ck), "--bytes", "10000000"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.read(10)
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert len(first) == 10 and proc.returncode == 0 and err == b""


def test_train_flags_are_usage_errors(capsys):
    for flag, value, says in [
        ("--eval-bytes", "0", ">= 1000"),
        ("--workers", "0", ">= 1"),
        ("--checkpoint-every", "-1", ">= 0"),
        ("--max-failures", "-1", ">= 0"),
    ]:
        assert main(["train", "aleph", "--corpus", "builtin:tiny", flag, value]) == 2
        err = capsys.readouterr().err.strip()
        assert f"argument {flag}: must be {says}" in err and "\n" not in err


def test_train_eval_bytes_default_is_the_scale_s(tmp_path):
    from pipelines.aleph.cli import job_from_args
    from pipelines.cli import build_parser, load_commands
    from pipelines.scales import get_scale

    parser = build_parser(load_commands())
    base = ["train", "aleph", "--corpus", "builtin:tiny", "--scale", "smoke"]
    base += ["--data-dir", str(tmp_path)]
    assert job_from_args(parser.parse_args(base)).eval_bytes == get_scale("smoke").eval_bytes
    assert job_from_args(parser.parse_args([*base, "--eval-bytes", "5000"])).eval_bytes == 5000
