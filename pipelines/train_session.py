"""Where a training loop runs: a Ray Train worker, or the calling process (a Tune trial's).

A training loop asks its session for its rank, device and data, restores from the session's
checkpoint, and hands each checkpoint to ``report``. Two sessions serve the same loop:

- ``RayTrainSession``: one rank of a Ray Train worker group (``ray.train``'s context, dataset
  shard, ``report`` barrier and checkpoint storage; Ray Train restarts the group on a failure).
- ``InProcessSession``: the run's single worker in the process that started it. A sweep's trial
  trains this way in its own Tune trial process, skipping the ~9 s of a Train controller and a
  worker group per trial. Its checkpoints are written where Ray Train's would be
  (``DATA/ray_results/NAME/checkpoint_<time>``, the newest ``KEEP`` kept), so a trial that dies is
  retried by Tune's ``FailureConfig`` and continues from the newest one exactly as a restarted
  worker group would (``resume_dir``), and ``--resume`` finds them as it finds Ray Train's.
  Ray Train's own API cannot be used inside a Tune trial (Ray 2.60 refuses it there).
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import ray.train
import torch

from pipelines.errors import GeolipError
from pipelines.run_storage import TRAIN_STATE, checkpoints
from pipelines.runtime import one_line
from pipelines.storage import Root, is_uri, parse_root

KEEP = 2
"""Checkpoints kept per run (Ray Train's ``CheckpointConfig(num_to_keep=2)`` in ``fit``)."""


class RayTrainSession:
    """One rank of a Ray Train worker group (``ray.train`` is imported in the worker only)."""

    def __init__(self) -> None:
        import ray.train.torch

        self._train = ray.train
        self._context = ray.train.get_context()
        self.rank = self._context.get_world_rank()
        self.world = self._context.get_world_size()
        self.local_world = self._context.get_local_world_size()
        self.device = ray.train.torch.get_device()

    def get_local_rank(self) -> int:  # what ``system_metrics.node_monitor`` asks
        return self._context.get_local_rank()

    def get_node_rank(self) -> int:
        return self._context.get_node_rank()

    def checkpoint(self):
        """The checkpoint Ray Train restarts this group from (None at a fresh start)."""
        return self._train.get_checkpoint()

    def batches(self, name: str):
        """This rank's share of dataset ``name`` as pyarrow batches."""
        shard = self._train.get_dataset_shard(name)
        return shard.iter_batches(batch_size=256, batch_format="pyarrow")

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP across the group's ranks (gloo on CPU, NCCL on GPU)."""
        return self._train.torch.prepare_model(model) if self.world > 1 else model

    def report(self, metrics: dict, checkpoint: Path | None) -> None:
        """Ray Train's barrier: every rank reports, rank 0 with its checkpoint directory."""
        ckpt = self._train.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None
        self._train.report(metrics, checkpoint=ckpt)


@dataclass
class InProcessSession:
    """The run's only worker, in this process; ``files`` are its datasets' Parquet files,
    ``results`` its directory under ``ray_results``; ``tune``: a Tune trial's run, whose
    reports (with the checkpoint's path, as ``TuneReportCallback`` sends them) reach Tune."""

    files: dict[str, list[str]]
    results: Root
    use_gpu: bool = False
    tune: bool = False
    resume: bool = False
    """Restart from the newest complete checkpoint under ``results`` (a resumed or retried run)."""
    rank: int = 0
    world: int = 1
    local_world: int = 1
    last: Root | None = field(default=None, init=False)
    """The newest checkpoint this session wrote (the run's result)."""

    @property
    def device(self) -> torch.device:
        # Ray gives a trial holding a GPU that GPU alone (CUDA_VISIBLE_DEVICES): it is cuda:0.
        return torch.device("cuda" if self.use_gpu and torch.cuda.is_available() else "cpu")

    def get_local_rank(self) -> int:
        return 0

    def get_node_rank(self) -> int:
        return 0

    def checkpoint(self):
        """With ``resume``, the newest complete checkpoint of the run (None: a fresh start)."""
        written = checkpoints(self.results, complete=True) if self.resume else []
        return checkpoint_at(written[-1].uri) if written else None

    def batches(self, name: str):
        for path in self.files[name]:
            yield from pq.read_table(path).to_batches(max_chunksize=256)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def report(self, metrics: dict, checkpoint: Path | None) -> None:
        """Write the checkpoint beside the run's others, drop the oldest past ``KEEP``, and
        send the report to Tune."""
        if checkpoint is not None:
            self.last = persist_checkpoint(checkpoint, self.results)
            for old in checkpoints(self.results)[:-KEEP]:
                remove_checkpoint(old)
        if self.tune:
            import ray.tune

            path = {"checkpoint_path": self.last.uri} if checkpoint and self.last else {}
            ray.tune.report({**metrics, **path})


def persist_checkpoint(local: Path, results: Root) -> Root:
    """Copy the checkpoint directory ``local`` to ``results/checkpoint_<time>`` (the name Ray
    Train gives its own: names sort by time). Locally the directory appears by one rename (a
    failed copy is removed); on the store ``TRAIN_STATE`` is uploaded last, so a crash mid-copy
    leaves nothing that counts as complete (``checkpoints(..., complete=True)``)."""
    name = f"checkpoint_{datetime.now():%Y-%m-%d_%H-%M-%S.%f}"
    target = results.child(name)
    if not results.remote:
        tmp = Path(results.path) / f".{name}.tmp"
        try:
            shutil.copytree(local, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        tmp.rename(target.path)
        return target
    import pyarrow.fs as pafs

    names = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    for rel in sorted(names, key=lambda n: n == TRAIN_STATE):
        pafs.copy_files(str(local / rel), target.child(rel).path, destination_filesystem=results.fs)
    return target


def remove_checkpoint(ckpt: Root) -> None:
    """Delete one checkpoint, its ``TRAIN_STATE`` first (what marks it complete)."""
    if not ckpt.remote:
        with contextlib.suppress(FileNotFoundError):
            (Path(ckpt.path) / TRAIN_STATE).unlink()
        shutil.rmtree(ckpt.path, ignore_errors=True)
        return
    from pipelines.storage import list_files, remove_files

    names = list_files(ckpt)
    remove_files(ckpt, sorted(names, key=lambda n: n != TRAIN_STATE))


def fit_in_process(loop, config: dict, name: str, ctx, files=None, tune: bool = False):
    """Run ``loop(config, session)`` as run ``name``'s one worker in this process (``ctx``: its
    ``RunContext``); returns the final checkpoint. A failure raises a ``GeolipError`` naming
    the run, as ``runtime.fit`` does for a Ray Train run."""
    session = InProcessSession(files or {}, ctx.results(name), bool(ctx.use_gpu), tune, ctx.resume)
    try:
        loop(config, session)
    except Exception as exc:
        raise GeolipError(f"training run {name} failed: {one_line(exc)}") from exc
    if session.last is None:
        raise GeolipError(f"training run {name} ended without a checkpoint")
    return checkpoint_at(session.last.uri)


def checkpoint_at(location: str) -> ray.train.Checkpoint:
    """A checkpoint of a run in Ray's storage: a local directory or a URI on the store."""
    if not is_uri(location):
        return ray.train.Checkpoint.from_directory(location)
    root = parse_root(location, "resume")
    return ray.train.Checkpoint(path=root.path, filesystem=root.fs)
