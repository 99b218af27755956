"""Progress of long work on the console: a tqdm bar with an ETA, or an ETA in a log line.

``bar`` draws on stderr only where someone is watching: when stderr is a terminal. A log file, a
pipe, CI and the tests' captured output get no bar, so an error stays the one ``geolip: error:``
line. ``GEOLIP_PROGRESS=0`` turns bars off everywhere; ``GEOLIP_PROGRESS=1`` draws them even where
stderr is not a terminal; any other value (or none) means "on a terminal". MLflow's own artifact
download bar is switched off separately (``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``), and Ray Data
draws its own bars for its datasets, which are not doubled here.

Ray forwards a Ray Train worker's output to the driver line by line, where a bar redrawn with
``\\r`` is unreadable, so the workers print ``eta`` in their step lines instead.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

ENV = "GEOLIP_PROGRESS"


def enabled() -> bool:
    """Whether ``bar`` draws: ``GEOLIP_PROGRESS`` 0 / 1 decide, else whether stderr is a TTY."""
    value = os.environ.get(ENV, "").strip()
    if value in ("0", "1"):
        return value == "1"
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty is not None and isatty())


def bar(total: int, desc: str, unit: str = "it") -> tqdm:
    """A tqdm bar of ``total`` ``unit``s on stderr (elapsed, rate and ETA), disabled unless
    :func:`enabled`; a disabled bar's ``update`` does nothing. Use it as a context manager."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,  # looked up now: the stream a test or the CLI installed
        disable=not enabled(),
        dynamic_ncols=True,
    )


def duration(seconds: float) -> str:
    """``45s``, ``1m20s``, ``2h05m``: a duration rounded to what a reader wants to know."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def eta(done: int, total: int, elapsed: float) -> str:
    """The time left for ``total`` items at the rate of the ``done`` that took ``elapsed``
    seconds (``?`` before the first is done)."""
    if done <= 0:
        return "?"
    return duration(elapsed * max(total - done, 0) / done)
