"""System metrics of a training run: MLflow's ``SystemMetricsMonitor``, one per node, logging
``system/node_<N>/...`` (CPU, memory, disk, network; GPUs with ``nvidia-ml-py``, the ``gpu``
extra) into the run the driver created.

MLflow starts its monitor only from the fluent ``mlflow.start_run``, where
``$MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING`` is read; runs here are made with
``MlflowClient.create_run`` (``pipelines.tracking``), so the Ray Train workers start it: the first
worker of each node (local rank 0), since a node's workers share its CPUs, memory and GPUs (NVML
sees every GPU of the node, whatever ``CUDA_VISIBLE_DEVICES`` says). ``N`` is Ray Train's node
rank. The monitor is given the store explicitly, so MLflow's global tracking URI is left alone.

The settings are read on the driver (:func:`settings`), where the command's environment is: a
cluster's workers do not see it. On by default; off with ``RunContext.system_metrics`` False
(``--no-system-metrics``) or ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false``. The CLI imports
this module at start-up, so mlflow (seconds to import) is imported only where a monitor starts.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import Iterator

from pipelines.errors import GeolipError

log = logging.getLogger(__name__)

ENABLE_ENV = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"
INTERVAL_ENV = "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"
SAMPLES_ENV = "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING"
PREFIX = "system/"
"""MLflow's prefix of the metrics its monitor logs."""
DEFAULT_INTERVAL = 10.0
"""Seconds between samples: MLflow's default."""
DEFAULT_SAMPLES = 1
"""Samples averaged into each logged point: MLflow's default."""


def is_training_metric(key: str) -> bool:
    """Whether ``key`` is the training's own, not a node's (its steps are samples, not steps)."""
    return not key.startswith(PREFIX)


def add_system_metrics_argument(p: argparse.ArgumentParser) -> None:
    """``--no-system-metrics`` (train aleph, train svae); read by :func:`system_metrics_setting`."""
    p.add_argument(
        "--no-system-metrics",
        action="store_true",
        help="log no CPU, memory, disk, network or GPU use of the nodes into the MLflow run "
        "(also: MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false)",
    )


def system_metrics_setting(args: argparse.Namespace) -> bool:
    """``RunContext.system_metrics`` from the flag and MLflow's variables (checked here)."""
    return enabled(not args.no_system_metrics)


def enabled(flag: bool = True) -> bool:
    """``flag`` (False: ``--no-system-metrics``), unless ``$MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING``
    is false; an unset variable leaves them on (MLflow's fluent API defaults to off). A bad
    value of MLflow's variables is refused here, before anything starts."""
    return settings(flag) is not None


def settings(flag: bool = True) -> dict | None:
    """The workers' ``system_metrics`` config, ``{"interval": SECONDS, "samples": N}`` from
    ``$MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` / ``$..._SAMPLES_BEFORE_LOGGING`` (MLflow's
    variables; defaults 10 s, 1), or None when off (:func:`enabled`)."""
    raw = os.environ.get(ENABLE_ENV, "").strip().lower()
    if raw not in ("", "true", "false", "1", "0"):
        raise GeolipError(f"${ENABLE_ENV}={raw!r}: expected true or false")
    if not flag or raw in ("false", "0"):
        return None
    return {
        "interval": _positive(INTERVAL_ENV, float, DEFAULT_INTERVAL),
        "samples": _positive(SAMPLES_ENV, int, DEFAULT_SAMPLES),
    }


def _positive(name: str, kind: type, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = 0
    if not value > 0:  # nan too
        raise GeolipError(f"${name}={raw!r}: expected a positive {kind.__name__}")
    return value


@contextlib.contextmanager
def node_monitor(config: dict, train_context) -> Iterator[object | None]:
    """MLflow's monitor of this worker's node while the block runs, when the run has system
    metrics (``config["system_metrics"]``, ``config["run_id"]``, ``config["tracking_uri"]``) and
    this is the node's first worker (``train_context``: ``ray.train.get_context()``); stopped,
    its last samples logged, however the block ends. Yields the monitor or None."""
    spec = config.get("system_metrics")
    if not spec or train_context.get_local_rank() != 0:
        yield None
        return
    node = f"node_{train_context.get_node_rank()}"
    monitor = _start(spec, config["run_id"], config["tracking_uri"], node)
    try:
        yield monitor
    finally:
        if monitor is not None:
            _stop(monitor)


def _start(spec: dict, run_id: str, uri: str, node: str):
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(
            run_id,
            sampling_interval=spec["interval"],
            samples_before_logging=spec["samples"],
            # A restarted worker group, a resumed run or a second fit into the same run
            # (the SVAE control) continues the steps instead of logging step 0 again.
            resume_logging=True,
            node_id=node,
            tracking_uri=uri,
        )
    except Exception as exc:  # psutil missing, the store unreachable: train without them
        log.warning("system metrics are off for this run: %s: %s", type(exc).__name__, exc)
        return None
    monitor.start()
    return monitor


def _stop(monitor) -> None:
    """Stop the sampling thread, then log one last point: the samples since its last one and
    the node's state now (a run shorter than one interval has no other)."""
    monitor.finish()
    try:
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()
    except Exception as exc:  # never mask the loop's own error, nor fail a finished run
        log.warning("the last system metrics were not logged: %s: %s", type(exc).__name__, exc)
