"""Where the project keeps its data (one absolute directory: Ray workers change the cwd), and
the checks every output path gets before any work starts."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from pipelines.errors import GeolipError


def data_dir(override: str | None = None) -> Path:
    """``--data-dir`` if given, else ``$GEOLIP_DATA``, else ``./data``; always absolute.

    Checked, not created: a path that is (or lies under) a regular file is refused here, before
    a job starts Ray or writes anything.
    """
    raw = override or os.environ.get("GEOLIP_DATA") or "data"
    flag = "--data-dir" if override else "--data-dir ($GEOLIP_DATA or ./data)"
    refuse_uri(raw, flag)
    path = Path(raw).expanduser().resolve()
    check_dir_path(path, flag)
    return path


# `scheme://...`: an object store or a remote file system, not a local path.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def refuse_uri(value: str | os.PathLike, flag: str) -> None:
    """Refuse ``s3://``, ``gs://``, ... where a local or shared POSIX path is needed: as a
    path, ``s3://b/x`` would silently become ``./s3:/b/x``."""
    if isinstance(value, str) and _URI.match(value):
        scheme = value.split("://", 1)[0]
        raise GeolipError(
            f"{flag} {value}: {scheme}:// is not supported by this command (object storage is "
            "for `train aleph`, `sweep` and `atlas build --out`); use a local or shared POSIX "
            "path (an NFS/EFS volume, or the bucket mounted with s3fs/gcsfuse)"
        )


def blocking_file(path: Path) -> Path | None:
    """The regular file (``path`` itself or an ancestor) that keeps ``path`` from being a
    directory, or None."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def under_file(path: Path) -> str | None:
    """``"PATH is a regular file; ..."`` / ``"PATH lies under FILE, which is ..."`` when a
    regular file keeps ``path`` from being a directory, else None."""
    blocker = blocking_file(path)
    if blocker is None:
        return None
    where = "is" if blocker == path else f"lies under {blocker}, which is"
    return f"{path} {where} a regular file; expected a directory"


def check_dir_path(path: str | os.PathLike, flag: str) -> Path:
    """Refuse a directory path that is, or lies under, a regular file (one line naming ``flag``)."""
    refuse_uri(path, flag)
    path = Path(path).expanduser().absolute()
    problem = under_file(path)
    if problem is not None:
        raise GeolipError(f"{flag} {problem}")
    return path


def check_file_path(path: str | os.PathLike, flag: str) -> Path:
    """Refuse an output file path whose parent is, or lies under, a regular file, or that is a
    directory."""
    refuse_uri(path, flag)
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise GeolipError(f"{flag} {path} is a directory; expected a file path")
    blocker = blocking_file(path.parent)
    if blocker is not None:
        raise GeolipError(f"{flag} {path} lies under {blocker}, which is a regular file")
    return path


@contextlib.contextmanager
def new_parents(path: Path) -> Iterator[None]:
    """Create ``path``'s missing parent directories for the block; when the block fails, remove
    again those it created that are still empty (a failed first run leaves no ``data/``)."""
    missing = [p for p in Path(path).parents if not p.exists()]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for parent in missing:  # deepest first
            try:
                parent.rmdir()
            except OSError:  # not empty (another writer) or already gone: leave it
                break
        raise
