"""The team's stack on one machine: a data directory in a bucket of a real S3-compatible server
(moto's, on 127.0.0.1), MLflow on a real PostgreSQL (Debian's, started here), and an
``mlflow server`` on that database whose artifact root is in the bucket; through the real
``geolip`` command line (each command starts its own local Ray, which inherits the AWS
environment as a cluster's nodes get it from their runtime environment).

- A training with ``--data-dir s3://...`` and ``--tracking-uri postgresql://...``: Ray Train's
  checkpoints, the run's inputs, final checkpoint, verdict and MLflow artifacts land in the
  bucket; the local work directory (``$GEOLIP_SCRATCH``) is wiped between commands, so the
  resumed run finds its checkpoint on the store alone, as a run restarted on another node would,
  and continues the same MLflow run without logging a step twice.
- A two-trial seed battery through the ``mlflow server`` (artifacts uploaded by the clients
  straight to the bucket, ``--no-serve-artifacts``), then a contrast sweep that finds the
  battery's plan and final checkpoints in the bucket.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from postgres import postgres
from s3 import s3_server

from pipelines.runtime import free_port
from pipelines.tracking import client
from pipelines.ui import stop_ui

pytestmark = pytest.mark.slow
GEOLIP = str(Path(sys.executable).with_name("geolip"))
TRAIN = ("train", "aleph", "--corpus", "builtin:tiny", "--scale", "smoke", "--workers", "1")
SWEEP = ("--scale", "smoke", "--seeds", "1", "--corpus", "builtin:tiny", "--workers", "1")


@pytest.fixture(scope="module")
def s3():
    with s3_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def database():
    with postgres() as uri:
        yield uri


def _mlflow_server(database: str, artifacts: str, env: dict, cwd: Path):
    """``mlflow server`` on ``database``, artifacts in the bucket; returns (process, URL)."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", database]
    command += ["--default-artifact-root", artifacts, "--no-serve-artifacts", "--workers", "1"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        command,
        env=env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2).close()
            return proc, url
        except OSError:
            assert proc.poll() is None, "mlflow server exited on start"
            time.sleep(0.5)
    stop_ui(proc)
    raise AssertionError(f"mlflow server did not answer on {url}")


def _geolip(
    args, env: dict, cwd: Path, scratch: Path, code: int = 0
) -> subprocess.CompletedProcess:
    shutil.rmtree(scratch, ignore_errors=True)  # a fresh node: nothing local survives
    done = subprocess.run(
        [GEOLIP, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == code, (done.stdout[-2000:], done.stderr[-3000:])
    return done


def _env(s3, tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "AWS_"))}
    return env | s3.env(GEOLIP_SCRATCH=str(tmp / "scratch"), XDG_CACHE_HOME=str(tmp / "cache"))


def test_a_training_lives_on_the_store_and_resumes_from_it(s3, database, tmp_path):
    env, scratch = _env(s3, tmp_path), tmp_path / "scratch"
    data = f"s3://{s3.bucket}/train"
    tracking = database
    args = (*TRAIN, "--name", "s3run", "--data-dir", data, "--tracking-uri", tracking)
    _geolip(args, env, tmp_path, scratch)

    keys = s3.keys("train/")
    prefix = "train/ray_results/s3run/checkpoint_"
    ckpts = sorted({k.split("/")[3] for k in keys if k.startswith(prefix) and k.count("/") > 3})
    assert ckpts, keys
    assert f"train/ray_results/s3run/{ckpts[-1]}/train_state.pt" in keys
    final = "train/runs/aleph/s3run/final/"
    assert {final + f for f in ("manifest.json", "model.safetensors", "meta.json")} <= set(keys)
    # The optimizer state is published with the final checkpoint (a donor on the store can be
    # continued, --graft continue) but not logged to MLflow.
    assert final + "train_state.pt" in keys
    assert not any(k.startswith("train/mlflow/") and k.endswith("train_state.pt") for k in keys)
    assert "train/runs/aleph/s3run/verdict.json" in keys
    assert any(k.startswith("train/runs/aleph/s3run/inputs/") for k in keys)
    store = client(tracking)
    (run,) = store.search_runs([store.get_experiment_by_name("geolip-aleph").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith(f"s3://{s3.bucket}/train/mlflow/artifacts/")
    assert any(k.startswith("train/mlflow/artifacts/") and k.endswith("verdict.json") for k in keys)
    assert not list(tmp_path.glob("s3*")), "the URI was turned into a local path"

    taken = _geolip(args, env, tmp_path, scratch, code=2)
    assert f"already exists ({data}/ray_results/s3run)" in taken.stderr

    resumed = _geolip((*args, "--resume"), env, tmp_path, scratch)
    assert "restored from its checkpoint" in resumed.stdout + resumed.stderr
    (again,) = store.search_runs([store.get_experiment_by_name("geolip-aleph").experiment_id])
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert again.data.tags["resumed"] == "true"
    steps = [m.step for m in store.get_metric_history(run.info.run_id, "bpb")]
    assert len(steps) == len(set(steps)), "a resumed run logged a step twice"
    marker = json.loads(
        s3.client().get_object(Bucket=s3.bucket, Key=final + "manifest.json")["Body"].read()
    )
    assert marker["run"] == "s3run" and marker["mlflow_run_id"] == run.info.run_id


def test_a_sweep_and_its_contrast_read_each_other_through_the_store(s3, database, tmp_path):
    env, scratch = _env(s3, tmp_path), tmp_path / "scratch"
    data = f"s3://{s3.bucket}/sweeps"
    proc, url = _mlflow_server(database, f"s3://{s3.bucket}/mlflow", env, tmp_path)
    try:
        common = (*SWEEP, "--data-dir", data, "--tracking-uri", url)
        arms = ("--arms", "kernel/sparse,pmix/sparse")
        battery = ("sweep", "seed-battery", *arms, "--name", "bat")
        _geolip((*battery, *common), env, tmp_path, scratch)
        taken = _geolip((*battery, *common), env, tmp_path, scratch, code=2)
        # Tune's state restored from the bucket on a fresh node: both trials found finished.
        again = _geolip((*battery, *common, "--resume"), env, tmp_path, scratch)
        con = ("sweep", "contrast", "--name", "con", *common)
        contrast = _geolip(con, env, tmp_path, scratch)
    finally:
        stop_ui(proc)
    keys = s3.keys("sweeps/")
    assert "sweeps/sweeps/bat/sweep.json" in keys
    assert any(k.startswith("sweeps/sweeps/bat/tune/") for k in keys)  # Tune's state
    trials = ("bat-kernel-sparse-s0", "bat-pmix-sparse-s0")
    for trial in trials:
        assert f"sweeps/runs/aleph/{trial}/final/manifest.json" in keys
        assert any(k.startswith(f"sweeps/ray_results/{trial}/checkpoint_") for k in keys)
    assert f"already exists ({data}/sweeps/bat)" in taken.stderr
    said = again.stdout + again.stderr
    assert "retrying" not in said and "training from step" not in said
    out = contrast.stdout
    assert "sweep con: 2 trials in 1 phase(s)" in out  # the battery's, found, not retrained
    assert "kernel/sparse" in out and "skip" not in out

    store = client(database)
    exp = store.get_experiment_by_name("geolip-sweeps").experiment_id
    runs = store.search_runs([exp], max_results=100)
    by_sweep = {}
    for r in runs:
        by_sweep.setdefault(r.data.tags.get("sweep"), []).append(r)
    assert all(r.info.status == "FINISHED" for r in runs), [
        (r.info.run_name, r.info.status) for r in runs
    ]
    assert len(by_sweep["bat"]) == 3 and len(by_sweep["con"]) == 3  # a parent + 2: no duplicates
    trained = [r for r in by_sweep["bat"] if r.data.tags.get("mlflow.parentRunId")]
    assert {r.info.run_name for r in trained} == set(trials)
    assert not any(r.data.tags.get("resumed") for r in trained)  # finished: not rerun
    for run in trained:  # uploaded by the clients straight to the bucket
        assert run.info.artifact_uri.startswith(f"s3://{s3.bucket}/mlflow/")
        prefix = run.info.artifact_uri.split(f"s3://{s3.bucket}/", 1)[1]
        names = {k[len(prefix) + 1 :] for k in s3.keys(prefix)}
        assert {"checkpoint/model.safetensors", "checkpoint/config.json", "verdict.json"} <= names
        assert any(k.startswith("plots/") and k.endswith(".png") for k in names)
    assert not (tmp_path / "mlartifacts").exists() and not (tmp_path / "mlruns").exists()
