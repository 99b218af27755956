"""The bad-input battery's harness: run one bad case through the real ``geolip`` command line.

Each case is a row of a table (``Case``): the arguments, the exit code expected (2 for bad input,
130 for an interrupt) and a fragment the one error line must contain (the flag or file it names).
``check_case`` runs ``geolip`` in a subprocess, as a user would, and asserts the contract every
command keeps on bad input:

- exactly one ``geolip: error:`` line on stderr, containing the fragment, and no traceback;
- nothing on stdout (no partial output);
- every file under the case's directory byte-identical, and none added or removed.

With ``$GEOLIP_BATTERY_LOG`` set, each case appends ``{"group", "case", "exit", "message"}`` as a
JSON line there (the closing-note table is made from it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

GEOLIP = str(Path(sys.executable).with_name("geolip"))
# Lines Ray's log monitor forwards from its processes: not the command's own output.
_RAY_LOG = re.compile(r"^(\x1b\[[0-9;]*m)?\([^)\n]*pid=[^)\n]*\)")


@dataclass(frozen=True)
class Case:
    """One bad input: ``argv`` after ``geolip`` (``{tmp}``, ``{file}``, ... are filled from the
    case directory and its fixtures), the exit code and a fragment of the expected message."""

    id: str
    argv: tuple[str, ...]
    expect: str
    code: int = 2
    setup: Callable[[Path], None] | None = None
    """Writes the case's fixtures under its directory before the run."""
    env: dict = field(default_factory=dict)
    stdin: str | None = None


def tree_digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (directories as ``"dir"``)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def base_env(tmp: Path) -> dict:
    """A user's environment, offline, with data and tracking under ``tmp`` and no cluster."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(
        GEOLIP_DATA=str(tmp / "data"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("GEOLIP_DEBUG", None)
    return env


def error_lines(stderr: str) -> list[str]:
    """stderr without Ray's forwarded log lines and blank lines."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not _RAY_LOG.match(ln)]


def fill(argv: tuple[str, ...], tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in argv]


def filled(case: Case, tmp: Path, values: dict | None = None) -> Case:
    """``case`` with ``{tmp}`` (the case directory) and each ``{name}`` of ``values`` put into
    its argv, expected message and environment."""
    subs = {"{tmp}": str(tmp), **{f"{{{k}}}": str(v) for k, v in (values or {}).items()}}

    def put(text: str) -> str:
        for key, value in subs.items():
            text = text.replace(key, value)
        return text

    return dataclasses.replace(
        case,
        argv=tuple(put(a) for a in case.argv),
        expect=put(case.expect),
        env={k: put(v) for k, v in case.env.items()},
    )


def check_result(case: Case, group: str, rc: int, stdout: str, stderr: str) -> str:
    """Assert the bad-input contract on a finished command; returns its error line."""
    lines = error_lines(stderr)
    assert "Traceback" not in stderr, f"{case.id}: traceback\n{stderr}"
    assert len(lines) == 1 and lines[0].startswith("geolip: error:"), (
        f"{case.id}: expected one 'geolip: error:' line, got\n{stderr}"
    )
    message = lines[0]
    assert case.expect in message, f"{case.id}: {case.expect!r} not in {message!r}"
    assert rc == case.code, f"{case.id}: exit {rc}, expected {case.code}: {message}"
    assert stdout.strip() == "", f"{case.id}: partial output on stdout: {stdout[:400]!r}"
    log = os.environ.get("GEOLIP_BATTERY_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            row = {"group": group, "case": case.id, "exit": rc, "message": message}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return message


def check_case(
    case: Case, group: str, tmp: Path, timeout: float = 120, values: dict | None = None
) -> str:
    """Run ``case`` in ``tmp`` (its fixtures written first) and assert the contract; ``{tmp}``
    and ``{name}`` placeholders are filled first (``filled``)."""
    case = filled(case, tmp, values)
    if case.setup is not None:
        case.setup(tmp)
    before = tree_digest(tmp)
    env = base_env(tmp) | case.env
    started = time.monotonic()
    proc = subprocess.run(
        [GEOLIP, *case.argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=timeout,
        input=case.stdin,
    )
    message = check_result(case, group, proc.returncode, proc.stdout, proc.stderr)
    assert tree_digest(tmp) == before, f"{case.id}: files under {tmp} changed"
    assert time.monotonic() - started < timeout
    return message


def interrupt_case(
    case: Case,
    group: str,
    tmp: Path,
    marker: str,
    timeout: float = 300,
    unchanged: bool = True,
) -> str:
    """Run ``case`` in ``tmp``, press Ctrl-C once a line matching ``marker`` (a regex) has been
    printed, and assert the contract (exit ``case.code``, 130). As a terminal's Ctrl-C does, the
    SIGINT goes to the whole process group (the command and any Ray it started). With
    ``unchanged`` the case's files must be as before; a training run may keep its checkpoint."""
    import signal
    import threading

    case = filled(case, tmp)
    if case.setup is not None:
        case.setup(tmp)
    before = tree_digest(tmp)
    proc = subprocess.Popen(
        [GEOLIP, *case.argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=base_env(tmp) | case.env,
        cwd=tmp,
        start_new_session=True,
    )
    seen = threading.Event()
    pattern = re.compile(marker)
    out: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def pump(name: str, stream) -> None:
        for line in stream:
            out[name].append(line)
            if pattern.search(line):
                seen.set()

    pumps = [threading.Thread(target=pump, args=(n, getattr(proc, n)), daemon=True) for n in out]
    for t in pumps:
        t.start()
    try:
        assert seen.wait(timeout), f"{case.id}: {marker!r} never printed\n{''.join(out['stderr'])}"
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for t in pumps:
        t.join(timeout=10)
    stderr = "".join(out["stderr"])
    # What the command printed before the interrupt is its own progress, not partial output.
    stderr_after = stderr[stderr.find("geolip: error:") :] if "geolip: error:" in stderr else stderr
    message = check_result(case, group, rc, "", stderr_after)
    assert "Traceback" not in stderr, f"{case.id}: traceback\n{stderr}"
    if unchanged:
        assert tree_digest(tmp) == before, f"{case.id}: files under {tmp} changed"
    return message
