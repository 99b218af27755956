"""``geolip submit`` against a real Ray head started here (``ray start --head`` on 127.0.0.1 with
its dashboard and job server, token auth as Ray's defaults set it).

The head gets its own temp dir, so the test session's own Ray is untouched, and it is stopped by
ending its ``ray start --block`` process group (``ray stop`` would stop every Ray here).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from ray_head import ray_head

from cluster.submit import client as job_client
from pipelines.cli import main

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def head():
    """A Ray head of the module's own (its dashboard URL), beside any other Ray here."""
    with ray_head() as url:
        yield url


def test_a_tiny_training_job_succeeds_and_its_outputs_are_on_the_shared_path(
    head, tmp_path, capsys
):
    """Waits by default (as `ray job submit`); the runtime env file's env vars reach the job,
    under the env geolip submit sets itself."""
    data = tmp_path / "shared"
    env_file = tmp_path / "env.yaml"
    env_file.write_text("env_vars:\n  GEOLIP_SUBMIT_MARK: from-file\n  GEOLIP_DATA: /elsewhere\n")
    argv = [
        "submit",
        "--address",
        head,
        "--runtime-env",
        str(env_file),
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
        "--scale",
        "smoke",
        "--set",
        "train.steps=10",
        "--set",
        "train.log_every=5",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "succeeded" in out
    info = job_client(head).get_job_info(re.search(r"submitted (\S+):", out).group(1))
    assert info.runtime_env["env_vars"]["GEOLIP_SUBMIT_MARK"] == "from-file"
    assert info.runtime_env["env_vars"]["GEOLIP_DATA"] == str(data)  # --data-dir wins
    (final,) = (data / "runs" / "aleph").glob("*/final")
    assert (final / "model.safetensors").exists() or any(final.iterdir())
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{data / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("geolip-aleph")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and "val_bpb" in run.data.metrics

    assert main(["jobs", "list", "--address", head]) == 0
    assert "SUCCEEDED" in capsys.readouterr().out


def test_no_wait_returns_at_once_and_the_job_can_be_followed(head, tmp_path, capsys):
    argv = ["submit", "--address", head, "--no-wait", "--working-dir", str(REPO)]
    argv += ["--data-dir", str(tmp_path), "--", "geolip", "info"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "follow it with: geolip jobs logs" in out
    sid = re.search(r"submitted (\S+):", out).group(1)
    assert main(["jobs", "logs", sid, "--follow", "--address", head]) == 0
    assert "geolip" in capsys.readouterr().out


def test_an_entrypoint_asking_for_gpus_waits_for_them(head, tmp_path, capsys):
    """--entrypoint-num-gpus reaches Ray: on this CPU-only head the job stays PENDING."""
    argv = ["submit", "--address", head, "--no-wait", "--entrypoint-num-gpus", "1"]
    argv += ["--working-dir", str(REPO), "--data-dir", str(tmp_path), "--", "geolip", "info"]
    assert main(argv) == 0
    sid = re.search(r"submitted (\S+):", capsys.readouterr().out).group(1)
    time.sleep(5)
    assert main(["jobs", "status", sid, "--address", head]) == 0
    assert "PENDING" in capsys.readouterr().out
    assert main(["jobs", "stop", sid, "--address", head]) == 0


def test_a_failing_job_returns_its_status_and_log_tail(head, tmp_path, capsys):
    # --wait, the default now, stays accepted for scripts written when waiting was opt-in.
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
    captured = capsys.readouterr()
    assert "refused the authentication token" in captured.err
    assert "not-the-token" not in captured.err + captured.out  # never printed
