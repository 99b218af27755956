"""What a ``geolip demo`` has done so far, so that a re-run skips it and ``--fresh`` undoes it.

``DATA/demo/SCALE/state.json`` holds one record per finished stage (its figures, the MLflow runs
and the directories it made). It is rewritten atomically after every stage, so an interrupted demo
keeps every stage it finished; the stage it was in resumes from its own checkpoints (training) or
starts again (everything else writes to a temporary path first). A lock file keeps two demos off
one data directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from pathlib import Path

from pipelines.errors import GeolipError
from pipelines.tracking import client
from tune.spec import json_kind, read_json_object

STATE_FORMAT = 1


def read_state(path: Path) -> dict | None:
    """The saved state ``path`` (None: no demo ran there yet). A file that is not a demo's
    state is one ``GeolipError`` line naming it, and how to start over."""
    if not path.exists():
        return None
    start_over = f"delete {path.parent} to start this demo over, or pass another --data-dir"
    try:
        doc = read_json_object(path)
    except GeolipError as exc:
        raise GeolipError(f"demo state {exc}; {start_over}") from None
    for key in ("identity", "stages"):
        value = doc.get(key, {})
        if not isinstance(value, dict):
            raise GeolipError(
                f"demo state {path}: {key!r} holds a JSON {json_kind(value)}; expected a JSON "
                f"object; {start_over}"
            )
    bad = [name for name, rec in doc.get("stages", {}).items() if not isinstance(rec, dict)]
    if bad:
        raise GeolipError(
            f"demo state {path}: the record of stage {bad[0]!r} is not a JSON object; {start_over}"
        )
    return doc


def check_writable(data: Path) -> None:
    """Raise a one-line error unless ``data`` can be created and written (before any work)."""
    try:
        data.mkdir(parents=True, exist_ok=True)
        probe = data / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise GeolipError(
            f"--data-dir {data}: not writable ({exc.strerror or exc}); pass a directory you can "
            "write to (or set GEOLIP_DATA)"
        ) from None


class DemoLock:
    """An exclusive ``flock`` on ``DIR/.lock``; the kernel drops it if the process dies."""

    def __init__(self, directory: Path):
        self.path = directory / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> DemoLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            error = _held(fd, self.path)
            os.close(fd)
            raise error from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def _held(fd: int, path: Path) -> GeolipError:
    """The error for a lock another demo holds (its pid is in the lock file)."""
    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    return GeolipError(
        f"another geolip demo (pid {holder}) is running on {path.parent}; wait for it, or pass "
        "another --data-dir"
    )


def check_unlocked(directory: Path) -> None:
    """Refuse, writing nothing, when another demo holds ``directory``'s lock (``DemoLock``
    takes it for real later; this is the early, read-only look)."""
    path = directory / ".lock"
    if not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the close below
    except BlockingIOError:
        raise _held(fd, path) from None
    finally:
        os.close(fd)


class DemoState:
    """The records of the finished stages, persisted in ``home/state.json``."""

    def __init__(self, home: Path, identity: dict):
        self.home = home
        self.path = home / "state.json"
        self.identity = identity
        self.stages: dict[str, dict] = {}
        saved = read_state(self.path)
        if saved is not None:
            if saved.get("identity") != identity:
                raise GeolipError(
                    f"{self.path} is a demo of other options ({saved.get('identity')}); pass "
                    "--fresh to start over with these, or another --data-dir"
                )
            self.stages = saved.get("stages", {})

    def done(self, stage: str) -> dict | None:
        return self.stages.get(stage)

    def record(self, stage: str, rec: dict) -> None:
        self.stages[stage] = rec
        self.home.mkdir(parents=True, exist_ok=True)
        doc = {"format": STATE_FORMAT, "identity": self.identity, "stages": self.stages}
        tmp = self.path.with_suffix(f".tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        os.replace(tmp, self.path)  # a reader never sees half a state file


def forget(home: Path, uri: str, progress=print) -> None:
    """``--fresh``: delete the MLflow runs and directories the recorded stages made, and the
    demo's own directory. Runs are deleted (MLflow's trash), not purged."""
    stages = (read_state(home / "state.json") or {}).get("stages", {})
    runs = [r for rec in stages.values() for r in rec.get("runs", [])]
    paths = [Path(p) for rec in stages.values() for p in rec.get("paths", [])]
    if runs:
        _delete_runs(uri, runs)
    for p in [*paths, home]:
        if p.exists():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    progress(f"--fresh: removed {len(stages)} finished stage(s), {len(runs)} MLflow run(s)")


def _delete_runs(uri: str, run_ids: list[str]) -> None:
    """Delete the runs and their child runs (a sweep's trials)."""
    from tune.report import child_runs  # matplotlib: only when there is something to delete

    runs = client(uri)
    for run_id in run_ids:
        try:
            run = runs.get_run(run_id)
        except Exception:  # already gone (deleted by hand, or another store)
            continue
        for r in [*child_runs(uri, run_id), run]:
            if r.info.lifecycle_stage != "deleted":
                runs.delete_run(r.info.run_id)


def close_interrupted(uri: str, experiment_id: str) -> int:
    """Mark the experiment's RUNNING runs KILLED: with the lock held they belong to a demo that
    was interrupted (a resumed stage reopens its run and finishes it)."""
    runs = client(uri)
    stale = runs.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'")
    for run in stale:
        runs.set_tag(run.info.run_id, "interrupted", "true")
        runs.set_terminated(run.info.run_id, status="KILLED")
    return len(stale)
