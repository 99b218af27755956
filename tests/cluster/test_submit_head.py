"""``geolip submit`` against a real Ray head started here (``ray start --head`` on 127.0.0.1 with
its dashboard and job server, token auth as Ray's defaults set it).

The head gets its own temp dir, so the test session's own Ray is untouched, and it is stopped by
ending its ``ray start --block`` process group (``ray stop`` would stop every Ray here).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ray_head import ray_head

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
