"""MLflow artifacts in a bucket: an ``mlflow server`` whose artifact root is ``s3://`` on a real
S3-compatible server (moto's, on 127.0.0.1), and a tiny ``geolip train aleph`` logging to it. The
client uploads the checkpoint, verdict and plots straight to the bucket (boto3, endpoint and key
from the standard AWS environment); the tracking database itself stays an SQLite file beside the
server (a database file cannot live in a bucket)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from s3 import s3_server

from pipelines.runtime import free_port
from pipelines.tracking import client
from pipelines.ui import stop_ui

pytestmark = pytest.mark.slow
GEOLIP = str(Path(sys.executable).with_name("geolip"))


def _mlflow_server(db: Path, artifacts: str, env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}"]
    command += ["--default-artifact-root", artifacts, "--no-serve-artifacts", "--workers", "1"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        command,
        env=env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        cwd=db.parent,
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


def test_a_training_logs_its_artifacts_into_the_bucket(tmp_path):
    with s3_server() as s3:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
        env |= s3.env()
        proc, url = _mlflow_server(tmp_path / "mlflow.db", f"s3://{s3.bucket}/mlflow", env)
        try:
            train = [GEOLIP, "train", "aleph", "--corpus", "builtin:tiny", "--scale", "smoke"]
            train += ["--workers", "1", "--tracking-uri", url, "--data-dir", str(tmp_path / "d")]
            done = subprocess.run(
                train, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
            )
            assert done.returncode == 0, done.stderr[-3000:]
            store = client(url)
            (run,) = store.search_runs([store.get_experiment_by_name("geolip-aleph").experiment_id])
            assert run.info.status == "FINISHED"
            assert run.info.artifact_uri.startswith(f"s3://{s3.bucket}/mlflow/")
        finally:
            stop_ui(proc)
        prefix = run.info.artifact_uri.split(f"s3://{s3.bucket}/", 1)[1]
        keys = {k[len(prefix) + 1 :] for k in s3.keys(prefix)}
        assert {"checkpoint/model.safetensors", "checkpoint/config.json", "verdict.json"} <= keys
        assert any(k.startswith("plots/") and k.endswith(".png") for k in keys)
        assert not (tmp_path / "mlartifacts").exists() and not (tmp_path / "mlruns").exists()
