"""Where the project keeps its data (one absolute directory: Ray workers change the cwd), and
the checks every output path gets before any work starts."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from pipelines.errors import GeolipError


def data_dir(override: str | None = None) -> Path:
    """``--data-dir`` if given, else ``$GEOLIP_DATA``, else ``./data``; always absolute.

    Checked, not created: a path that is (or lies under) a regular file is refused here, before
    a job starts Ray or writes anything.
    """
    raw = override or os.environ.get("GEOLIP_DATA") or "data"
    path = Path(raw).expanduser().resolve()
    check_dir_path(path, "--data-dir" if override else "--data-dir ($GEOLIP_DATA or ./data)")
    return path


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
    path = Path(path).expanduser().absolute()
    problem = under_file(path)
    if problem is not None:
        raise GeolipError(f"{flag} {problem}")
    return path


def check_file_path(path: str | os.PathLike, flag: str) -> Path:
    """Refuse an output file path whose parent is, or lies under, a regular file, or that is a
    directory."""
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
