"""Where a command's checkpoint argument points: a local directory, object storage, or MLflow.

``--checkpoint``, ``eval aleph CKPT``, ``--init-from`` and ``--donor`` take any of

- a local checkpoint directory;
- ``s3://BUCKET/PREFIX`` (a published checkpoint, ``pipelines.storage``);
- ``runs:/RUN_ID/model`` (a run's logged model) or ``runs:/RUN_ID/checkpoint`` (its artifact);
- ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``models:/m-ID`` (the registry).

An MLflow URI is downloaded once into ``DATA/models/`` (a fixed version or run never changes;
an alias or ``latest`` is fetched again each time) and the checkpoint directory in it is
returned: a logged model holds its checkpoint under ``artifacts/``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from pipelines.errors import GeolipError
from pipelines.storage import is_uri, readable
from pipelines.tracking import client, redacted, sqlite_path

SCHEMES = ("runs:/", "models:/")
CHECKPOINT_FILES = ("meta.json", "model.safetensors")


def is_mlflow_uri(value: str | os.PathLike) -> bool:
    """``runs:/...`` or ``models:/...``."""
    return str(value).startswith(SCHEMES)


def local_checkpoint(value: str | os.PathLike, flag: str, tracking_uri: str, data: Path) -> Path:
    """The local checkpoint directory ``value`` names (downloaded if it is a URI); a name that
    cannot be resolved is one ``GeolipError`` line naming ``flag``."""
    if is_mlflow_uri(value):
        return _from_mlflow(str(value), flag, tracking_uri, data)
    if is_uri(value):
        return Path(readable(value, flag))
    return Path(value).expanduser().resolve()


def _from_mlflow(uri: str, flag: str, tracking_uri: str, data: Path) -> Path:
    _check_exists(uri, flag, tracking_uri)
    target = data / "models" / _slug(uri)
    fixed = _is_fixed(uri)
    if not (fixed and target.is_dir()):
        _download(uri, flag, tracking_uri, target)
    return checkpoint_in(target, f"{flag} {uri}")


def checkpoint_in(root: Path, what: str) -> Path:
    """The checkpoint directory in a downloaded artifact: ``root`` itself, or the one directory
    under it (a logged model's ``artifacts/<name>``) holding meta.json and model.safetensors."""
    found = [root] if _is_checkpoint(root) else []
    found += sorted(p.parent for p in root.rglob("meta.json") if _is_checkpoint(p.parent))
    found = list(dict.fromkeys(found))
    if not found:
        raise GeolipError(f"{what}: holds no geolip checkpoint (no meta.json + model.safetensors)")
    return found[0]


def _is_checkpoint(path: Path) -> bool:
    return all((path / name).is_file() for name in CHECKPOINT_FILES)


def _is_fixed(uri: str) -> bool:
    """A URI whose content never changes: a run's artifact, a numbered version, a model id."""
    if uri.startswith("runs:/"):
        return True
    rest = uri[len("models:/") :]
    if "@" in rest:
        return False
    name, _, version = rest.partition("/")
    return version.isdigit() or (not version and name.startswith("m-"))


def _slug(uri: str) -> str:
    readable_part = "".join(c if c.isalnum() or c in "-_." else "_" for c in uri)[:60]
    return f"{readable_part}-{hashlib.sha256(uri.encode()).hexdigest()[:8]}"


def _check_exists(uri: str, flag: str, tracking_uri: str) -> None:
    """One line for a run, registered model or version that is not in the store."""
    from mlflow.exceptions import MlflowException

    where = redacted(tracking_uri)
    if (db := sqlite_path(tracking_uri)) is not None and not db.is_file():
        what = "run" if uri.startswith("runs:/") else "registered model"
        raise GeolipError(  # and none is created: a mistyped --data-dir leaves nothing behind
            f"{flag} {uri}: no MLflow {what} {_name(uri)!r} in {where} (no such store; pass "
            "--tracking-uri or --data-dir)"
        )
    store = client(tracking_uri)
    if uri.startswith("runs:/"):
        run_id = uri[len("runs:/") :].split("/", 1)[0]
        try:
            store.get_run(run_id)
        except MlflowException:
            raise GeolipError(f"{flag} {uri}: no MLflow run {run_id!r} in {where}") from None
        return
    rest = uri[len("models:/") :]
    if rest.startswith("m-") and "/" not in rest:
        return  # a logged model's id: the download says if it is missing
    name, version = _name_version(rest, flag, uri)
    try:
        store.get_registered_model(name)
    except MlflowException:
        raise GeolipError(
            f"{flag} {uri}: no registered model {name!r} in {where} (register one with "
            "`geolip train aleph --register NAME`)"
        ) from None
    try:
        if version.startswith("@"):
            store.get_model_version_by_alias(name, version[1:])
        elif version != "latest":
            store.get_model_version(name, version)
    except MlflowException:
        raise GeolipError(
            f"{flag} {uri}: registered model {name!r} has no version {version.lstrip('@')!r}"
        ) from None


def _name(uri: str) -> str:
    """The run id or registered model name in a ``runs:/`` or ``models:/`` URI."""
    rest = uri.split(":/", 1)[1]
    return rest.split("/", 1)[0].split("@", 1)[0]


def _name_version(rest: str, flag: str, uri: str) -> tuple[str, str]:
    if "@" in rest:
        name, _, alias = rest.partition("@")
        return name, f"@{alias}"
    name, _, version = rest.partition("/")
    if not name or not (version.isdigit() or version == "latest"):
        raise GeolipError(
            f"{flag} {uri}: expected models:/NAME/VERSION, models:/NAME@ALIAS or models:/m-ID"
        )
    return name, version


def _artifact_uri(uri: str, tracking_uri: str) -> str:
    """Where a URI's files are (a ``file://``, ``s3://`` or server location). MLflow would
    resolve ``models:/`` and a run's logged model in its global store, not ``tracking_uri``."""
    store = client(tracking_uri)
    if uri.startswith("runs:/"):
        return _run_artifact(store, uri)
    rest = uri[len("models:/") :]
    if not (rest.startswith("m-") and "/" not in rest):
        name, version = _name_version(rest, "", uri)
        if version.startswith("@"):
            found = store.get_model_version_by_alias(name, version[1:])
        elif version == "latest":
            found = max(store.search_model_versions(f"name = '{name}'"), key=_number)
        else:
            found = store.get_model_version(name, version)
        if found.model_id is None and not found.source.startswith("models:/"):
            return found.source  # the model's files, where geolip registers them
        rest = found.model_id or found.source.removeprefix("models:/")
    return store.get_logged_model(rest).artifact_location


def _run_artifact(store, uri: str) -> str:
    """``runs:/ID/PATH``: the run's logged model named PATH's first part, else its artifact."""
    run_id, _, path = uri[len("runs:/") :].partition("/")
    run = store.get_run(run_id)
    name, _, rest = path.partition("/")
    if name:
        for model in store.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"name = '{name}'"
        ):
            if model.source_run_id == run_id:
                return "/".join(p for p in (model.artifact_location, rest) if p)
    return "/".join(p for p in (run.info.artifact_uri, path) if p)


def _number(version) -> int:
    return int(version.version)


def _download(uri: str, flag: str, tracking_uri: str, target: Path) -> None:
    """Download ``uri`` into ``target`` via a temporary sibling (a complete copy or none)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        mlflow.artifacts.download_artifacts(
            artifact_uri=_artifact_uri(uri, tracking_uri),
            dst_path=str(tmp),
            tracking_uri=tracking_uri,
        )
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except (MlflowException, OSError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise GeolipError(f"{flag} {uri}: cannot download it: {reason}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def checkpoint_arg(args, value: str, flag: str) -> Path:
    """A command's checkpoint argument as a local directory, the MLflow store found from its
    ``--tracking-uri`` / ``--data-dir`` (``add_common_run_arguments``) as for any tracked
    command."""
    from pipelines.paths import data_dir
    from pipelines.tracking import resolve_tracking_uri

    data = data_dir(args.data_dir)
    return local_checkpoint(value, flag, resolve_tracking_uri(args.tracking_uri, data), data)


def model_arg(value: str | None, flag: str, tracking_uri: str, data: Path) -> str | None:
    """A checkpoint flag's value with an MLflow URI replaced by its local download (a path
    or an object-storage URI stays as given: the commands read those themselves)."""
    if value is None or not is_mlflow_uri(value):
        return value
    return str(local_checkpoint(value, flag, tracking_uri, data))
