"""The in-process training session: its checkpoints land where Ray Train's would and count as
Ray Train's do (``run_storage.checkpoints``); a failed copy leaves nothing; the newest ``KEEP``
stay; its data are the shards' Parquet rows. (Its training equals Ray Train's: test_train_aleph;
its failures are retried by Tune from these checkpoints: tests/tune/test_sweep.py.)"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.run_storage import TRAIN_STATE, checkpoints, has_checkpoint, local_root
from pipelines.train_session import KEEP, InProcessSession, persist_checkpoint


def _checkpoint(tmp: Path, step: int) -> Path:
    d = tmp / f"local-{step}"
    (d / "model").mkdir(parents=True)
    (d / "model" / "weights.safetensors").write_bytes(b"w" * step)
    (d / "meta.json").write_text(f'{{"step": {step}}}')
    (d / TRAIN_STATE).write_bytes(b"state")
    return d


def test_reports_keep_the_newest_checkpoints_where_ray_train_keeps_its_own(tmp_path) -> None:
    results = tmp_path / "ray_results" / "run-a"
    session = InProcessSession({}, local_root(results))
    assert not has_checkpoint(results)
    for step in (4, 8, 12):
        session.report({"step": step}, _checkpoint(tmp_path, step))
        time.sleep(0.002)  # names are microsecond timestamps
    kept = checkpoints(local_root(results), complete=True)
    assert len(kept) == KEEP == 2
    steps = [Path(c.path, "meta.json").read_text() for c in kept]
    assert steps == ['{"step": 8}', '{"step": 12}']  # oldest first, as Ray Train's sort
    assert session.last.path == kept[-1].path
    assert Path(kept[-1].path, "model", "weights.safetensors").read_bytes() == b"w" * 12
    assert not list(results.glob(".*"))  # no staging directory left behind
    session.report({"step": 13}, None)  # a report without a checkpoint changes nothing
    assert [c.path for c in checkpoints(local_root(results))] == [c.path for c in kept]


def test_a_checkpoint_copy_that_failed_half_way_is_not_a_checkpoint(tmp_path) -> None:
    results = tmp_path / "ray_results" / "run-b"
    results.mkdir(parents=True)
    broken = _checkpoint(tmp_path, 4)
    (broken / "model" / "gone").symlink_to(tmp_path / "nowhere")  # copying it fails, the rest not
    with pytest.raises(shutil.Error):
        persist_checkpoint(broken, local_root(results))
    assert not has_checkpoint(results) and not list(results.iterdir())  # nothing half-written


def test_batches_are_the_parquet_rows_of_its_files(tmp_path) -> None:
    files = []
    for i in range(2):
        table = pa.table({"offset": [10 * i, 10 * i + 5], "chunk": [b"ab", b"cd"]})
        files.append(str(tmp_path / f"part-{i}.parquet"))
        pq.write_table(table, files[-1])
    session = InProcessSession({"train": files}, local_root(tmp_path / "r"))
    rows = [o for b in session.batches("train") for o in b.column("offset").to_pylist()]
    assert rows == [0, 5, 10, 15]
    assert session.rank == 0 and session.world == 1 and str(session.device) == "cpu"
