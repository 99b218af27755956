"""MLflow as the system of record: where the store lives, experiments, and a batching run logger.

Everything goes through ``mlflow.tracking.MlflowClient`` with an explicit tracking URI and run id,
never the fluent global-run API, so a Ray worker in another process (and another cwd) can log into
a run the driver created. The driver calls ``check_tracking`` and ``ensure_experiment`` before fanning
out: a fresh SQLite store initialised by several processes at once races on its schema migration.
mlflow takes seconds to import and the CLI imports this module at start-up, so imports are lazy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from functools import lru_cache
from http.client import HTTPException
from pathlib import Path
from typing import Any

from geolip.config import config_hash
from pipelines.errors import GeolipError

log = logging.getLogger(__name__)

# MLflow's own limits (mlflow.utils.validation); repeated here to keep the import lazy.
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_ERROR_TAG = 5000
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
EXPECTED = (
    "sqlite:///ABSOLUTE/PATH.db, postgresql://USER@HOST:PORT/DB, http(s)://HOST:PORT or databricks"
)
# Database stores MLflow opens itself through SQLAlchemy (a team's shared store, no server).
DATABASE_SCHEMES = ("postgresql", "postgresql+psycopg", "mysql", "mysql+pymysql")

# SQLite stores whose schema this process has already created or migrated.
_initialised: set[str] = set()


class TrackingError(GeolipError):
    """The tracking store is misconfigured or unreachable; the message says how to fix it."""


def default_tracking_uri(data: Path) -> str:
    """The project's store: ``sqlite:////ABS/data/mlflow/mlflow.db`` (absolute: workers move cwd)."""
    return f"sqlite:///{(Path(data) / 'mlflow' / 'mlflow.db').resolve().as_posix()}"


def resolve_tracking_uri(flag: str | None, data: Path) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else the default store under ``data``.

    Relative SQLite paths are made absolute against the current cwd; file stores are refused.
    """
    raw = flag or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(data)
    return _normalise(raw.strip())


def _normalise(uri: str) -> str:
    scheme = urllib.parse.urlparse(uri).scheme.lower()
    if scheme == "sqlite":
        return _absolute_sqlite(uri)
    if scheme in ("http", "https", "databricks") or uri == "databricks":
        return uri
    if scheme in DATABASE_SCHEMES:
        return uri
    if scheme in ("", "file"):
        raise TrackingError(
            f"tracking URI {uri!r} is a file store, which MLflow 3.17 refuses; "
            "use sqlite:///ABSOLUTE/PATH.db or http://HOST:PORT instead"
        )
    raise TrackingError(f"unsupported tracking URI {uri!r}: expected {EXPECTED}")


def _absolute_sqlite(uri: str) -> str:
    if not uri.startswith("sqlite:///") or uri.startswith("sqlite:///:memory:"):
        # An in-memory store vanishes with the process and is invisible to workers.
        raise TrackingError(f"tracking URI {uri!r} is not a SQLite file: expected {EXPECTED}")
    path, sep, query = uri[len("sqlite:///") :].partition("?")
    absolute = Path(path).resolve().as_posix()  # "/abs" stays, "rel.db" joins the cwd
    return f"sqlite:///{absolute}{sep}{query}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:////abs`` URI, or None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].partition("?")[0])


@lru_cache(maxsize=8)
def client(uri: str):
    """The MLflow client of a store: one per store and process (a SQLite client holds a
    connection pool). Every layer gets its client here."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def fluent_store(uri: str):
    """MLflow's global tracking URI set to ``uri`` for the block, then put back as it was (an
    unset one stays unset, and ``$MLFLOW_TRACKING_URI``, which MLflow rewrites, is restored):
    for the one MLflow call geolip makes that takes no explicit store, ``Model.log``."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    explicit, env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(explicit)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def check_tracking(uri: str, timeout: float = 5.0) -> None:
    """Fail early, with an actionable message, when the store cannot be used: a server must answer
    ``/health``; a SQLite directory must be writable, and its schema is created here, once per
    process, so that workers never race on the migration."""
    if uri.startswith(("http://", "https://")):
        _check_server(uri, timeout)
    elif (db := sqlite_path(uri)) is not None:
        _check_sqlite(uri, db)
    elif is_database(uri):
        _probe_database(uri, timeout)
        _open_store(uri)


def _probe_database(uri: str, timeout: float) -> None:
    """Connect once, with a timeout: MLflow itself retries a refusing database for ~100 s,
    logging a warning each time, before it gives up."""
    import sqlalchemy

    engine = None
    try:
        engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": int(timeout)})
        with engine.connect():
            pass
    except Exception as e:  # a refusal, bad credentials, no such database, a missing driver
        reason = " ".join(str(getattr(e, "orig", None) or e).split())[:300]
        if password := urllib.parse.urlsplit(uri).password:
            reason = reason.replace(password, "***")
        raise TrackingError(
            f"cannot open the MLflow store {redacted(uri)}: {reason}; check the database "
            "server, its credentials and --tracking-uri"
        ) from None
    finally:
        if engine is not None:
            engine.dispose()


def is_database(uri: str) -> bool:
    """A ``postgresql://`` (or ``mysql://``) store MLflow opens directly."""
    return urllib.parse.urlparse(uri).scheme.lower() in DATABASE_SCHEMES


def redacted(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (for messages: never print a secret)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _check_server(uri: str, timeout: float) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status == 200:
                return
            reason = f"HTTP {response.status} from {url}"
    except urllib.error.HTTPError as e:  # something answers, but not an MLflow server
        reason = f"HTTP {e.code} {e.reason} from {url}"
    except (OSError, HTTPException, ValueError) as e:  # URLError and timeouts are OSErrors
        reason = str(getattr(e, "reason", None) or e) or type(e).__name__
    raise TrackingError(
        f"tracking server {uri} is unreachable: {reason}; "
        "start one with `geolip ui` or pass --tracking-uri"
    )


def _check_sqlite(uri: str, db: Path) -> None:
    directory = db.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrackingError(f"cannot create the MLflow directory {directory}: {e}") from e
    if not os.access(directory, os.W_OK | os.X_OK) or (db.exists() and not os.access(db, os.W_OK)):
        # SQLite writes a journal next to the database, so the directory must be writable too.
        raise TrackingError(
            f"MLflow directory {directory} is not writable; fix its permissions or pass "
            "--tracking-uri / --data-dir elsewhere"
        )
    _open_store(uri)


def _open_store(uri: str) -> None:
    """Create or migrate a database store's schema, once per process (so that workers never
    race on the migration); an unusable store is one line, its password hidden."""
    if uri in _initialised:
        return
    # Creating a store logs its schema migrations at INFO: noise next to the command's output.
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        client(uri).search_experiments(max_results=1)
    except Exception as e:  # any failure here means the store is unusable
        reason = " ".join(str(e).split())[:300]
        if parsed := urllib.parse.urlsplit(uri).password:
            reason = reason.replace(parsed, "***")
        raise TrackingError(f"cannot open the MLflow store {redacted(uri)}: {reason}") from None
    _initialised.add(uri)


def artifact_root(uri: str, data: Path, storage: str | None = None) -> str | None:
    """Absolute ``file://`` artifact root for a SQLite or database store (MLflow would use
    ``./mlruns`` under each worker's cwd), ``STORAGE/mlflow/artifacts`` where the data directory
    is on object storage; None for servers, which manage their own artifacts."""
    if sqlite_path(uri) is None and not is_database(uri):
        return None
    if storage:
        return f"{storage.rstrip('/')}/mlflow/artifacts"
    return (Path(data) / "mlflow" / "artifacts").resolve().as_uri()


def ensure_experiment(uri: str, name: str, artifact_location: str | None = None) -> str:
    """Get or create the experiment ``name``; returns its id.

    A new experiment stores artifacts under ``artifact_location/<name>`` when a location is given
    (see ``artifact_root``). Safe against another process creating it at the same moment.
    """
    from mlflow.exceptions import MlflowException

    store = client(uri)
    if (found := _existing_experiment(store, name)) is not None:
        return found
    location = _experiment_location(artifact_location, name) if artifact_location else None
    try:
        return store.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Lost the race: someone created it between our get and create.
        if (found := _existing_experiment(store, name)) is not None:
            return found
        raise


def _existing_experiment(client, name: str) -> str | None:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return None
    if experiment.lifecycle_stage == "deleted":
        # A deleted experiment still owns its name, so creating a new one would fail.
        raise TrackingError(
            f"MLflow experiment {name!r} (id {experiment.experiment_id}) is deleted; restore it "
            f"with `mlflow experiments restore --experiment-id {experiment.experiment_id}` "
            "or choose another name"
        )
    return experiment.experiment_id


def _experiment_location(root: str, name: str) -> str:
    """``root/<name>`` with ``root`` made absolute (a URI, or a path relative to the cwd)."""
    if "://" not in root and not root.startswith("file:"):
        root = Path(root).resolve().as_uri()
    return f"{root.rstrip('/')}/{urllib.parse.quote(name, safe='')}"


def flatten_params(d: dict, prefix: str = "") -> dict[str, str]:
    """``{"model": {"d": 64}, "seeds": [1, 2]}`` -> ``{"model.d": "64", "seeds": "[1, 2]"}``.

    Dataclasses flatten like dicts; values are truncated to MLflow's param value limit.
    """
    flat: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, dict):
            flat.update(flatten_params(value, prefix=f"{name}."))
            continue
        if isinstance(value, list | tuple):
            text = json.dumps(value, default=str)
        else:
            text = str(value)
        flat[name] = text[:MAX_PARAM_VALUE]
    return flat


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


class RunLogger:
    """Logs into one MLflow run from any process; metrics are buffered and written in batches.

    MLflow's SQLite store manages ~65 writes/s, so one write per scalar per step would dominate a
    short training loop. Use as a context manager: an exception marks the run FAILED.
    """

    def __init__(self, uri: str, run_id: str, flush_every: int = 200, flush_seconds: float = 15):
        self.uri = uri
        self.run_id = run_id
        self.flush_every = flush_every
        # Also write at least this often, so a slow run's curves appear in the UI as it goes.
        self.flush_seconds = flush_seconds
        self._last_flush = time.monotonic()
        self.skipped_nonfinite = 0  # NaN/inf values dropped (stores refuse or distort them)
        self._client = client(uri)

        self._buffer: list = []
        self._finished = False
        self._logged: dict[str, int] = {}  # metric -> last step already in the run (a resume)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Buffer one step's scalars; written every ``flush_every`` rows or ``flush_seconds``."""
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        for key, value in metrics.items():
            value = float(value)
            if not math.isfinite(value):
                # SQLite keeps NaN but silently turns inf into 1.8e308; skip both, count them.
                self.skipped_nonfinite += 1
                continue
            if int(step) <= self._logged.get(key, -1):
                continue  # a step redone after a restore: its first value is in the run
            self._buffer.append(Metric(key, value, timestamp, int(step)))
        stale = time.monotonic() - self._last_flush > self.flush_seconds
        if len(self._buffer) >= self.flush_every or stale:
            self.flush()

    def skip_logged_steps(self) -> None:
        """Log no step of a metric that the run already has (a run continued from a checkpoint).

        A restored run redoes the steps after its last checkpoint, and it may have logged some
        of them before it was lost (a flush, a worker that outlived its driver for a moment);
        MLflow keeps every value logged, so logging them again would duplicate those steps.
        The redone steps draw the same batches (seeded per step), so the first value stands.
        """
        for key in self._client.get_run(self.run_id).data.metrics:
            steps = [m.step for m in self._client.get_metric_history(self.run_id, key)]
            self._logged[key] = max(steps, default=-1)

    def flush(self) -> None:
        """Write buffered metrics; rows already written leave the buffer even if a later chunk fails."""
        while self._buffer:
            chunk = self._buffer[:METRICS_PER_BATCH]
            self._client.log_batch(self.run_id, metrics=chunk)
            del self._buffer[: len(chunk)]
        self._last_flush = time.monotonic()

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set (or overwrite) run tags; values are stringified and truncated to MLflow's limit."""
        from mlflow.entities import RunTag

        rows = [RunTag(str(k), str(v)[:MAX_TAG_VALUE]) for k, v in tags.items()]
        for chunk in _chunks(rows, PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, tags=chunk)

    def log_params(self, params: dict[str, Any]) -> None:
        """Log a nested config as flattened params (write-once: a changed value raises)."""
        from mlflow.entities import Param

        rows = [Param(k, v) for k, v in flatten_params(params).items()]
        for chunk in _chunks(rows, PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, params=chunk)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy one file into the run's artifacts (under ``artifact_path`` if given)."""
        self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        """Copy a directory's contents into the run's artifacts."""
        self._client.log_artifacts(self.run_id, str(directory), artifact_path)

    def log_figure(self, fig, name: str) -> None:
        """Save a matplotlib figure as ``plots/<name>.png`` in the run's artifacts."""
        filename = Path(name).name
        if not filename.endswith(".png"):
            filename += ".png"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / filename
            fig.savefig(path, bbox_inches="tight")
            self.log_artifact(path, "plots")

    def log_dict(self, d: dict, name: str) -> None:
        """Store a dict as a JSON (or, by extension, YAML) artifact file ``name``."""
        self._client.log_dict(self.run_id, d, name)

    def log_text(self, text: str, name: str) -> None:
        """Store text as the artifact file ``name``."""
        self._client.log_text(self.run_id, text, name)

    def finish(self, status: str = "FINISHED", error: str | None = None) -> None:
        """Flush and terminate the run; ``error`` becomes the ``error`` tag. Later calls do nothing."""
        if status not in RUN_STATUSES:
            raise TrackingError(f"run status {status!r} is not one of {', '.join(RUN_STATUSES)}")
        if self._finished:
            return
        self.flush()
        if error is not None:
            self.set_tags({"error": error[:MAX_ERROR_TAG]})
        self._client.set_terminated(self.run_id, status=status)
        self._finished = True

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            self.finish()
            return False
        try:
            self.finish("FAILED", error=repr(exc))  # repr escapes newlines: one line
        except Exception:  # never hide the training error behind a logging one
            log.warning("could not mark MLflow run %s FAILED", self.run_id, exc_info=True)
        return False


def start_run(
    uri: str,
    experiment_id: str,
    run_name: str,
    *,
    tags: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
    config: Any = None,
    device: str | None = None,
) -> RunLogger:
    """Create a run (a child of ``parent_run_id`` if given), log ``params``, return its logger.

    Every run gets the context tags of ``pipelines.run_context`` (source, user, git commit,
    versions, ``device``); with ``config`` (a config dataclass or dict) also its hash as the
    ``geolip.config_hash`` tag and the resolved config as the ``config.json`` artifact.
    """
    from pipelines.run_context import CONFIG_ARTIFACT, CONFIG_HASH_TAG, context_tags

    all_tags = context_tags(device)
    if config is not None:
        all_tags[CONFIG_HASH_TAG] = config_hash(config)
    all_tags.update({str(k): str(v)[:MAX_TAG_VALUE] for k, v in (tags or {}).items()})
    all_tags["mlflow.runName"] = run_name
    if parent_run_id is not None:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client(uri).create_run(experiment_id, tags=all_tags, run_name=run_name)
    logger = RunLogger(uri, run.info.run_id)
    if params:
        logger.log_params(params)
    if config is not None:
        logger.log_dict(config_dict(config), CONFIG_ARTIFACT)
    return logger


def config_dict(config: Any) -> dict:
    """A config as the JSON-ready dict that ``from_dict`` reads back (its ``to_dict`` if any)."""
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return json.loads(json.dumps(config, default=str))


def open_run(
    uri: str,
    experiment_id: str,
    run_name: str,
    *,
    resume: bool,
    run_id: str | None = None,
    tags: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    config: Any = None,
    device: str | None = None,
) -> RunLogger:
    """A new run, or with ``resume`` the run ``run_id`` continued (tagged ``resumed``; its
    params stay as first logged, MLflow params being write-once).

    The run to continue is named by its id, which the run's checkpoint records, never found
    by its name: on a shared server two users' runs may share a name. A ``run_id`` that is
    not in ``experiment_id`` or is deleted is a ``TrackingError``; no ``run_id`` starts a new run.
    """
    if not resume or run_id is None:
        return start_run(
            uri, experiment_id, run_name, tags=tags, params=params, config=config, device=device
        )
    check_resumable(uri, experiment_id, run_id)
    logger = RunLogger(uri, run_id)
    logger.set_tags({"resumed": "true"})
    return logger


def check_resumable(uri: str, experiment_id: str, run_id: str) -> None:
    """The run ``run_id`` exists in ``experiment_id`` and is not deleted, else one line."""
    from mlflow.exceptions import MlflowException

    try:
        run = client(uri).get_run(run_id)
    except MlflowException:
        raise TrackingError(
            f"cannot resume MLflow run {run_id}: the store {redacted(uri)} has no such run"
        ) from None
    if run.info.experiment_id != experiment_id:
        raise TrackingError(
            f"cannot resume MLflow run {run_id}: it belongs to experiment "
            f"{run.info.experiment_id}, not {experiment_id} (pass the run's --experiment)"
        )
    if run.info.lifecycle_stage == "deleted":
        raise TrackingError(f"cannot resume MLflow run {run_id}: it is deleted")


def find_run(
    uri: str, experiment_id: str, run_name: str, parent_run_id: str | None = None
) -> str | None:
    """The id of the most recent (non-deleted) run named ``run_name`` (a child of
    ``parent_run_id`` when given: a sweep's trial, whose name is unique under its parent)."""
    quote = "'" if "'" not in run_name else '"'  # the filter grammar has no escapes
    if quote in run_name:
        raise TrackingError(f"run name {run_name!r} contains both quote characters")
    query = f"attributes.run_name = {quote}{run_name}{quote}"
    if parent_run_id is not None:
        query += f" and tags.mlflow.parentRunId = '{parent_run_id}'"
    runs = client(uri).search_runs(
        [experiment_id],
        filter_string=query,
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """Every logged ``(step, value)`` of one metric, by step (then by time, for re-logged steps)."""
    rows = client(uri).get_metric_history(run_id, key)
    rows = sorted(rows, key=lambda m: (m.step, m.timestamp))
    return [(m.step, m.value) for m in rows]


def metric_rows(uri: str, run_id: str, want=None) -> list[dict]:
    """A run's metric histories as rows ``{"step": s, key: value, ...}`` in step order (the last
    value of a step wins); ``want(key)`` picks the metrics (default: all)."""
    keys = [k for k in client(uri).get_run(run_id).data.metrics if want is None or want(k)]
    rows: dict[int, dict] = {}
    for key in keys:
        for step, value in metric_history(uri, run_id, key):
            rows.setdefault(step, {"step": step})[key] = value
    return [rows[s] for s in sorted(rows)]
