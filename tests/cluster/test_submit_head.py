"""``geolip submit`` against a real Ray head started here (``ray start --head`` on 127.0.0.1 with
its dashboard and job server, token auth as Ray's defaults set it).

The head gets its own temp dir, so the test session's own Ray is untouched, and it is stopped by
ending its ``ray start --block`` process group (``ray stop`` would stop every Ray here).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.cli import main

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head():
    temp = tempfile.mkdtemp(prefix="rh-", dir="/tmp")  # short: Ray's socket paths have a limit
    port, dash = _free_port(), _free_port()
    cmd = [
        str(RAY),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        "--num-cpus=2",
        f"--temp-dir={temp}",
        "--disable-usage-stats",
    ]
    # The session's own Ray holds the default agent ports (52365...): a head beside it needs
    # its own, or its job agent cannot bind and no job can be submitted.
    for flag in (
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "metrics-export-port",
        "runtime-env-agent-port",
        "ray-client-server-port",
    ):
        cmd.append(f"--{flag}={_free_port()}")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # The head's jobs run `python` from its PATH: this environment's, as on an image.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2)
            break
        except OSError as exc:  # 401 (auth) also means the server is up
            if getattr(exc, "code", None) in (401, 403):
                break
            time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        pytest.fail("the Ray head's job server did not come up in 120 s")
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


def test_a_tiny_training_job_succeeds_and_its_outputs_are_on_the_shared_path(
    head, tmp_path, capsys
):
    data = tmp_path / "shared"
    argv = [
        "submit",
        "--address",
        head,
        "--wait",
        "--working-dir",
        str(REPO),
        "--data-dir",
        str(data),
        "--",
        "geolip",
        "train",
        "aleph",
        "--corpus",
        "builtin:tiny",
        "--set",
        "train.steps=10",
        "--set",
        "train.log_every=5",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "succeeded" in out
    (final,) = (data / "runs" / "aleph").glob("*/final")
    assert (final / "model.safetensors").exists() or any(final.iterdir())
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{data / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("geolip-aleph")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and "val_bpb" in run.data.metrics

    assert main(["jobs", "list", "--address", head]) == 0
    assert "SUCCEEDED" in capsys.readouterr().out


def test_a_failing_job_returns_its_status_and_log_tail(head, tmp_path, capsys):
    argv = [
        "submit",
        "--address",
        head,
        "--wait",
        "--working-dir",
        str(REPO),
        "--data-dir",
        str(tmp_path),
        "--",
        "geolip",
        "train",
        "aleph",
        "--corpus",
        "file:/no/such/corpus.txt",
    ]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "last 40 log lines" in out and "/no/such/corpus.txt" in out


def test_a_wrong_token_is_refused(head, monkeypatch, capsys):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    assert main(["jobs", "list", "--address", head]) != 0
    assert "refused the authentication token" in capsys.readouterr().err
