"""What every job shares at run time: the one Ray start policy, seeding, the fault hook, error
root causes, run-name checks, the Ray Train fit, and ``RunContext`` (GPU choice and the wait for
nodes: ``pipelines.capacity``).

``init_ray`` is the only place that starts Ray: a job connects to ``RAY_ADDRESS`` when it is set
(``auto`` for the newest ``ray start`` on this machine), else it starts a local Ray of its own
with at least one logical CPU per Ray Train worker plus one for a driver (a Tune trial's driver
and Ray Data's tasks need one beside the workers). It never joins another local Ray by guessing:
with no address, Ray would pick "the latest" of the instances it finds (and warn about the rest,
or refuse our CPU count), so the same command would land on different clusters. A job started in
a process that already runs Ray uses that one. Ray is imported lazily here: ``geolip --help`` and
the checks that run before Ray starts must not pay for it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import GeolipError, Interrupted, watch_sigint
from pipelines.paths import data_dir as resolve_data_dir
from pipelines.run_storage import data_root, has_checkpoint, storage_kwargs, work_dir
from pipelines.storage import Root, check_root, is_uri, parse_root
from pipelines.tracking import resolve_tracking_uri


@dataclass(frozen=True)
class RunContext:
    """Where a job's data and MLflow run live and how it runs on Ray (every job has one).

    Paths are absolute and the tracking URI resolved (Ray workers run in another cwd): build it
    with :meth:`create` from the command line's ``--data-dir`` / ``--tracking-uri``.
    """

    experiment: str
    """MLflow experiment name."""
    data_dir: Path
    """The data directory, or with ``storage`` the local work directory (``run_storage``)."""
    tracking_uri: str
    storage: str | None = None
    """``s3://BUCKET/PREFIX`` where ``--data-dir`` is on object storage (``run_storage``)."""
    workers: int = 1
    """Data-parallel Ray Train workers of one training run."""
    use_gpu: bool | None = None
    """None: GPUs when the cluster has them or its autoscaler may add them (``--gpu auto``)."""
    workers_gpus: float | None = None
    """GPUs per Ray Train worker (``--workers-gpus``; None: one each when GPUs are used)."""
    wait_nodes: int | None = None
    """Seconds to wait for the workers' resources (``--wait-nodes``; None: the default)."""
    max_failures: int = 2
    """Worker-group restarts Ray Train allows (each resumes from the last checkpoint)."""
    in_process: bool = False
    """Train a one-worker run in the calling process instead of a Ray Train worker group (a
    sweep's trial in its Tune trial process, which Tune retries from the run's last checkpoint;
    ``pipelines.train_session``)."""
    resume: bool = False
    auto_resume: bool = False
    """Resume if the run has a checkpoint, else start it (``geolip demo``'s re-runs)."""
    threads: int | None = None
    """torch threads per worker (None: the node's cores shared by its workers)."""
    system_metrics: bool = True
    """Log each node's CPU, memory, disk, network and GPU use into the training run
    (``pipelines.system_metrics``; off: ``--no-system-metrics``)."""
    tags: dict = field(default_factory=dict)
    """MLflow tags added to the run's own (a sweep's arm, seed, ...: the caller's win)."""
    fault: dict | None = None
    """Test hook (:func:`maybe_fail`): the last rank dies once after ``fault["step"]``."""

    @classmethod
    def create(
        cls,
        experiment: str,
        data_dir: str | Path | None = None,
        tracking_uri: str | None = None,
        remote_ok: bool = False,
        **settings,
    ) -> RunContext:
        """A context with ``--data-dir`` (default ``$GEOLIP_DATA`` or ``./data``) and
        ``--tracking-uri`` (default ``$MLFLOW_TRACKING_URI`` or SQLite under the data dir).

        ``remote_ok``: the command supports a data directory on object storage (its endpoint,
        bucket and credentials are probed here, one line each on failure)."""
        raw = str(data_dir) if data_dir is not None else os.environ.get("GEOLIP_DATA")
        if remote_ok and raw and is_uri(raw):
            flag = "--data-dir" if data_dir is not None else "--data-dir ($GEOLIP_DATA)"
            uri = parse_root(raw, flag).uri  # an unsupported scheme is refused first
            if not (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
                raise GeolipError(
                    f"{flag} {uri}: the default MLflow store is a SQLite file in the data "
                    "directory, which cannot live on object storage; pass --tracking-uri (an "
                    "MLflow server, or postgresql://) or set MLFLOW_TRACKING_URI"
                )
            root = check_root(raw, flag)  # endpoint, bucket, credentials
            work = work_dir(root.uri)
            uri = resolve_tracking_uri(tracking_uri, work)
            return cls(experiment, work, uri, storage=root.uri, **settings)
        data = resolve_data_dir(None if data_dir is None else str(data_dir))
        uri = resolve_tracking_uri(tracking_uri, data)
        return cls(experiment, data, uri, **settings)

    def device_name(self) -> str:
        """Where the workers compute, for the run's ``geolip.device`` tag: ``N x cuda`` or
        ``N x cpu`` (decided by ``capacity.claim``; ``auto`` before it)."""
        kind = {True: "cuda", False: "cpu", None: "auto"}[self.use_gpu]
        return f"{self.workers} x {kind}"

    def root(self) -> Root:
        """The data directory as a ``Root`` (the store's prefix with ``storage``)."""
        return data_root(self.data_dir, self.storage)

    def results(self, name: str) -> Root:
        """Ray Train's directory of run ``name`` (``DATA/ray_results/NAME``)."""
        return self.root().child("ray_results").child(name)

    def replace(self, **changes) -> RunContext:
        return dataclasses.replace(self, **changes)

    @property
    def engine(self) -> str:
        """How the run trains, as its ``job.engine`` param says: ``in-process`` or ``ray-train``."""
        return "in-process" if self.in_process else "ray-train"

    def check_workers(self) -> None:
        if self.workers < 1:
            raise GeolipError(f"--workers must be >= 1, got {self.workers}")
        if self.in_process and self.workers != 1:
            raise GeolipError(
                f"in-process training runs one worker, got --workers {self.workers}; use the "
                "Ray Train engine for data-parallel runs"
            )


def init_ray(workers: int = 1, cpus: int | None = None) -> None:
    """Start Ray for a job with ``workers`` Ray Train workers, unless it is running already.

    ``RAY_ADDRESS`` set: connect to that cluster. Else a new local Ray of this process with
    ``cpus`` logical CPUs (default: the machine's cores, and at least ``workers + 1``), whatever
    other Rays run here (``local_ray_options``). The dashboard stays on: it serves the state API
    that Ray Train's placement-group cleaner polls.
    """
    import ray

    if ray.is_initialized():
        return
    kwargs: dict = {"ignore_reinit_error": True, "logging_level": "WARNING"}
    if not os.environ.get("RAY_ADDRESS"):
        kwargs.update(local_ray_options(workers, cpus))
        quiet_local_auth_notice()
    elif env := cluster_env_vars(os.environ["RAY_ADDRESS"]):
        kwargs["runtime_env"] = {"env_vars": env}  # merged into a submitted job's own env
    ray.init(**kwargs)


TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
TRAIN_POLL_S = 0.25
"""How often Ray Train's controller polls its workers (Ray's default: 2 s).

A report (every checkpoint) and the end of training are seen by the controller only when it next
polls: at 2 s a small run spends most of its time waiting (an 8-step smoke training's fit took
22.8 s, 14.4 s at 0.25 s; 0.1 s gained nothing more). A poll is one small task per worker, and
a poll that does not answer in time is waited on, not counted as a failure (Ray marks a worker
dead only after ``RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S``). ``$RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``
set by the user wins."""


def train_env_vars(taken: dict | None = None) -> dict:
    """The env vars our jobs give Ray Train's actors (the controller polls every
    ``TRAIN_POLL_S``), less what ``taken`` (a submitted job's runtime env) already sets."""
    env = {TRAIN_POLL_ENV: os.environ.get(TRAIN_POLL_ENV, str(TRAIN_POLL_S))}
    return {k: v for k, v in env.items() if k not in (taken or {})}


def quiet_local_auth_notice() -> None:
    """Drop Ray's "Token authentication is enabled for this Ray cluster" notice (auth stays on).

    Ray logs it whenever a process starts a local Ray while a token exists: on every run here,
    and as a second stderr line after a bad-input error found once Ray is up (a run name in
    use, an unreachable store), where the error should be the one line. The notice that auth
    is *disabled* is kept."""
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _AuthEnabledNotice) for f in logger.filters):
        logger.addFilter(_AuthEnabledNotice())


class _AuthEnabledNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Token authentication is enabled")


def cluster_env_vars(address: str) -> dict:
    """What a job's actors need to find the cluster it joined at ``address``.

    Ray's own actors (Ray Train's placement-group cleaner, on the head) look the cluster up
    through the state API with no address: on a machine that runs more than one Ray they fail
    ("Found multiple active Ray instances") and a trial that lost its node never gets its
    worker group's CPUs back. A concrete ``HOST:PORT`` (the GCS address Ray gives a submitted
    job) is passed on as their ``RAY_ADDRESS``; ``auto`` or a client address is left alone, and
    so is an address the job's runtime env already sets (Ray refuses to merge a conflict).
    Ray Train's poll interval (``train_env_vars``) goes with them.
    """
    job_env = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}") or "{}")
    taken = (job_env.get("runtime_env") or {}).get("env_vars") or {}
    keys = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")
    concrete = "://" not in address and ":" in address
    found = {"RAY_ADDRESS": address} if concrete and not any(k in taken for k in keys) else {}
    return {**found, **train_env_vars(taken)}


def local_ray_options(workers: int = 1, cpus: int | None = None) -> dict:
    """``ray.init`` options for a local Ray of this process's own, found by its own actors.

    ``address="local"`` starts a new Ray instead of joining the newest one found. Ray's own
    actors (Ray Train's placement-group cleaner) look the cluster up through the state API
    with no address, and with a second Ray on the machine print "Found multiple active Ray
    instances": the job's actors are told its dashboard's address (``RAY_API_SERVER_ADDRESS``,
    a free port picked here), so they never guess. Ray Train polls at ``TRAIN_POLL_S``.
    """
    port = free_port()
    return {
        "address": "local",
        "num_cpus": cpus if cpus is not None else max(os.cpu_count() or 1, workers + 1),
        "dashboard_host": "127.0.0.1",
        "dashboard_port": port,
        "runtime_env": {
            "env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}", **train_env_vars()}
        },
    }


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now (another process may take it before
    its user binds it: Ray's dashboard then retries the next ports)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def seed_of(*parts: int) -> int:
    """A torch seed derived from ``parts`` (e.g. seed, step, micro-batch, rank): a resumed run
    redraws exactly the batches it would have drawn."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # torch seeds must fit int64


def worker_threads(threads: int | None, local_workers: int) -> int:
    """torch threads of one Ray Train worker: ``threads``, else this node's physical cores shared
    by its workers (Ray's logical CPUs may be more than the cores)."""
    return max(1, int(threads or (os.cpu_count() or 1) // max(local_workers, 1)))


def quiet_ray_train_logs() -> None:
    """Ray Train logs every report at INFO; the run's progress lives in MLflow instead.

    Some of its loggers are named by file path (``logging.getLogger(__file__)``), so they are
    found by the package path in their name.
    """
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    for name in list(logging.Logger.manager.loggerDict):
        if "ray/train" in name or "ray.train" in name:
            logging.getLogger(name).setLevel(logging.WARNING)


def maybe_fail(fault: dict | None, step: int, rank: int, world: int) -> None:
    """Test hook: the last rank dies once, abruptly, after step ``fault["step"]``."""
    if not fault or step != fault["step"] or rank != world - 1:
        return
    marker = Path(fault["marker"])
    if marker.exists():
        return
    marker.write_text(f"killed rank {rank} after step {step}\n")
    # Ray Train registers a reported checkpoint when its controller next polls the workers
    # (every 2 s): a crash within that window loses the newest checkpoint. Wait past it, so the
    # test exercises the documented guarantee rather than that window.
    time.sleep(float(fault.get("delay", 5.0)))
    os._exit(1)


def one_line(exc: BaseException, limit: int = 500) -> str:
    """``Type: message`` on one line, at most ``limit`` characters (for MLflow tags, errors)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:limit]


def root_cause(exc: BaseException) -> str:
    """The innermost cause of ``exc`` on one line (Ray wraps a worker's error twice)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return one_line(exc)


def interrupted_run(name: str, train_dir: Root) -> Interrupted:
    """The ``Interrupted`` of a training run stopped by Ctrl-C: whether a checkpoint was kept,
    and the command that continues it."""
    if has_checkpoint(train_dir):
        return Interrupted(
            f"run {name} stopped; its checkpoints so far are kept in {train_dir.uri}: "
            "run the same command with --resume to continue it"
        )
    return Interrupted(
        f"run {name} stopped before its first checkpoint, so nothing was kept: "
        "run the same command again to start it"
    )


def check_run_name(run_dir: Path, train_dir: Root, resume: bool, auto: bool = False) -> bool:
    """Refuse a name in use without ``--resume`` and ``--resume`` of a run with no checkpoint
    (``train_dir``: Ray Train's directory of the run); clear a run that never checkpointed.

    With ``auto`` (``geolip demo``'s re-runs) a run with a checkpoint resumes and any other
    starts. Returns whether the run resumes.
    """
    started = has_checkpoint(train_dir)
    resume = resume or (auto and started)
    if resume and not started:
        raise GeolipError(
            f"--resume: run {run_dir.name} has no checkpoint to resume from ({train_dir.uri}); "
            "start it without --resume"
        )
    if started and not resume:
        raise GeolipError(
            f"run {run_dir.name} already exists ({train_dir.uri}); pass --resume to continue it, "
            "or change the config or train.seed for a new run"
        )
    if not started and run_dir.exists():
        shutil.rmtree(run_dir)  # a run that never reached a checkpoint: start it afresh
    return resume


def fit(loop, config: dict, name: str, ctx: RunContext, **trainer_kwargs):
    """Run ``loop`` (a Ray Train per-worker function) on ``ctx.workers`` workers as run ``name``
    under ``DATA/ray_results`` (on the store with ``ctx.storage``); returns the ``Result``. A failure raises a ``GeolipError`` with
    the root cause on one line. ``trainer_kwargs`` go to ``TorchTrainer`` (datasets, ...);
    ``callbacks`` to its ``RunConfig``."""
    import ray.train

    from pipelines.capacity import cluster_capacity, resolve, wait_seconds, worker_bundle

    init_ray(ctx.workers)
    if ctx.use_gpu is None or (ctx.use_gpu and not ctx.workers_gpus):
        ctx = resolve(ctx, cluster_capacity())  # the drivers' capacity.claim did it already
    per_worker, wait = worker_bundle(ctx), wait_seconds(ctx)
    callbacks = trainer_kwargs.pop("callbacks", None) or None
    trainer = _interruptible_trainer()(
        loop,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=ctx.workers,
            use_gpu=bool(ctx.use_gpu),
            resources_per_worker=per_worker,
        ),
        run_config=ray.train.RunConfig(
            name=name,
            **storage_kwargs(ctx.root().child("ray_results")),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            # Ray Train V2 waits for its workers' placement group 60 s per try and retries a
            # startup timeout without end (controller_failure_limit -1): bound it by the
            # --wait-nodes the job was given (verified: it then raises after the last try).
            failure_config=ray.train.FailureConfig(
                max_failures=ctx.max_failures,
                controller_failure_limit=max(1, math.ceil(wait / _TRAIN_START_TIMEOUT_S)),
            ),
            callbacks=callbacks,
        ),
        **trainer_kwargs,
    )
    with watch_sigint() as interrupted:
        trainer.interrupted = interrupted
        try:
            result = trainer.fit()
        except SystemExit:  # Ray Train's Ctrl-C handler exits when its controller is gone
            if interrupted.is_set():
                raise KeyboardInterrupt from None
            raise
        except Exception as exc:  # Ray wraps worker errors; report the root cause on one line
            # A terminal's Ctrl-C reaches Ray's workers too: their deaths are the interrupt's.
            if interrupted.is_set():
                raise KeyboardInterrupt from None
            if _startup_timed_out(exc):
                raise GeolipError(_timeout_line(per_worker, ctx.workers, wait, name)) from exc
            raise GeolipError(f"training run {name} failed: {root_cause(exc)}") from exc
    if interrupted.is_set():  # a gracefully aborted run returns a result: it did not finish
        raise KeyboardInterrupt
    return result


_TRAIN_START_TIMEOUT_S = 60.0
"""Ray Train V2's wait for a worker group's placement group (its
``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S`` default, read in its controller's process)."""


def _startup_timed_out(exc: BaseException) -> bool:
    """Whether Ray Train gave up starting its workers (their resources never came)."""
    failure = getattr(exc, "controller_failure", None)
    return type(failure).__name__ == "WorkerGroupStartupTimeoutError"


def _timeout_line(per_worker: dict, workers: int, wait: float, name: str) -> str:
    from pipelines.capacity import timeout_message, total

    return timeout_message(total([per_worker] * workers), wait, f"training run {name}")


@functools.cache
def _interruptible_trainer() -> type:
    """``TorchTrainer`` whose driver notes a Ctrl-C in ``self.interrupted`` (an Event).

    Ray Train installs its own SIGINT handler while ``fit`` runs (it aborts the run gracefully
    and may ``sys.exit``), replacing ``watch_sigint``'s; this wraps Ray's handler so the event
    is still set, and ``fit`` can end the job as interrupted rather than failed or finished.
    """
    from ray.train.torch import TorchTrainer

    class InterruptibleTrainer(TorchTrainer):
        interrupted: threading.Event | None = None

        def _register_sigint_handler(self, controller) -> None:
            super()._register_sigint_handler(controller)
            ray_handler = signal.getsignal(signal.SIGINT)
            event = self.interrupted

            def note(signum, frame) -> None:
                if event is not None:
                    event.set()
                ray_handler(signum, frame)

            if callable(ray_handler):
                signal.signal(signal.SIGINT, note)

    return InterruptibleTrainer
