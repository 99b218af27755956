"""The KubeRay MLflow server's own command, run here against a real PostgreSQL that asks for a
password: the password travels as PGPASSWORD only (as the Secret gives it), runs land in the
database, artifacts on the "shared volume" (a temp dir standing in for /data)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import psycopg
import pytest
import yaml

from pipelines.runtime import free_port
from tests.postgres import postgres

MANIFEST = Path(__file__).resolve().parents[2] / "cluster" / "kuberay" / "mlflow.yaml"


def _server_container() -> dict:
    (deployment,) = [
        d
        for d in yaml.safe_load_all(MANIFEST.read_text())
        if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "geolip-mlflow"
    ]
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _create_role_and_db(admin_uri: str, password: str) -> None:
    """What the postgres image does with POSTGRES_USER/POSTGRES_DB/POSTGRES_PASSWORD."""
    with psycopg.connect(admin_uri, password=password, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE mlflow LOGIN PASSWORD '{password}'")
        conn.execute("CREATE DATABASE mlflow OWNER mlflow")


def _wait_health(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the MLflow server exited"
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no MLflow server at {url} after {timeout:g} s")


@pytest.mark.slow
def test_manifest_mlflow_command_runs_on_postgres_with_the_password_from_the_env(tmp_path):
    container = _server_container()
    (command,) = container["args"]
    password = secrets.token_hex(12)
    port = free_port()
    data = tmp_path / "data"
    command = (
        command.replace("/data", str(data))
        .replace("--host 0.0.0.0", "--host 127.0.0.1")
        .replace("--port 5000", f"--port {port}")
    )
    log = tmp_path / "server.log"
    with postgres(password=password) as admin_uri:
        _create_role_and_db(admin_uri, password)
        db = urlsplit(admin_uri)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(PGHOST=db.hostname, PGPORT=str(db.port), PGPASSWORD=password)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        with log.open("w") as out:
            proc = subprocess.Popen(
                ["bash", "-c", command], env=env, stdout=out, stderr=out, start_new_session=True
            )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_health(url, proc)
            client = mlflow.MlflowClient(tracking_uri=url)
            exp = client.create_experiment("manifest")
            run = client.create_run(exp, run_name="through-the-manifest")
            client.log_metric(run.info.run_id, "loss", 0.5, step=3)
            client.log_text(run.info.run_id, "hello", "note.txt")
            client.set_terminated(run.info.run_id)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        mlflow_db = f"postgresql://mlflow@{db.hostname}:{db.port}/mlflow"
        with psycopg.connect(mlflow_db, password=password) as conn:
            names = conn.execute("SELECT name, status FROM runs").fetchall()
            steps = conn.execute("SELECT key, value, step FROM metrics").fetchall()
    assert names == [("through-the-manifest", "FINISHED")]
    assert steps == [("loss", 0.5, 3)]
    (note,) = (data / "mlflow" / "artifacts").rglob("note.txt")
    assert note.read_text() == "hello"
    assert password not in log.read_text()
    assert password not in command
