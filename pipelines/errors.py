"""Errors the CLI reports as one line (``geolip: error: ...``, exit code 2) instead of a traceback.

``GeolipError`` is for pipeline-level mistakes (a bad config, a missing run). The lower layers
cannot import this module, so they raise ``ValueError`` subclasses (``atlas.corpus.CorpusError``)
and the CLI treats those the same way; see ``USER_ERRORS``.
"""

from __future__ import annotations


class GeolipError(Exception):
    """A user-facing error: its message says what was wrong and what to do instead."""


# What `pipelines.cli.main` turns into a one-line message; GEOLIP_DEBUG=1 keeps the traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    GeolipError,
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def describe_os_error(error: OSError) -> str:
    """An OS error about a path on one line, saying which regular file is in the way where one
    is (``[Errno 17] File exists`` alone does not say that the directory's path is a file)."""
    from pathlib import Path

    from pipelines.paths import under_file  # paths imports this module: imported on use

    if error.filename is None:
        return " ".join(str(error).split())
    path = Path(error.filename)
    if isinstance(error, FileExistsError | NotADirectoryError):
        problem = under_file(path)
        if problem is not None:
            return problem
    return f"{error.strerror or type(error).__name__}: {path}"


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C that a job has cleaned up after; the message says what was kept and how to
    continue (``pipelines.cli.main`` prints it on one line and exits with 130)."""
