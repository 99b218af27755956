"""System metrics of training runs (``pipelines.system_metrics``): the settings, the monitor of
one node against a real SQLite store, and the switch. Real runs logging them on the session's
Ray: tests/pipelines/aleph/test_train_aleph.py (two workers, one node) and
tests/pipelines/svae/test_train_svae.py."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from pipelines.errors import GeolipError
from pipelines.system_metrics import ENABLE_ENV, INTERVAL_ENV, SAMPLES_ENV, node_monitor, settings
from pipelines.tracking import check_tracking, default_tracking_uri, ensure_experiment, start_run

CORPUS = "builtin:python-docs"
KEYS = ("cpu_utilization_percentage", "system_memory_usage_megabytes")


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


def test_no_system_metrics_flag_turns_the_monitor_off() -> None:
    """``--no-system-metrics`` reaches the run context, whose workers then get no monitor
    settings (a real run with metrics on: tests/pipelines/aleph/test_train_aleph.py and
    tests/pipelines/svae/test_train_svae.py)."""
    from pipelines.aleph.cli import job_from_args
    from pipelines.cli import build_parser, load_commands

    parser = build_parser(load_commands())
    argv = ["train", "aleph", "--corpus", CORPUS]
    assert job_from_args(parser.parse_args(argv)).ctx.system_metrics is True
    off = job_from_args(parser.parse_args([*argv, "--no-system-metrics"]))
    assert off.ctx.system_metrics is False and settings(off.ctx.system_metrics) is None
