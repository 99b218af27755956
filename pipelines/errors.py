"""Errors the CLI reports as one line (``geolip: error: ...``, exit code 2) instead of a traceback.

``GeolipError`` is for pipeline-level mistakes (a bad config, a missing run). The lower layers
cannot import this module, so they raise ``ValueError`` subclasses (``atlas.corpus.CorpusError``)
and the CLI treats those the same way; see ``USER_ERRORS``. ``Interrupted`` and ``watch_sigint``
are the Ctrl-C side: what an interrupted job kept, and telling an interrupt from a failure.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


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


@contextlib.contextmanager
def watch_sigint() -> Iterator[threading.Event]:
    """Note any SIGINT (Ctrl-C) while the block runs, then let the handler before it act.

    A terminal sends Ctrl-C to the whole process group: Ray's workers die of it as well and
    ``trainer.fit`` may raise their deaths as an ordinary error before (or instead of) the
    driver's ``KeyboardInterrupt``; the event lets ``fit`` tell the two apart. Outside the main
    thread (a Tune trial's driver) signals cannot be handled: the event stays clear.
    """
    seen = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return
    previous = signal.getsignal(signal.SIGINT)

    def note(signum, frame) -> None:
        seen.set()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)
