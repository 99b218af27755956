"""Where a training run's Ray storage, worker inputs and results live: under the data directory,
or, with ``--data-dir s3://BUCKET/PREFIX``, on object storage.

A job with a data directory on object storage works in a local *work directory* (byte shards, a
run's inputs as it prepares them, staging; ``work_dir``) and keeps on the store what must outlive
the node it runs on, laid out as a local data directory is::

    PREFIX/ray_results/NAME/...          Ray Train's checkpoints and run state (Ray writes them
                                         through pyarrow.fs: ``storage_kwargs``)
    PREFIX/sweeps/NAME/sweep.json        a sweep's plan; PREFIX/sweeps/NAME/tune: Tune's state
    PREFIX/runs/aleph/NAME/inputs/       what the run's workers read (bank, warm start, held-out
                                         windows): published before the fit and fetched by each
                                         worker into its node's cache, so no node needs another
                                         node's files (``publish_inputs`` / ``fetch_inputs``)
    PREFIX/runs/aleph/NAME/final/        the final checkpoint (``manifest.json`` last)
    PREFIX/runs/aleph/NAME/verdict.json
    PREFIX/mlflow/artifacts/...          MLflow artifacts (with a SQLite or database store)

Every location is a ``pipelines.storage.Root``: a local directory is one too, so the code that
asks "has this run a checkpoint" or "where does Ray write" does not branch on the kind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from pipelines.storage import (
    MARKER,
    Root,
    cache_home,
    cached_copy,
    describe,
    list_files,
    parse_root,
    publish_dir,
    read_bytes,
    scratch_dir,
)

FLAG = "--data-dir"
TRAIN_STATE = "train_state.pt"
"""What a checkpoint of ours holds once complete (optimizer, scheduler, step)."""


def local_root(path: str | os.PathLike) -> Root:
    """A local directory as a ``Root``."""
    path = str(Path(path).absolute())
    return Root(path, pafs.LocalFileSystem(), path)


def work_dir(uri: str) -> Path:
    """The local work directory of a data directory on object storage: ``$GEOLIP_SCRATCH/work``
    or the user's cache, one per URI (a rerun on this machine finds its byte shards again)."""
    base = os.environ.get("GEOLIP_SCRATCH")
    home = Path(base) / "work" if base else cache_home().parent / "work"
    return home / hashlib.sha256(uri.encode()).hexdigest()[:16]


def data_root(data_dir: Path, storage: str | None) -> Root:
    """The data directory as a ``Root``: the store's prefix, else the local directory."""
    return parse_root(storage, FLAG) if storage else local_root(data_dir)


def storage_kwargs(root: Root) -> dict:
    """``storage_path`` / ``storage_filesystem`` for a Ray Train or Tune ``RunConfig``."""
    return {"storage_path": root.path, "storage_filesystem": root.fs if root.remote else None}


def _entries(root: Root) -> list[pafs.FileInfo]:
    try:
        return root.fs.get_file_info(pafs.FileSelector(root.path, allow_not_found=True))
    except OSError as exc:
        raise describe(exc, root, FLAG) from None


def subdirs(root: Root, prefix: str = "") -> list[str]:
    """Names of the directories directly under ``root`` that start with ``prefix``, sorted."""
    names = [i.base_name for i in _entries(root) if i.type == pafs.FileType.Directory]
    return sorted(n for n in names if n.startswith(prefix))


def checkpoints(train: Root, complete: bool = False) -> list[Root]:
    """Ray Train's checkpoints of a run (``train``: its directory under ``ray_results``), oldest
    first (their names are timestamps); ``complete``: only those holding ``TRAIN_STATE``."""
    found = [train.child(n) for n in subdirs(train, "checkpoint_")]
    if not complete:
        return found
    return [c for c in found if _is_file(c.child(TRAIN_STATE))]


def has_checkpoint(train: Root | Path) -> bool:
    """Whether a run's directory under ``ray_results`` holds a checkpoint to resume from."""
    return bool(checkpoints(train if isinstance(train, Root) else local_root(train)))


def _is_file(root: Root) -> bool:
    try:
        return root.fs.get_file_info(root.path).type == pafs.FileType.File
    except OSError as exc:
        raise describe(exc, root, FLAG) from None


def exists(root: Root) -> bool:
    """Whether anything (a file, or a directory: a prefix holding files) is at ``root``."""
    try:
        return root.fs.get_file_info(root.path).type != pafs.FileType.NotFound
    except OSError as exc:
        raise describe(exc, root, FLAG) from None


def publish_inputs(run: Root, files: dict[str, Path]) -> dict:
    """Upload a run's worker inputs (``files``: config key -> local file or directory) to
    ``run/inputs``; returns what ``fetch_inputs`` needs (the URI and each key's name there).

    Republished on every (re)start: the marker carries a fresh id, so a worker's cache never
    serves the inputs of an earlier start.
    """
    staging = scratch_dir("geolip-inputs-")
    try:
        names = {}
        for key, path in files.items():
            copy = shutil.copytree if path.is_dir() else shutil.copy2
            copy(path, staging / path.name)
            names[key] = path.name
        marker = {"format": "geolip-run-inputs/1", "files": names, "id": uuid.uuid4().hex}
        (staging / MARKER).write_text(json.dumps(marker) + "\n")
        target = run.child("inputs")
        try:
            publish_dir(staging, target, replace=list_files(target))
        except OSError as exc:
            raise describe(exc, target, FLAG) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"uri": target.uri, "files": names}


def fetch_inputs(config: dict) -> dict:
    """A worker's config with its inputs as local paths: unchanged when they are local, else
    fetched once per node from the store (``publish_inputs``)."""
    inputs = config.get("inputs")
    if not inputs:
        return config
    local = cached_copy(parse_root(inputs["uri"], FLAG), FLAG)
    return {**config, **{key: str(local / name) for key, name in inputs["files"].items()}}


def publish_checkpoint(local: Path, target: Root, meta: dict) -> str:
    """Upload a final checkpoint directory to ``target`` (replacing what is there), with a
    marker naming it; returns its URI (which ``--init-from`` and ``--donor`` accept)."""
    staging = scratch_dir("geolip-final-")
    try:
        shutil.copytree(local, staging / "final")
        marker = {"format": "geolip-checkpoint/1", **meta, "id": uuid.uuid4().hex}
        (staging / "final" / MARKER).write_text(json.dumps(marker) + "\n")
        try:
            publish_dir(staging / "final", target, replace=list_files(target))
        except OSError as exc:
            raise describe(exc, target, FLAG) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target.uri


def write_file(root: Root, name: str, data: bytes) -> None:
    """One small file at ``root/name`` (a verdict, a sweep's plan)."""
    target = root.child(name)
    try:
        if not root.remote:
            Path(target.path).parent.mkdir(parents=True, exist_ok=True)
        with root.fs.open_output_stream(target.path) as f:
            f.write(data)
    except OSError as exc:
        raise describe(exc, target, FLAG) from None


def read_file(root: Root, name: str) -> bytes | None:
    """``root/name`` or None where it is not there."""
    try:
        return read_bytes(root, name)
    except OSError as exc:
        raise describe(exc, root.child(name), FLAG) from None


def checkpoint_run_id(train: Root) -> str | None:
    """The MLflow run id recorded in the newest checkpoint of a run (``train``: its directory
    under ``ray_results``): a resumed run continues that run, never one found by its name."""
    for ckpt in reversed(checkpoints(train)):
        raw = read_file(ckpt, "meta.json")
        if raw is None:
            continue
        try:
            run_id = json.loads(raw).get("mlflow_run_id")
        except (ValueError, AttributeError):
            continue  # a checkpoint being written, or not ours: an older one says it
        if isinstance(run_id, str) and run_id:
            return run_id
    return None
