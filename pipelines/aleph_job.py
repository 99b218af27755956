"""What one ``geolip train aleph`` run is, checked and prepared before any worker starts.

``prepare_job`` turns the command line into a ``PreparedJob``: the run config (preset, head,
``--set``), the bank file, a warm start (``--init-from`` with a graft) written as an ``init``
checkpoint, the fixed held-out windows, the run's unique name and its absolute paths. Every
mistake a user can make (unknown preset/head/key, a bank the head cannot use, a donor whose
shapes cannot be grafted, a corpus without a validation split, reusing a run's name without
``--resume``) is raised here, as a ``GeolipError`` or ``ValueError``, before Ray is involved.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.errors import GeolipError

GRAFTS = ("none", "depth", "mixture", "retrofit")


@dataclass(frozen=True)
class TrainJob:
    """The command line of ``geolip train aleph`` (paths may still be relative)."""

    corpus: str
    preset: str = "tiny"
    head: str = "pmix"
    overrides: tuple[str, ...] = ()
    bank: str | None = None
    workers: int = 1
    use_gpu: bool | None = None
    checkpoint_every: int = 0
    max_failures: int = 2
    data_mode: str = "shard"
    init_from: str | None = None
    graft: str = "none"
    resume: bool = False
    auto_resume: bool = False
    """Resume if the run has a checkpoint, else start it (``geolip demo``'s re-runs)."""
    experiment: str = "geolip-aleph"
    tracking_uri: str | None = None
    data_dir: str | None = None
    eval_bytes: int = 1_000_000
    run_name: str | None = None
    threads: int | None = None
    tags: dict = field(default_factory=dict)
    fault: dict | None = None


@dataclass(frozen=True)
class PreparedJob:
    job: TrainJob
    run_cfg: object
    name: str
    data: Path
    run_dir: Path
    storage: Path
    shards: object
    bank_path: Path | None
    init_dir: Path | None
    eval_windows: Path
    heldout: Path
    checkpoint_every: int
    tags: dict

    def worker_config(self, run_id: str, tracking_uri: str, threads: int) -> dict:
        """The JSON-able ``train_loop_config`` every worker receives (absolute paths only)."""
        fault = dict(self.job.fault) if self.job.fault else None
        return {
            "run_cfg": self.run_cfg.to_dict(),
            "name": self.name,
            "bank": str(self.bank_path) if self.bank_path else None,
            "init_dir": str(self.init_dir) if self.init_dir else None,
            "eval_windows": str(self.eval_windows),
            "heldout": str(self.heldout),
            "checkpoint_every": self.checkpoint_every,
            "data_mode": self.job.data_mode,
            "run_id": run_id,
            "tracking_uri": tracking_uri,
            "threads_per_worker": threads,
            "fault": fault,
        }


def build_run_config(preset: str, head: str, overrides) -> object:
    from geolip.config import apply_overrides
    from geolip.presets import get_preset, with_head

    return apply_overrides(with_head(get_preset(preset), head), list(overrides))


def prepare_job(job: TrainJob, progress=print) -> PreparedJob:
    """Check ``job`` and write what its workers need; raises before anything is trained."""
    from pipelines.byte_shards import build_byte_shards
    from pipelines.paths import data_dir

    run_cfg = check_job(job)
    data = data_dir(job.data_dir)
    shards = build_byte_shards(job.corpus, data, progress=progress)
    if shards.n_bytes("validation") == 0:
        raise GeolipError(
            f"corpus {job.corpus!r} has no validation split (0 held-out bytes); use a larger "
            "corpus or one whose documents can be split"
        )
    donor = _load_donor(job.init_from) if job.init_from else None
    bank = _resolve_bank(job, run_cfg, donor, shards)
    model = _graft(donor, run_cfg, job.graft, bank) if donor is not None else None
    if model is not None:
        run_cfg = dataclasses.replace(run_cfg, model=model.cfg)
    name = job.run_name or run_name(job, run_cfg, bank)
    run_dir = data / "runs" / "aleph" / name
    storage = data / "ray_results"
    resume = check_run_name(run_dir, storage / name, job.resume, job.auto_resume)
    job = dataclasses.replace(job, resume=resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    bank_path = _write_bank(bank, run_dir)
    init_dir = _write_init(model, run_cfg, run_dir) if model is not None else None
    windows, heldout = _write_eval_data(shards, run_cfg, run_dir, job.eval_bytes)
    every = job.checkpoint_every or max(run_cfg.train.steps // 5, 1)
    tags = {"head": job.head, "preset": job.preset, "arm": run_cfg.model.preservation}
    tags.update(seed=str(run_cfg.train.seed), corpus=job.corpus, bank=_bank_tag(bank))
    tags.update(donor=job.init_from or "", graft=job.graft if job.init_from else "")
    tags.update(job.tags)  # the caller's (a sweep's arm, seed, graft...) win
    return PreparedJob(
        job, run_cfg, name, data, run_dir, storage, shards, bank_path, init_dir, windows,
        heldout, every, tags,
    )  # fmt: skip


def check_job(job: TrainJob):
    """The run config of ``job`` after the checks that need no data (cheap: run them first)."""
    _check_flags(job)
    run_cfg = build_run_config(job.preset, job.head, job.overrides)
    _check_batch(run_cfg, job.workers)
    return run_cfg


def _check_flags(job: TrainJob) -> None:
    if job.workers < 1:
        raise GeolipError(f"--workers must be >= 1, got {job.workers}")
    if job.data_mode not in ("shard", "replicate"):
        raise GeolipError(f"data mode must be shard or replicate, got {job.data_mode!r}")
    if job.graft not in GRAFTS:
        raise GeolipError(f"--graft must be one of {list(GRAFTS)}, got {job.graft!r}")
    if job.graft != "none" and not job.init_from:
        raise GeolipError(f"--graft {job.graft} needs --init-from CHECKPOINT (the donor)")
    if job.eval_bytes < 1000:
        raise GeolipError(f"--eval-bytes must be >= 1000, got {job.eval_bytes}")


def _check_batch(run_cfg, workers: int) -> None:
    batch = run_cfg.train.batch_size
    if batch % workers:
        raise GeolipError(
            f"train.batch_size {batch} (the global batch) must be divisible by --workers {workers}"
        )


def run_name(job: TrainJob, run_cfg, bank) -> str:
    """``aleph-<preset>-<head>-<hash>-s<seed>``: one name per config, data, donor and seed."""
    from geolip.config import config_hash

    identity = {
        "run_cfg": run_cfg.to_dict(),
        "corpus": job.corpus,
        "bank": bank.fingerprint() if bank is not None else None,
        "donor": job.init_from and str(Path(job.init_from).resolve()),
        "graft": job.graft,
        "workers": job.workers,
        "data_mode": job.data_mode,
    }
    return f"aleph-{job.preset}-{job.head}-{config_hash(identity, 8)}-s{run_cfg.train.seed}"


def has_checkpoint(train_dir: Path) -> bool:
    """Whether Ray Train's directory of a run holds a checkpoint to resume from."""
    return train_dir.exists() and any(train_dir.glob("checkpoint_*"))


def check_run_name(run_dir: Path, train_dir: Path, resume: bool, auto: bool = False) -> bool:
    """Refuse a name in use without ``--resume`` and ``--resume`` of a run with no checkpoint
    (``train_dir``: Ray Train's directory of the run); clear a run that never checkpointed.

    With ``auto`` (``geolip demo``'s re-runs) a run with a checkpoint resumes and any other
    starts. Returns whether the run resumes.
    """
    started = has_checkpoint(train_dir)
    resume = resume or (auto and started)
    if resume and not started:
        raise GeolipError(
            f"--resume: run {run_dir.name} has no checkpoint to resume from ({train_dir}); "
            "start it without --resume"
        )
    if started and not resume:
        raise GeolipError(
            f"run {run_dir.name} already exists ({train_dir}); pass --resume to continue it, "
            "or change the config or train.seed for a new run"
        )
    if not started and run_dir.exists():
        shutil.rmtree(run_dir)  # a run that never reached a checkpoint: start it afresh
    return resume


def _load_donor(path: str):
    from geolip.checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(Path(path).expanduser().resolve())
    return model


def _resolve_bank(job: TrainJob, run_cfg, donor, shards):
    """The bank the run uses: ``--bank FILE``, else the donor's, else cut from the train shards."""
    from geolip.models.aleph.bank import load_bank

    if not run_cfg.model.uses_bank:
        return None
    if job.bank:
        return load_bank(Path(job.bank).expanduser().resolve())
    if donor is not None and donor.bank is not None:
        return donor.bank
    return train_bank(shards, job.corpus, run_cfg.train.bank_size)


def train_bank(shards, corpus: str, size: int):
    """The top-``size`` trigrams of the corpus' train side (a bank cut from the byte shards)."""
    from geolip.models.aleph.bank import bank_from_bytes
    from pipelines.byte_shards import read_side

    train = read_side(shards, "train").tobytes()
    return bank_from_bytes(train, size, {"corpus": corpus, "split": "train", "cut": "top-N"})


def _graft(donor, run_cfg, op: str, bank):
    """The warm-start model: the donor grafted to ``run_cfg.model`` (GraftError when it can't)."""
    from geolip.experiments.graft import (
        GraftError,
        graft_depth,
        graft_head_retrofit,
        graft_mixture,
        swap_bank,
    )

    target = run_cfg.model
    if op == "depth":
        model = graft_depth(donor, target.n_layers, cfg=target)
    elif op == "mixture":
        model = graft_mixture(donor, target.n_pointers, seed=run_cfg.train.seed, cfg=target)
    elif op == "retrofit":
        model = graft_head_retrofit(donor, seed=run_cfg.train.seed, cfg=target)
    else:
        if donor.cfg != target:
            diff = {
                f.name: (getattr(donor.cfg, f.name), getattr(target, f.name))
                for f in dataclasses.fields(target)
                if getattr(donor.cfg, f.name) != getattr(target, f.name)
            }
            raise GraftError(
                f"--init-from without --graft needs the donor's exact model config; it differs "
                f"in {diff} (donor, this run): choose --graft depth|mixture|retrofit"
            )
        model = donor
    if bank is not None and model.bank is not bank:
        model = swap_bank(model, bank)
    return model


def _write_bank(bank, run_dir: Path) -> Path | None:
    from geolip.models.aleph.bank import save_bank

    return save_bank(bank, run_dir / "bank.safetensors") if bank is not None else None


def _write_init(model, run_cfg, run_dir: Path) -> Path:
    from geolip.checkpoint import save_checkpoint

    return save_checkpoint(run_dir / "init", model, run_cfg, overwrite=True)


def _write_eval_data(shards, run_cfg, run_dir: Path, eval_bytes: int) -> tuple[Path, Path]:
    """Fixed held-out windows (safetensors) and the first ``eval_bytes`` held-out bytes (.npy)."""
    import torch
    from safetensors.torch import save_file

    from geolip.data import fixed_eval_batches
    from pipelines.byte_shards import read_side

    held = read_side(shards, "validation", limit=eval_bytes)
    T = run_cfg.model.seq_trigrams
    if len(held) // 3 < T + 1:
        raise GeolipError(
            f"the validation split has {len(held)} bytes, fewer than one evaluation window "
            f"({3 * (T + 1)} bytes for seq_trigrams={T})"
        )
    windows = torch.cat(fixed_eval_batches(held, run_cfg.train.eval_windows, T, batch=64))
    save_file({"windows": windows.contiguous()}, str(run_dir / "eval_windows.safetensors"))
    np.save(run_dir / "heldout.npy", held, allow_pickle=False)
    (run_dir / "heldout.json").write_text(
        json.dumps({"bytes": len(held), "source": shards.manifest["splits"]["validation"]}) + "\n"
    )
    return run_dir / "eval_windows.safetensors", run_dir / "heldout.npy"


def _bank_tag(bank) -> str:
    return f"{bank.fingerprint()} (N={bank.size})" if bank is not None else "none"
