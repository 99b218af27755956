"""Bad input to ``geolip demo``: one error line, exit 2, nothing on stdout and every file of the
case's directory unchanged (no ``mlflow.db``, no lock file, no stage output: each case fails in
``demo.checks`` before ``demo.run`` imports Ray, torch and MLflow).

The demo keeps its state in ``DATA/demo/SCALE/state.json``; the ``state-*`` cases write a corrupt
one there. The ``locked`` case holds the demo's lock (``DATA/demo/.lock``) from this process, as
a running demo would.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest
from battery_harness import Case, check_case

DEMO = ("demo", "--scale", "smoke")
STATE = "{tmp}/data/demo/smoke/state.json"
START_OVER = "delete {tmp}/data/demo/smoke to start this demo over"
HELD: list[int] = []
"""File descriptors holding a demo's lock for the case being run (closed after it)."""


def a_file(tmp: Path) -> None:
    (tmp / "f").write_text("not a directory\n")


def state(data: str | bytes):
    """A setup: ``data`` as the smoke demo's saved state."""

    def setup(tmp: Path) -> None:
        home = tmp / "data" / "demo" / "smoke"
        home.mkdir(parents=True)
        raw = data if isinstance(data, bytes) else data.encode("utf-8")
        (home / "state.json").write_bytes(raw)

    return setup


def state_doc(**doc):
    return state(json.dumps(doc))


def demo_dir_is_a_file(tmp: Path) -> None:
    (tmp / "data").mkdir()
    (tmp / "data" / "demo").write_text("not a directory\n")


def locked(tmp: Path) -> None:
    """Another demo (pid 4242) holds the lock on the data directory."""
    (tmp / "data" / "demo").mkdir(parents=True)
    fd = os.open(tmp / "data" / "demo" / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"4242")
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    HELD.append(fd)


def flag(name: str, value: str, expect: str) -> Case:
    slug = value.lower().replace("-", "minus") or "empty"
    return Case(f"{name.strip('-')}-{slug}", (*DEMO, f"{name}={value}"), expect)


IDENTITY = {"scale": "smoke", "corpus": "builtin:tiny", "workers": 2}

CASES = [
    Case("scale-unknown", ("demo", "--scale", "huge"), "argument --scale: invalid choice: 'huge'"),
    flag("--workers", "0", "argument --workers: must be >= 1, got 0"),
    flag("--workers", "-2", "argument --workers: must be >= 1, got -2"),
    flag("--workers", "two", "argument --workers: expected a whole number, got 'two'"),
    Case("unknown-flag", (*DEMO, "--bogus"), "unrecognized arguments: --bogus"),
    Case("corpus-malformed", (*DEMO, "--corpus", "bogus"), "--corpus: malformed corpus URI"),
    Case(
        "corpus-builtin-unknown",
        (*DEMO, "--corpus", "builtin:nope"),
        "--corpus: unknown builtin corpus 'nope'",
    ),
    Case(
        "corpus-file-missing",
        (*DEMO, "--corpus", "file:{tmp}/missing.txt"),
        "--corpus: corpus file not found",
    ),
    Case(
        "corpus-glob-empty",
        (*DEMO, "--corpus", "file:{tmp}/*.nope"),
        "--corpus: no files match the glob",
    ),
    Case(
        "data-dir-under-file",
        (*DEMO, "--data-dir", "{tmp}/f/data"),
        "--data-dir {tmp}/f/data lies under {tmp}/f, which is a regular file",
        setup=a_file,
    ),
    Case(
        "geolip-data-under-file",
        DEMO,
        "--data-dir ($GEOLIP_DATA or ./data) {tmp}/f/data lies under {tmp}/f",
        setup=a_file,
        env={"GEOLIP_DATA": "{tmp}/f/data"},
    ),
    Case(
        "demo-dir-is-a-file",
        DEMO,
        "--data-dir: the demo's directory {tmp}/data/demo/smoke lies under {tmp}/data/demo, "
        "which is a regular file",
        setup=demo_dir_is_a_file,
    ),
    Case(
        "state-not-object",
        DEMO,
        f"demo state {STATE} holds a JSON array; expected a JSON object; {START_OVER}",
        setup=state("[1]"),
    ),
    Case(
        "state-string",
        DEMO,
        f"demo state {STATE} holds a JSON string; expected a JSON object",
        setup=state('"done"'),
    ),
    Case(
        "state-not-object-fresh",
        (*DEMO, "--fresh"),
        f"demo state {STATE} holds a JSON number; expected a JSON object; {START_OVER}",
        setup=state("3"),
    ),
    Case(
        "state-not-json",
        DEMO,
        f"demo state {STATE} is not readable JSON (",
        setup=state('{"stages": '),
    ),
    Case(
        "state-not-utf8",
        DEMO,
        f"demo state {STATE} is not UTF-8 text",
        setup=state(b'{"stages": "\xff"}'),
    ),
    Case(
        "state-stages-not-object",
        DEMO,
        f"demo state {STATE}: 'stages' holds a JSON array; expected a JSON object",
        setup=state_doc(identity=IDENTITY, stages=[]),
    ),
    Case(
        "state-stage-not-object",
        DEMO,
        f"demo state {STATE}: the record of stage 'atlas' is not a JSON object",
        setup=state_doc(identity=IDENTITY, stages={"atlas": "done"}),
    ),
    Case(
        "state-identity-not-object",
        DEMO,
        "'identity' holds a JSON null; expected a JSON object",
        setup=state_doc(identity=None, stages={}),
    ),
    Case(
        "state-of-other-options",
        (*DEMO, "--corpus", "builtin:python-docs"),
        f"{STATE} is a demo of other options",
        setup=state_doc(format=1, identity=IDENTITY, stages={}),
    ),
    Case(
        "locked",
        (*DEMO, "--corpus", "builtin:tiny"),
        "another geolip demo (pid 4242) is running on {tmp}/data/demo",
        setup=locked,
    ),
    Case("tracking-uri-file-store", (*DEMO, "--tracking-uri", "file:/x"), "is a file store"),
    Case(
        "tracking-server-unreachable",
        (*DEMO, "--tracking-uri", "http://127.0.0.1:9"),
        "tracking server http://127.0.0.1:9 is unreachable",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_demo_bad_input(case, tmp_path):
    try:
        check_case(case, "demo", tmp_path)
    finally:
        while HELD:
            os.close(HELD.pop())


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)
