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
from tune.report import child_runs

STATE_FORMAT = 1


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
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise GeolipError(
                f"another geolip demo (pid {holder}) is running on {self.path.parent}; wait for "
                "it, or pass another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None


class DemoState:
    """The records of the finished stages, persisted in ``home/state.json``."""

    def __init__(self, home: Path, identity: dict):
        self.home = home
        self.path = home / "state.json"
        self.identity = identity
        self.stages: dict[str, dict] = {}
        if self.path.exists():
            saved = json.loads(self.path.read_text())
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
    state = home / "state.json"
    stages = json.loads(state.read_text()).get("stages", {}) if state.exists() else {}
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
