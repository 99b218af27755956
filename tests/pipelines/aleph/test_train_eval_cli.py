"""``geolip train aleph`` bad input (refused before any worker starts) and ``geolip eval``.

No Ray here: every mistake must be caught by ``prepare_job`` / the tracking check, and the eval
commands are single-process. The MLflow store is a real SQLite file under tmp.
"""

from __future__ import annotations

import dataclasses
import json
import socket

import numpy as np
import pytest
import torch
from clierr import cli_error

from geolip.aleph.bank import bank_from_bytes
from geolip.aleph.checkpoint import save_checkpoint
from geolip.aleph.model import AlephLM
from geolip.aleph.presets import tiny, with_head
from pipelines.cli import main

CORPUS = "builtin:python-docs"


def _train(tmp_path, *extra: str) -> list[str]:
    return ["train", "aleph", "--corpus", CORPUS, "--data-dir", str(tmp_path), *extra]


def _error(capsys) -> str:
    return cli_error(capsys)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--scale", "huge"], "argument --scale: invalid choice: 'huge'"),
        (["--head", "pmix9"], "argument --head: invalid choice: 'pmix9'"),
        (["--head", "pmix8"], "is now spelled --head pmix --set model.head.n_pointers=8"),
        (["--set", "train.nope=1"], "unknown key 'train.nope'"),
        (["--set", "model.head.nope=1"], "model.head.nope"),
        (["--set", "model.head=pmix"], "model.head"),
        (["--set", "model.head.kind=pmix8"], "model.head.kind"),
        (["--set", "model.d_model=abc"], "model.d_model"),
        (["--workers", "3"], "divisible by --workers 3"),
        (["--graft", "depth"], "--graft depth needs --init-from"),
        (["--graft", "sideways"], "argument --graft: invalid choice: 'sideways'"),
    ],
)
def test_bad_configs_fail_before_any_work(tmp_path, capsys, args, needle) -> None:
    assert main(_train(tmp_path, *args)) == 2
    assert needle in _error(capsys)
    assert not (tmp_path / "ray_results").exists()


def test_unreachable_tracking_server_is_refused_first(tmp_path, capsys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    assert main(_train(tmp_path, "--tracking-uri", f"http://127.0.0.1:{port}")) == 2
    err = _error(capsys)
    assert f"127.0.0.1:{port}" in err and "unreachable" in err
    assert not (tmp_path / "shards").exists()  # refused before even reading the corpus


def test_corpus_without_enough_validation_bytes(tmp_path, capsys) -> None:
    small = tmp_path / "small.txt"
    small.write_text("one short line of text\n")
    argv = ["train", "aleph", "--corpus", f"file:{small}", "--data-dir", str(tmp_path)]
    assert main(argv) == 2
    assert "validation" in _error(capsys)


def test_bank_and_donor_problems(tmp_path, capsys) -> None:
    bad_bank = tmp_path / "bank.safetensors"
    bad_bank.write_bytes(b"not a bank")
    assert main(_train(tmp_path, "--bank", str(bad_bank))) == 2
    assert "bank.safetensors" in _error(capsys)
    donor = _checkpoint(tmp_path, "byte")
    assert main(_train(tmp_path, "--init-from", str(donor), "--graft", "mixture")) == 2
    assert "pmix or apmix" in _error(capsys)
    assert (
        main(
            _train(
                tmp_path, "--init-from", str(donor), "--head", "byte", "--set", "model.d_model=32"
            )
        )
        == 2
    )
    err = _error(capsys)
    assert "d_model" in err and "choose --graft" in err


def _checkpoint(tmp_path, head="pmix"):
    run_cfg = with_head(tiny(), head)
    torch.manual_seed(0)
    bank = bank_from_bytes(b"the cat sat on the mat and the dog sat on the log " * 20, 64)
    model = AlephLM(run_cfg.model, bank if run_cfg.model.uses_bank else None)
    return save_checkpoint(tmp_path / f"ck-{head}", model, run_cfg)


def test_eval_aleph_equals_the_library_and_logs_a_run(tmp_path, capsys) -> None:
    from mlflow.tracking import MlflowClient

    from geolip.aleph.bpb import bpb_streamed, bpb_windowed
    from geolip.aleph.checkpoint import load_checkpoint
    from pipelines.byte_shards import build_byte_shards, read_side
    from pipelines.tracking import default_tracking_uri

    ck = _checkpoint(tmp_path)
    argv = [
        "eval",
        "aleph",
        str(ck),
        "--corpus",
        CORPUS,
        "--data-dir",
        str(tmp_path),
        "--eval-bytes",
        "20000",
        "--format",
        "json",
        "--prime-bytes",
        "50000",
        "--no-kn",  # KN builds an atlas on Ray: tests/pipelines/test_eval_kn.py
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    model, _, _ = load_checkpoint(ck)
    held = read_side(build_byte_shards(CORPUS, tmp_path), "validation", limit=20000)
    assert out["windowed"]["bpb"] == pytest.approx(bpb_windowed(model, held).bpb, abs=1e-12)
    assert out["streamed"]["bpb"] == pytest.approx(bpb_streamed(model, held, 8).bpb, abs=1e-12)
    names = [c["name"] for c in out["compressors"]]
    assert names == ["gzip -9", "bzip2 -9", "xz -9e", "zstd -19 --long"]
    assert all(0 < c["primed_bpb"] < c["bpb"] < 8 for c in out["compressors"])
    assert "kneser_ney" not in out
    # No MLflow run in the checkpoint: a new run in the geolip-eval experiment holds the figures.
    run = MlflowClient(default_tracking_uri(tmp_path)).get_run(out["mlflow_run_id"])
    assert run.data.metrics["eval/bpb_windowed"] == out["windowed"]["bpb"]
    assert "eval/compress/xz_9e/primed_bpb" in run.data.metrics


def test_eval_contrast_table_and_plot(tmp_path, capsys) -> None:
    from mlflow.tracking import MlflowClient

    from pipelines.tracking import default_tracking_uri

    ck = _checkpoint(tmp_path, "kernel")
    argv = [
        "eval",
        "contrast",
        str(ck),
        "--corpus",
        CORPUS,
        "--data-dir",
        str(tmp_path),
        "--windows",
        "8",
        "--seeds",
        "2",
        "--format",
        "json",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["op"] for r in out["rows"]] == ["permute", "randomize", "rotate"]
    assert all(r["n_seeds"] == 2 and np.isfinite(r["delta_bpb_mean"]) for r in out["rows"])
    client = MlflowClient(default_tracking_uri(tmp_path))
    plots = [a.path for a in client.list_artifacts(out["mlflow_run_id"], "plots")]
    assert plots == ["plots/contrast_all.png"]
    assert (
        main(
            [
                "eval",
                "contrast",
                str(ck),
                "--corpus",
                CORPUS,
                "--data-dir",
                str(tmp_path),
                "--ops",
                "twist",
                "--no-log",
            ]
        )
        == 2
    )
    assert "twist" in _error(capsys)


def test_auto_resume_continues_only_a_run_with_a_checkpoint(tmp_path) -> None:
    """``geolip demo``'s re-runs: a run that reached a checkpoint resumes, any other starts."""
    from pipelines.aleph.job import TrainJob, prepare_job
    from pipelines.errors import GeolipError
    from pipelines.runtime import RunContext
    from pipelines.scales import get_scale

    ctx = RunContext.create("geolip-aleph", tmp_path, auto_resume=True)
    job = TrainJob(run=get_scale("smoke").run_config(), corpus=CORPUS, ctx=ctx)
    first = prepare_job(job, progress=lambda s: None)
    assert first.ctx.resume is False and first.run_dir.exists()
    (tmp_path / "ray_results" / first.name / "checkpoint_2026-11-22_00-00-00.000000").mkdir(
        parents=True
    )
    again = prepare_job(job, progress=lambda s: None)
    assert again.name == first.name and again.ctx.resume is True
    with pytest.raises(GeolipError, match="already exists"):
        plain = dataclasses.replace(job, ctx=ctx.replace(auto_resume=False))
        prepare_job(plain, progress=lambda s: None)
