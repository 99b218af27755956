"""A team's MLflow on PostgreSQL: a real server started here, a tiny training logging to it
directly (``--tracking-uri postgresql://...``) and a two-trial sweep through an ``mlflow server``
on the same database; a store that refuses is one line with its password hidden."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from postgres import postgres

from pipelines.tracking import client
from pipelines.ui import running_ui

pytestmark = pytest.mark.slow
GEOLIP = str(Path(sys.executable).with_name("geolip"))
TINY = ["--corpus", "builtin:tiny", "--set", "train.steps=10", "--set", "train.log_every=5"]


@pytest.fixture(scope="module")
def database():
    with postgres() as uri:
        yield uri


def _geolip(*argv: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    proc = subprocess.run(
        [GEOLIP, *argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_a_training_logs_straight_to_postgres(database, tmp_path):
    _geolip("train", "aleph", *TINY, "--workers", "1", "--tracking-uri", database, cwd=tmp_path)
    store = client(database)
    (run,) = store.search_runs([store.get_experiment_by_name("geolip-aleph").experiment_id])
    assert run.info.status == "FINISHED" and "val_bpb" in run.data.metrics
    steps = sorted(m.step for m in store.get_metric_history(run.info.run_id, "bpb"))
    assert steps == sorted(set(steps)) and steps[-1] == 10  # every step once
    assert not (tmp_path / "data" / "mlflow" / "mlflow.db").exists()  # no SQLite on the side


def test_a_two_trial_sweep_through_an_mlflow_server_on_postgres(database, tmp_path):
    with running_ui(database, tmp_path / "server") as url:
        sweep = ("sweep", "preservation", "--scale", "smoke", "--seeds", "1")
        _geolip(*sweep, "--arms", "apmix/free,apmix/spread", "--tracking-uri", url, cwd=tmp_path)
    store = client(database)
    exp = store.get_experiment_by_name("geolip-sweeps")
    runs = store.search_runs([exp.experiment_id], max_results=100)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    assert len(runs) == 3  # the parent and one run per trial: nothing duplicated


def test_a_store_that_refuses_is_one_line_without_its_password(tmp_path):
    uri = "postgresql://geolip:s3cret@127.0.0.1:9/postgres"
    proc = subprocess.run(
        [GEOLIP, "train", "aleph", *TINY, "--tracking-uri", uri],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("geolip: error: cannot open the MLflow store")
    assert "postgresql://geolip:***@127.0.0.1:9/postgres" in lines[0]
    assert "s3cret" not in proc.stderr + proc.stdout
    assert list(tmp_path.iterdir()) == []
