"""The atlas job's Ray session: joining a running Ray (or starting one through the caller's
policy), warming its workers while the driver stages, and the Ray Data settings of the map."""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable

from atlas.merge import warm_up

USAGE_ENV = "RAY_DATA_USAGE_DISABLED"


def start_ray(init_ray: Callable[[], None] | None) -> None:
    """``init_ray()`` unless Ray runs; with no ``init_ray``, a Ray that is not running is an error
    (the atlas layer has no start policy of its own)."""
    import ray

    if ray.is_initialized():
        return
    if init_ray is None:
        raise RuntimeError("build_atlas needs a running Ray: call ray.init() or pass init_ray")
    init_ray()


def warm_up_cluster() -> None:
    """Start one task per CPU that imports the map's code, and Ray Data's helper actors.

    Not waited for: they run while the driver stages. A cold worker spends ~2 s importing Ray
    Data, pandas, pyarrow and ``atlas`` before its first map task can start; the map's tasks
    then reuse these worker processes. Plain tasks: a warm-up Ray Data job would cost the driver
    its own ~1 s executor start (measured: it left the map waiting 4.6 s at 50 MB).
    """
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    task = ray.remote(num_cpus=1)(warm_up)
    for _ in range(cpus):
        task.remote()
    start_ray_data_actors()


def start_ray_data_actors() -> None:
    """Create Ray Data's helper actors now (each a process that imports Ray Data, ~1.5 s CPU).

    A cluster's first Ray Data execution creates them (stats, autoscaling coordinator; detached,
    so once per cluster; the usage-telemetry one is switched off, see ``data_context``);
    started while the driver stages, they no longer compete with the first map tasks for the
    CPUs (measured on 2 cores: the first map tasks start ~1 s sooner and run ~2x faster). Ray
    Data internals: skipped if they move.
    """
    getters = [
        ("ray.data._internal.stats", "get_or_create_stats_actor"),
        (
            "ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator",
            "get_or_create_autoscaling_coordinator",
        ),
    ]
    for module, name in getters:
        with contextlib.suppress(Exception):
            getattr(importlib.import_module(module), name)()


@contextlib.contextmanager
def data_context(progress: bool):
    """Ray Data settings of the map phase, restored afterwards."""
    import ray.data

    context = ray.data.DataContext.get_current()
    names = (
        "enable_progress_bars",
        "op_resource_reservation_enabled",
        "enable_stats_summary_collection",
    )
    saved = {name: getattr(context, name) for name in names}
    # One operator only: Ray Data's per-operator CPU reservation would just leave CPUs idle
    # (measured: with it, a 10 MB map ran its tasks one at a time on 2 CPUs). The
    # stats summaries would only start one more helper actor.
    values = (progress, False, False)
    for name, value in zip(names, values):
        setattr(context, name, value)
    # Ray Data's usage telemetry starts a helper actor on a fresh cluster whose start (~1 s of
    # CPU) competed with the first map tasks (measured at 50 MB on 2 CPUs); it is read at
    # execution time in this process, and the user's own setting wins.
    usage = os.environ.get(USAGE_ENV)
    os.environ.setdefault(USAGE_ENV, "1")
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        if usage is None:
            os.environ.pop(USAGE_ENV, None)
