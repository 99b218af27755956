"""Ctrl-C in the commands that run on Ray: one ``geolip: error: interrupted: ...`` line saying
what was kept and how to continue, exit 130, no traceback, and the clean-up as before.

Each case runs the real command in its own process group and sends SIGINT to the whole group
once the command shows progress, as a terminal's Ctrl-C does (Ray's processes get it too).
Each starts a local Ray of its own: ~30-60 s apiece, hence ``slow``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from battery_harness import Case, interrupt_case

pytestmark = pytest.mark.slow

INTERRUPTED = 130


def corpus(tmp: Path) -> None:
    text = "".join(
        f"line {i}: the cat sat on the mat, and the dog sat on the log.\n" for i in range(400)
    )
    (tmp / "corpus.txt").write_text(text, encoding="utf-8")


def test_atlas_build_interrupted(tmp_path):
    """Interrupted mid-count: no atlas at --out (its staging directory is removed), nothing
    else under the case's directory changed."""
    case = Case(
        "atlas-build-ctrl-c",
        ("atlas", "build", "--corpus", "file:{tmp}/corpus.txt", "--out", "{tmp}/atlas"),
        "interrupted: nothing was written to",
        code=INTERRUPTED,
        setup=corpus,
    )
    message = interrupt_case(case, "interrupt", tmp_path, r"atlas (staged|map)")
    assert "run the same command again" in message
    assert not (tmp_path / "atlas").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".atlas")], "staging left"


def test_features_extract_interrupted(tmp_path):
    """Interrupted while the host encodes: no shards at --out, nothing else changed."""
    case = Case(
        "features-extract-ctrl-c",
        # The Ray Data pool's Ctrl-C (auto would encode this small request in process).
        ("features", "extract", "--corpus", "file:{tmp}/corpus.txt", "--out", "{tmp}/feat")
        + ("--engine", "ray"),
        "interrupted: nothing was kept; run the same `geolip features extract` command again",
        code=INTERRUPTED,
        setup=corpus,
    )
    interrupt_case(case, "interrupt", tmp_path, r"MapBatches|HostEncoder|Running")
    assert not (tmp_path / "feat").exists()


def test_train_aleph_interrupted(tmp_path):
    """Interrupted while training: the run stops, the line says whether a checkpoint was kept
    and which command continues; the MLflow run is marked KILLED, not FAILED or finished."""
    case = Case(
        "train-aleph-ctrl-c",
        (
            "train",
            "aleph",
            "--corpus",
            "file:{tmp}/corpus.txt",
            "--scale",
            "tiny",
            "--workers",
            "1",
        ),
        "interrupted: run aleph-",
        code=INTERRUPTED,
        setup=corpus,
    )
    message = interrupt_case(case, "interrupt", tmp_path, r"step \d+/", unchanged=False)
    assert "run the same command" in message
    runs = tmp_path / "data" / "runs" / "aleph"
    assert not list(runs.glob("*/final")), "an interrupted run published a final checkpoint"
    db = tmp_path / "data" / "mlflow" / "mlflow.db"
    assert _run_status(db, "geolip-aleph") == ["KILLED"]
    # The atlas and bank it built before training are finished builds, kept as such.
    assert _run_status(db, "geolip-data") == ["FINISHED", "FINISHED"]


def test_train_svae_interrupted(tmp_path):
    """Interrupted after its first checkpoint: the line names the kept checkpoints and
    ``--resume``; the checkpoint directory is there."""
    case = Case(
        "train-svae-ctrl-c",
        ("train", "svae", "--data", "images:structured", "--no-control", "--workers", "1"),
        "checkpoints so far are kept in",
        code=INTERRUPTED,
    )
    message = interrupt_case(case, "interrupt", tmp_path, r"main/step \d+/", unchanged=False)
    assert "with --resume to continue it" in message
    assert list((tmp_path / "data" / "ray_results").glob("svae-*/checkpoint_*"))


def _run_status(db: Path, experiment: str) -> list[str]:
    """The status of every MLflow run of ``experiment`` in the SQLite store ``db``."""
    import sqlite3

    query = (
        "SELECT runs.status FROM runs JOIN experiments"
        " ON runs.experiment_id = experiments.experiment_id WHERE experiments.name = ?"
    )
    with sqlite3.connect(db) as con:
        return [row[0] for row in con.execute(query, (experiment,))]
