"""System metrics of training runs (``pipelines.system_metrics``): the settings, the monitor of
one node against a real SQLite store, and real tiny runs on the session's local Ray."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from pipelines.errors import GeolipError
from pipelines.system_metrics import ENABLE_ENV, INTERVAL_ENV, SAMPLES_ENV, node_monitor, settings
from pipelines.tracking import check_tracking, default_tracking_uri, ensure_experiment, start_run

CORPUS = "builtin:python-docs"
TINY = ("train.steps=8", "train.log_every=4", "train.batch_size=4", "train.eval_windows=8")
KEYS = ("cpu_utilization_percentage", "system_memory_usage_megabytes")


@pytest.fixture
def fast(monkeypatch):
    """A sample a second, each logged (read on the driver, which puts them in the config)."""
    monkeypatch.setenv(INTERVAL_ENV, "1")
    monkeypatch.setenv(SAMPLES_ENV, "1")
    monkeypatch.delenv(ENABLE_ENV, raising=False)


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _system(uri: str, run_id: str) -> dict[str, list]:
    """``{key: [(step, value), ...]}`` of the run's ``system/`` metrics."""
    client = _client(uri)
    keys = [k for k in client.get_run(run_id).data.metrics if k.startswith("system/")]
    return {
        k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys
    }


def _assert_node_metrics(system: dict, nodes=("node_0",)) -> None:
    assert {k.split("/")[1] for k in system} == set(nodes), sorted(system)
    for node in nodes:
        for key in KEYS:
            history = system[f"system/{node}/{key}"]
            assert history, key
            steps = [s for s, _ in history]
            assert len(steps) == len(set(steps)), f"{key}: a step logged twice {steps}"
    memory = system[f"system/{nodes[0]}/system_memory_usage_megabytes"]
    assert all(v > 0 for _, v in memory)


def test_settings_default_on_with_mlflows_interval(monkeypatch) -> None:
    for name in (ENABLE_ENV, INTERVAL_ENV, SAMPLES_ENV):
        monkeypatch.delenv(name, raising=False)
    assert settings() == {"interval": 10.0, "samples": 1}
    assert settings(False) is None
    monkeypatch.setenv(INTERVAL_ENV, "2.5")
    monkeypatch.setenv(SAMPLES_ENV, "3")
    assert settings() == {"interval": 2.5, "samples": 3}
    for off in ("false", "False", "0"):
        monkeypatch.setenv(ENABLE_ENV, off)
        assert settings() is None
    monkeypatch.setenv(ENABLE_ENV, "true")
    assert settings() == {"interval": 2.5, "samples": 3} and settings(False) is None


@pytest.mark.parametrize(
    ("name", "value"),
    [(ENABLE_ENV, "maybe"), (INTERVAL_ENV, "0"), (INTERVAL_ENV, "fast"), (SAMPLES_ENV, "1.5")],
)
def test_settings_refuse_bad_values_naming_the_variable(monkeypatch, name, value) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(GeolipError, match=name):
        settings()


def _context(local_rank: int, node_rank: int):
    return SimpleNamespace(get_local_rank=lambda: local_rank, get_node_rank=lambda: node_rank)


def test_one_monitor_per_node_logs_even_a_block_shorter_than_its_interval(tmp_path) -> None:
    uri = default_tracking_uri(tmp_path)
    check_tracking(uri)
    run = start_run(uri, ensure_experiment(uri, "sys"), "r")
    config = {"run_id": run.run_id, "tracking_uri": uri}
    config["system_metrics"] = {"interval": 30.0, "samples": 1}
    with node_monitor(config, _context(local_rank=1, node_rank=0)) as monitor:
        assert monitor is None  # the node's other workers: its first one logs for them
    with node_monitor(config, _context(local_rank=0, node_rank=3)) as monitor:
        assert monitor is not None
    with node_monitor(config, _context(local_rank=0, node_rank=3)):  # a second fit, same run
        pass
    with node_monitor({**config, "system_metrics": None}, _context(0, 0)) as monitor:
        assert monitor is None
    system = _system(uri, run.run_id)
    _assert_node_metrics(system, nodes=("node_3",))
    assert [s for s, _ in system["system/node_3/cpu_utilization_percentage"]] == [0, 1]
    run.finish()


def test_a_monitor_stops_and_logs_when_the_loop_raises(tmp_path) -> None:
    uri = default_tracking_uri(tmp_path)
    check_tracking(uri)
    run = start_run(uri, ensure_experiment(uri, "sys"), "r")
    config = {"run_id": run.run_id, "tracking_uri": uri}
    config["system_metrics"] = {"interval": 30.0, "samples": 1}
    with pytest.raises(RuntimeError, match="boom"), node_monitor(config, _context(0, 0)):
        raise RuntimeError("boom")
    assert "SystemMetricsMonitor" not in {t.name for t in threading.enumerate()}
    _assert_node_metrics(_system(uri, run.run_id))
    run.finish()


@pytest.mark.ray
@pytest.mark.slow
def test_two_workers_on_one_node_log_its_metrics_once(tmp_path, ray_session, fast) -> None:
    from pipelines.aleph.driver import train_aleph
    from pipelines.aleph.job import TrainJob
    from pipelines.runtime import RunContext
    from pipelines.scales import get_scale

    ctx = RunContext.create("geolip-aleph", tmp_path, workers=2, threads=1)
    run = get_scale("tiny").run_config("pmix", TINY)
    job = TrainJob(run=run, corpus=CORPUS, ctx=ctx, eval_bytes=30_000)
    out = train_aleph(job, progress=lambda s: None)
    _assert_node_metrics(_system(out.tracking_uri, out.run_id))


@pytest.mark.ray
@pytest.mark.slow
def test_no_system_metrics_flag_logs_none(tmp_path, ray_session, fast) -> None:
    from pipelines.cli import main

    argv = ["train", "aleph", "--corpus", CORPUS, "--data-dir", str(tmp_path), "--head", "pmix"]
    argv += [x for s in TINY for x in ("--set", s)]
    assert main([*argv, "--eval-bytes", "30000", "--no-system-metrics"]) == 0
    [run] = _runs(default_tracking_uri(tmp_path), "geolip-aleph")
    assert "bpb" in run.data.metrics
    assert not [k for k in run.data.metrics if k.startswith("system/")]


@pytest.mark.ray
@pytest.mark.slow
def test_svae_run_logs_its_node_metrics(tmp_path, ray_session, fast) -> None:
    from pipelines.cli import main

    argv = ["train", "svae", "--data", "images:structured", "--data-dir", str(tmp_path)]
    argv += ["--set", "train.steps=10", "--set", "train.eval_every=10", "--no-control"]
    assert main(argv) == 0
    uri = default_tracking_uri(tmp_path)
    [run] = _runs(uri, "geolip-svae")
    _assert_node_metrics(_system(uri, run.info.run_id))


def _runs(uri: str, experiment: str) -> list:
    client = _client(uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
