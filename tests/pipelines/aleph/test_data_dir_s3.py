"""``--data-dir s3://BUCKET/PREFIX``: a training and a sweep whose Ray storage, checkpoints,
results and MLflow artifacts live in a bucket of a real S3-compatible server (moto's, on
127.0.0.1), through the real ``geolip`` command line (each command starts its own local Ray, which
inherits the AWS environment as a cluster's nodes get it from their runtime environment).

The local work directory (``$GEOLIP_SCRATCH``) is wiped between commands: a resumed run finds its
checkpoint on the store alone, as a run restarted on another node would, and a contrast sweep
reads the battery's final checkpoints from the bucket.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from s3 import s3_server

from pipelines.tracking import client

pytestmark = pytest.mark.slow
GEOLIP = str(Path(sys.executable).with_name("geolip"))
TRAIN = ("train", "aleph", "--corpus", "builtin:tiny", "--scale", "smoke", "--workers", "1")
SWEEP = ("--scale", "smoke", "--seeds", "1", "--corpus", "builtin:tiny", "--workers", "1")


@pytest.fixture(scope="module")
def s3():
    with s3_server() as srv:
        yield srv


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


def test_a_training_lives_on_the_store_and_resumes_from_it(s3, tmp_path):
    env, scratch = _env(s3, tmp_path), tmp_path / "scratch"
    data = f"s3://{s3.bucket}/train"
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    args = (*TRAIN, "--name", "s3run", "--data-dir", data, "--tracking-uri", tracking)
    _geolip(args, env, tmp_path, scratch)

    keys = s3.keys("train/")
    prefix = "train/ray_results/s3run/checkpoint_"
    ckpts = sorted({k.split("/")[3] for k in keys if k.startswith(prefix) and k.count("/") > 3})
    assert ckpts, keys
    assert f"train/ray_results/s3run/{ckpts[-1]}/train_state.pt" in keys
    final = "train/runs/aleph/s3run/final/"
    assert {final + f for f in ("manifest.json", "model.safetensors", "meta.json")} <= set(keys)
    assert final + "train_state.pt" not in keys  # optimizer state stays in Ray's storage
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


def test_a_sweep_and_its_contrast_read_each_other_through_the_store(s3, tmp_path):
    env, scratch = _env(s3, tmp_path), tmp_path / "scratch"
    data = f"s3://{s3.bucket}/sweeps"
    common = (*SWEEP, "--data-dir", data, "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db")
    battery = ("sweep", "seed-battery", "--arms", "kernel/sparse", "--name", "bat")
    _geolip((*battery, *common), env, tmp_path, scratch)
    keys = s3.keys("sweeps/")
    assert "sweeps/sweeps/bat/sweep.json" in keys
    assert any(k.startswith("sweeps/sweeps/bat/tune/") for k in keys)  # Tune's state
    for trial in ("bat-kernel-sparse-s0",):
        assert f"sweeps/runs/aleph/{trial}/final/manifest.json" in keys
        assert any(k.startswith(f"sweeps/ray_results/{trial}/checkpoint_") for k in keys)

    taken = _geolip((*battery, *common), env, tmp_path, scratch, code=2)
    assert f"already exists ({data}/sweeps/bat)" in taken.stderr

    contrast = _geolip(("sweep", "contrast", "--name", "con", *common), env, tmp_path, scratch)
    out = contrast.stdout
    assert "sweep con: 1 trial in 1 phase(s)" in out  # the battery's, found, not retrained
    assert "kernel/sparse" in out and "skip" not in out
    store = client(f"sqlite:///{tmp_path}/mlflow.db")
    exp = store.get_experiment_by_name("geolip-sweeps").experiment_id
    runs = store.search_runs([exp], "tags.sweep = 'con' and tags.kind = 'contrast'")
    assert runs and all(r.info.status == "FINISHED" for r in runs)
