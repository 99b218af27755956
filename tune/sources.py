"""What a sweep reads from elsewhere: another sweep's plan (``--from``, or the last seed battery
that a contrast ablates) and a donor checkpoint (``--donor``), checked before any trial starts.

Lookups only read: a SQLite store that does not exist yet is not created to be searched (nothing
can be found in it), so a bad ``--from`` or ``--donor`` leaves the data directory as it was.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from pipelines.model_uri import is_mlflow_uri, local_checkpoint
from pipelines.run_storage import read_file
from pipelines.storage import is_uri, parse_root, readable
from pipelines.tracking import check_tracking, client, sqlite_path
from tune.spec import Phase, SweepError, json_object, read_json_object

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
"""What an MLflow run id looks like (a uuid4 in hex)."""


def check_corpus(corpus: str, flag: str = "--corpus") -> None:
    """``--corpus`` (or ``flag``): a malformed URI or a ``file:`` corpus naming no file is
    refused before anything is loaded or written (``hf:`` and ``builtin:`` data is fetched
    later)."""
    from atlas.corpus import parse_uri
    from atlas.corpus.files import resolve_paths

    try:
        spec = parse_uri(corpus)
        if spec.scheme == "file":
            resolve_paths(spec.target, corpus)
    except ValueError as exc:  # CorpusError
        raise SweepError(f"{flag}: {exc}") from None


def store_exists(uri: str) -> bool:
    """Whether there is a store to read: a SQLite file that exists, or a server (checked here:
    an unreachable one is a one-line ``TrackingError``)."""
    db = sqlite_path(uri)
    if db is None:
        check_tracking(uri)
        return True
    return db.is_file()


def require_store(uri: str, what: str) -> None:
    """Refuse, without creating it, a SQLite store that does not exist (``what`` needs a run)."""
    if not store_exists(uri):
        raise SweepError(
            f"{what}: no MLflow store at {sqlite_path(uri)}; pass the --data-dir or "
            "--tracking-uri the sweep ran with"
        )


def find_run(uri: str, run_id: str, flag: str):
    """The MLflow run ``run_id`` that ``flag`` names, or a one-line ``SweepError``."""
    require_store(uri, f"{flag} {run_id}")
    try:
        return client(uri).get_run(run_id)
    except Exception as exc:
        raise SweepError(f"{flag} {run_id}: no such MLflow run in {uri}") from exc


def source_sweep(uri: str, run_id: str) -> dict:
    """The plan of the sweep whose parent MLflow run is ``run_id`` (``--from``)."""
    run = find_run(uri, run_id, "--from")
    name = run.data.tags.get("sweep")
    data_plan = plan_file(run)
    if not name or data_plan is None:
        raise SweepError(f"--from {run_id}: not a geolip sweep run (no sweep plan)")
    return data_plan


def last_battery(uri: str, experiment: str, corpus: str) -> dict | None:
    """The plan of the latest finished ``seed-battery`` sweep on ``corpus`` (None: there is none)."""
    if not store_exists(uri):
        return None
    mlflow = client(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return None
    query = (
        "tags.program = 'seed-battery' and tags.kind = 'sweep' and attributes.status = 'FINISHED'"
    )
    runs = mlflow.search_runs([exp.experiment_id], query, order_by=["attributes.start_time DESC"])
    for run in runs:
        plan_doc = plan_file(run)
        if plan_doc is not None and run.data.params.get("corpus") == corpus:
            return plan_doc
    return None


def plan_file(run) -> dict | None:
    """The sweep plan (``sweep.json``) a sweep's parent run points to; None if it is gone."""
    path = run.data.tags.get("sweep_plan")
    if not path:
        return None
    if is_uri(path):  # the sweep's data directory is on object storage
        parent, name = path.rsplit("/", 1)
        data = read_file(parse_root(parent, "the sweep's plan"), name)
        if data is None:
            return None
        doc = json_object(data, path)
    elif not Path(path).is_file():
        return None
    else:
        doc = read_json_object(path)
    if not isinstance(doc.get("name"), str) or not isinstance(doc.get("trials"), list):
        raise SweepError(f"{path} is not a sweep plan (no 'name' and 'trials')")
    return doc


def check_donor(donor: str, uri: str, data: Path) -> tuple[Path | None, str | None]:
    """``--donor``: ``(checkpoint directory, None)`` for a path, a ``runs:/`` or ``models:/``
    URI (downloaded here), ``(None, run id)`` for an MLflow run whose checkpoint is downloaded
    later (``fetch_donor``). Nothing is read but metadata."""
    if is_mlflow_uri(donor):
        return donor_dir(donor, local_checkpoint(donor, "--donor", uri, data)), None
    if is_uri(donor):  # a final checkpoint on object storage: checked in a local copy
        return donor_dir(donor, Path(readable(donor, "--donor"))), None
    path = Path(donor).expanduser()
    if path.exists() or not RUN_ID.match(donor):
        return donor_dir(donor, path), None
    find_run(uri, donor, "--donor")
    if not client(uri).list_artifacts(donor, "checkpoint"):
        raise SweepError(f"--donor {donor}: the MLflow run has no checkpoint artifact")
    return None, donor


def donor_dir(donor: str, path: Path) -> Path:
    """The checkpoint directory ``--donor`` names; a missing path, a file or a directory that
    holds no checkpoint is a one-line ``SweepError``."""
    if not path.exists():
        raise SweepError(
            f"--donor {donor} does not exist; expected a checkpoint directory or an MLflow run id"
        )
    if not path.is_dir():
        raise SweepError(f"--donor {donor} is a file; expected a checkpoint directory")
    if not (path / "geo_config.json").exists() and not (path / "config.json").exists():
        raise SweepError(f"--donor {donor}: not a geolip checkpoint directory (no config.json)")
    return path.resolve()


def donor_download_dir(data: Path, run_id: str) -> Path:
    """Where ``fetch_donor`` puts the checkpoint of donor run ``run_id``."""
    return (data / "donors" / run_id / "checkpoint").resolve()


def fetch_donor(uri: str, run_id: str, data: Path) -> Path:
    """Download the ``checkpoint`` artifact of donor run ``run_id`` (once) into the data dir."""
    dst = donor_download_dir(data, run_id)
    if dst.is_dir():
        return dst
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line on errors
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        try:
            client(uri).download_artifacts(run_id, "checkpoint", tmp)
        except Exception as exc:
            raise SweepError(f"--donor {run_id}: cannot download its checkpoint: {exc}") from exc
        os.replace(Path(tmp) / "checkpoint", dst)  # a complete checkpoint or none
    return dst


def check_grafts(phases: list[Phase], donor: Path, flag: str | None = None) -> None:
    """Graft the donor onto every target now: a donor that does not load, or a shape that cannot
    be grafted, fails before Tune (``flag``: what the user passed as ``--donor``)."""
    from pipelines.aleph.job import graft_donor, load_donor  # torch: only for a graft sweep

    flag = flag or str(donor)

    try:
        model = load_donor(str(donor))
    except ValueError as exc:  # CheckpointError: the message names the file
        raise SweepError(f"--donor {flag}: {' '.join(str(exc).split())}") from exc
    for t in (t for p in phases for t in p.trials if t.donor):
        try:
            graft_donor(model, t.run, t.graft, None)
        except ValueError as exc:
            raise SweepError(f"--donor {flag} cannot be grafted for {t.key}: {exc}") from exc
