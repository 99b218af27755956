"""What one AlephLM training run is, checked and prepared before any worker starts.

A ``TrainJob`` carries the run's config as the typed object the edge built (``geolip train aleph``
from ``--scale``, ``--head`` and ``--set``; a sweep's program from its arm), the corpus and bank,
an optional warm start, and the ``RunContext`` every job shares. ``prepare_job`` turns it into a
``PreparedJob``: the bank file, a warm start (``--init-from`` with a graft) written as an ``init``
checkpoint, the fixed held-out windows, the run's unique name and its absolute paths. Every
mistake a user can make (a bank the head cannot use, a donor whose shapes cannot be grafted, a
corpus without a validation split, reusing a run's name without ``--resume``) is raised here, as
a ``GeolipError`` or ``ValueError``, before Ray is involved; ``check_job`` raises all it can
before anything is written (no shards, no tracking store, no run directory).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from atlas.corpus import encode_text, iter_split
from geolip.aleph.bank import TrigramBank, save_bank
from geolip.aleph.checkpoint import load_checkpoint, save_checkpoint
from geolip.aleph.config import AlephRunConfig
from geolip.aleph.data import fixed_eval_batches
from geolip.aleph.experiments.graft import (
    GraftError,
    graft_depth,
    graft_head_retrofit,
    graft_mixture,
    swap_bank,
)
from geolip.aleph.model import AlephLM
from geolip.config import config_diff, config_hash
from pipelines.aleph.banks import bank_file, resolve_bank
from pipelines.aleph.continuation import GRAFT as CONTINUE
from pipelines.aleph.continuation import Continuation, continuation_of
from pipelines.atlas.corpus_atlas import check_bank_source
from pipelines.byte_shards import ByteShards, build_byte_shards, built_byte_shards, read_side
from pipelines.errors import GeolipError
from pipelines.run_storage import has_checkpoint, subdirs
from pipelines.runtime import RunContext, check_run_name
from pipelines.storage import is_uri, readable
from pipelines.system_metrics import settings as system_metrics_settings

GRAFTS = ("none", "depth", "mixture", "retrofit", "continue")
DATA_MODES = ("shard", "replicate")


@dataclass(frozen=True)
class TrainJob:
    """One AlephLM training run: its config, data, warm start and context."""

    run: AlephRunConfig
    corpus: str
    """Corpus URI (``builtin:``, ``file:``, ``hf:``) whose byte shards are trained on."""
    ctx: RunContext
    bank: str | None = None
    """Trigram bank file (default: the donor's, else cut as ``bank_source`` says)."""
    bank_source: str = "atlas"
    """Without ``bank``: ``atlas`` (cut from the corpus' stratified atlas, built once under the
    data directory) or ``frequency`` (the train side's top-N aligned trigrams)."""
    init_from: str | None = None
    """Donor checkpoint directory to warm-start from."""
    register: str | None = None
    """Register the final logged model under this MLflow registered-model name."""
    graft: str = "none"
    """How the donor maps onto ``run.model``: none | depth | mixture | retrofit."""
    checkpoint_every: int = 0
    """Steps between checkpoints (0: a fifth of the run, rounded up)."""
    data_mode: str = "shard"
    """shard: every rank draws from its own chunks | replicate: every rank sees all data."""
    eval_bytes: int = 1_000_000
    run_name: str | None = None
    """Default: ``aleph-<preset>-<head>-<hash>-s<seed>`` from everything that changes results."""


@dataclass(frozen=True)
class PreparedJob:
    """A checked job with everything its workers read written under ``run_dir``."""

    job: TrainJob
    run: AlephRunConfig
    """The config trained (the job's, or the graft's when a donor changes it)."""
    name: str
    run_dir: Path
    shards: ByteShards
    bank_path: Path | None
    init_dir: Path | None
    eval_windows: Path
    heldout: Path
    checkpoint_every: int
    tags: dict = field(default_factory=dict)
    continuation: Continuation | None = None
    """``--graft continue``: the donor's optimizer state and schedule the run picks up."""

    @property
    def ctx(self) -> RunContext:
        return self.job.ctx

    @property
    def store_dir(self) -> str:
        """The run's directory relative to the data directory (``runs/aleph/NAME``)."""
        return f"runs/aleph/{self.name}"

    def worker_config(self, run_id: str) -> dict:
        """The ``train_loop_config`` every worker receives (absolute paths only)."""
        return {
            "run": self.run,
            "name": self.name,
            "bank": str(self.bank_path) if self.bank_path else None,
            "init_dir": str(self.init_dir) if self.init_dir else None,
            "eval_windows": str(self.eval_windows),
            "heldout": str(self.heldout),
            "checkpoint_every": self.checkpoint_every,
            "data_mode": self.job.data_mode,
            "run_id": run_id,
            "tracking_uri": self.ctx.tracking_uri,
            "threads": self.ctx.threads,
            "fault": dict(self.ctx.fault) if self.ctx.fault else None,
            "system_metrics": system_metrics_settings(self.ctx.system_metrics),
            **_continue_config(self.continuation),
        }


def prepare_job(job: TrainJob, progress=print) -> PreparedJob:
    """Check ``job`` and write what its workers need; raises before anything is trained.

    The files and the corpus are checked as they are read (``check_job``, which the driver runs
    first, checks them before anything is written)."""
    check_flags(job)
    check_name(job)
    data = job.ctx.data_dir
    shards = build_byte_shards(job.corpus, data, progress=progress)
    if shards.n_bytes("validation") == 0:
        raise GeolipError(
            f"corpus {job.corpus!r} has no validation split (0 held-out bytes); use a larger "
            "corpus or one whose documents can be split"
        )
    cont = continuation_of(job.init_from, job.run) if job.graft == CONTINUE else None
    donor = cont.donor if cont is not None else init_donor(job) if job.init_from else None
    bank, origin = resolve_bank(job, donor, shards)
    target = cont.run if cont is not None else job.run
    model = graft_donor(donor, target, job.graft, bank) if donor is not None else None
    run = dataclasses.replace(target, model=model.cfg) if model is not None else target
    name = job.run_name or run_name(job, run, bank)
    run_dir = data / "runs" / "aleph" / name
    ctx = job.ctx
    resume = check_run_name(run_dir, ctx.results(name), ctx.resume, ctx.auto_resume)
    job = dataclasses.replace(job, ctx=job.ctx.replace(resume=resume))
    if origin:  # said once the run is known to go ahead (a refused one prints nothing)
        progress(f"bank: {origin}")
    run_dir.mkdir(parents=True, exist_ok=True)
    windows, heldout = _write_eval_data(shards, run, run_dir, job.eval_bytes)
    return PreparedJob(
        job=job,
        run=run,
        name=name,
        run_dir=run_dir,
        shards=shards,
        bank_path=save_bank(bank, run_dir / "bank.safetensors") if bank is not None else None,
        init_dir=_write_init(model, run, run_dir) if model is not None else None,
        eval_windows=windows,
        heldout=heldout,
        checkpoint_every=job.checkpoint_every or default_checkpoint_every(run.train.steps),
        tags=_tags(job, run, bank),
        continuation=cont,
    )


def _continue_config(cont: Continuation | None) -> dict:
    """The workers' keys of a continuation: the donor's train state and schedule horizon."""
    if cont is None:
        return {}
    return {"continue_state": str(cont.state), "schedule_steps": cont.schedule_steps}


def default_checkpoint_every(steps: int) -> int:
    """A fifth of the run, rounded up: at most five checkpoints (each is a held-out evaluation
    and a Ray Train report, ~1.5 s on 2 CPUs); rounded down, an 8-step run would checkpoint at
    every step and spend most of its time there."""
    return max(-(-steps // 5), 1)


def check_job(job: TrainJob) -> None:
    """Every check that writes nothing, run before the tracking store is touched or a shard is
    written (``train_aleph`` calls it first): the flags, the run name, the ``--bank`` and
    ``--init-from`` files, and a look at the corpus."""
    check_flags(job)
    check_name(job)
    check_files(job)
    check_corpus(job)


def check_flags(job: TrainJob) -> None:
    """The checks that need no file and no data (cheap: run them first)."""
    job.ctx.check_workers()
    if job.data_mode not in DATA_MODES:
        raise GeolipError(f"data mode must be one of {list(DATA_MODES)}, got {job.data_mode!r}")
    check_bank_source(job.bank_source)
    if job.graft not in GRAFTS:
        raise GeolipError(f"--graft must be one of {list(GRAFTS)}, got {job.graft!r}")
    if job.graft != "none" and not job.init_from:
        raise GeolipError(f"--graft {job.graft} needs --init-from CHECKPOINT (the donor)")
    if job.eval_bytes < 1000:
        raise GeolipError(f"--eval-bytes must be >= 1000, got {job.eval_bytes}")
    window = window_bytes(job.run)
    if job.eval_bytes < window:
        raise GeolipError(
            f"--eval-bytes {job.eval_bytes} is fewer than one evaluation window ({window} bytes "
            f"for seq_trigrams={job.run.model.seq_trigrams})"
        )
    batch, workers = job.run.train.batch_size, job.ctx.workers
    if batch % workers:
        raise GeolipError(
            f"train.batch_size {batch} (the global batch) must be divisible by --workers {workers}"
        )


def window_bytes(run: AlephRunConfig) -> int:
    """Bytes of one training or evaluation window: ``seq_trigrams + 1`` trigrams."""
    return 3 * (run.model.seq_trigrams + 1)


def check_name(job: TrainJob) -> None:
    """Refuse a ``--name`` that is not one path component, a ``--name`` in use without
    ``--resume``, and a ``--resume`` with nothing to resume; writes nothing.

    A default name is known only once the bank is cut (``prepare_job`` checks it then, with
    ``check_run_name``): here ``--resume`` only needs some AlephLM run with a checkpoint.
    """
    name, ctx = job.run_name, job.ctx
    results = ctx.root().child("ray_results")
    if name is None:
        runs = subdirs(results, "aleph-")
        if ctx.resume and not any(has_checkpoint(results.child(n)) for n in runs):
            raise GeolipError(
                f"--resume: no AlephLM run under {results.uri} has a checkpoint to resume from; "
                "start the run without --resume"
            )
        return
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise GeolipError(f"--name {name!r}: expected a run name (one path component, no '/')")
    started = has_checkpoint(results.child(name))
    if ctx.resume and not started:
        raise GeolipError(
            f"--resume: run {name} has no checkpoint to resume from ({results.child(name).uri}); "
            "start it without --resume"
        )
    if started and not (ctx.resume or ctx.auto_resume):
        raise GeolipError(
            f"--name {name}: the run already exists ({results.child(name).uri}); pass --resume to "
            "continue it, or choose another --name"
        )


def check_files(job: TrainJob) -> None:
    """The ``--bank`` file loads, and the ``--init-from`` donor loads and grafts onto the run's
    model (``prepare_job`` loads them again, once the corpus' bank is known)."""
    if job.bank and job.run.model.uses_bank:
        bank_file(job.bank)
    if job.init_from and job.graft == CONTINUE:
        continuation_of(job.init_from, job.run)
    elif job.init_from:
        graft_donor(init_donor(job), job.run, job.graft, None)


def check_corpus(job: TrainJob) -> None:
    """Each side of the corpus holds at least one window, read before any shard is written (a
    corpus too short used to fail after its shards and the tracking store were made). Shards
    already built say their sides' sizes: the corpus is not read again (a sweep's trials, whose
    driver built them; reading ``builtin:python-docs`` parses the standard library, ~1.5 s)."""
    need = window_bytes(job.run)
    built = built_byte_shards(job.corpus, job.ctx.data_dir)
    for side in ("validation", "train"):
        got = built.n_bytes(side) if built is not None else _side_bytes(job.corpus, side, need)
        if got < need:
            raise GeolipError(
                f"--corpus {job.corpus}: its {side} split has {got} bytes, fewer than one "
                f"window ({need} bytes for seq_trigrams={job.run.model.seq_trigrams}); use a "
                "larger corpus"
            )


def _side_bytes(corpus: str, side: str, enough: int) -> int:
    """The bytes of ``side`` of ``corpus``, counted until ``enough``."""
    got = 0
    for doc in iter_split(corpus, side):
        got += len(encode_text(doc.text))
        if got >= enough:
            break
    return got


def run_name(job: TrainJob, run: AlephRunConfig, bank: TrigramBank | None) -> str:
    """``aleph-<preset>-<head>[-softmax]-<hash>-s<seed>``: one name per config, data, donor and
    seed (``-softmax``: the softmax twin)."""
    identity = {
        "run_cfg": run.to_dict(),
        "corpus": job.corpus,
        "bank": bank.fingerprint() if bank is not None else None,
        "donor": donor_key(job.init_from),
        "graft": job.graft,
        "workers": job.ctx.workers,
        "data_mode": job.data_mode,
    }
    twin = "-softmax" if run.model.attn == "softmax" else ""
    return f"aleph-{run.preset}-{run.head}{twin}-{config_hash(identity, 8)}-s{run.train.seed}"


def load_donor(path: str, flag: str = "--init-from") -> AlephLM:
    """A warm-start donor checkpoint (a sweep's ``--donor``, a run's ``--init-from``): a local
    directory, or a final checkpoint published on object storage (``s3://.../final``)."""
    model, _, _ = load_checkpoint(Path(readable(path, flag)).expanduser().resolve())
    return model


def donor_key(path: str | None) -> str | None:
    """A donor as it names a run: its URI, or its absolute path."""
    if path is None or is_uri(path):
        return path
    return str(Path(path).resolve())


def init_donor(job: TrainJob) -> AlephLM:
    """The donor of ``--init-from``; a missing or corrupt checkpoint names the flag."""
    try:
        return load_donor(job.init_from)
    except ValueError as exc:  # CheckpointError
        raise GeolipError(f"--init-from: {exc}") from exc


def graft_donor(donor: AlephLM, run: AlephRunConfig, op: str, bank) -> AlephLM:
    """The warm-start model: the donor grafted to ``run.model`` (GraftError when it can't)."""
    target = run.model
    if op == "depth":
        model = graft_depth(donor, target.n_layers, cfg=target)
    elif op == "mixture":
        model = graft_mixture(donor, target.head.n_pointers, seed=run.train.seed, cfg=target)
    elif op == "retrofit":
        model = graft_head_retrofit(donor, seed=run.train.seed, cfg=target)
    else:
        if donor.cfg != target:
            raise GraftError(
                "--init-from without --graft needs the donor's exact model config; it differs "
                f"in {config_diff(donor.cfg, target)} (donor, this run): choose --graft "
                "depth|mixture|retrofit"
            )
        model = donor
    if bank is not None and model.bank is not bank:
        model = swap_bank(model, bank)
    return model


def _write_init(model: AlephLM, run: AlephRunConfig, run_dir: Path) -> Path:
    return save_checkpoint(run_dir / "init", model, run, overwrite=True)


def _write_eval_data(
    shards: ByteShards, run: AlephRunConfig, run_dir: Path, eval_bytes: int
) -> tuple[Path, Path]:
    """Fixed held-out windows (safetensors) and the first ``eval_bytes`` held-out bytes (.npy)."""
    held = read_side(shards, "validation", limit=eval_bytes)
    T = run.model.seq_trigrams
    if len(held) // 3 < T + 1:
        raise GeolipError(
            f"the validation split has {len(held)} bytes, fewer than one evaluation window "
            f"({3 * (T + 1)} bytes for seq_trigrams={T})"
        )
    windows = torch.cat(fixed_eval_batches(held, run.train.eval_windows, T, batch=64))
    save_file({"windows": windows.contiguous()}, str(run_dir / "eval_windows.safetensors"))
    np.save(run_dir / "heldout.npy", held, allow_pickle=False)
    (run_dir / "heldout.json").write_text(
        json.dumps({"bytes": len(held), "source": shards.manifest["splits"]["validation"]}) + "\n"
    )
    return run_dir / "eval_windows.safetensors", run_dir / "heldout.npy"


def _tags(job: TrainJob, run: AlephRunConfig, bank: TrigramBank | None) -> dict:
    tags = {"head": run.head, "preset": run.preset, "arm": run.model.codebook.preservation}
    tags["attn"] = run.model.attn  # aleph, or the softmax twin
    tags.update(seed=str(run.train.seed), corpus=job.corpus)
    tags["bank"] = f"{bank.fingerprint()} (N={bank.size})" if bank is not None else "none"
    # The lineage corpus -> atlas -> bank -> run: where the bank was cut (an atlas, frequency).
    tags["bank_source"] = str(bank.provenance.get("source", "file")) if bank is not None else ""
    tags.update(donor=job.init_from or "", graft=job.graft if job.init_from else "")
    return {**tags, **job.ctx.tags}  # the caller's (a sweep's arm, seed, graft...) win
