"""Planning ``geolip sweep PROGRAM``: every check that needs no cluster, then the plan.

Nothing here imports Ray or torch at module level (MLflow is read only for ``--from`` and
``--donor`` lookups, torch loaded only for a graft's donor and the ``svae`` program's data
spec), so bad input is refused in about a
second and a dry run prints its plan without starting anything.

Order: the options alone (scale, seeds, workers, name, corpus, the programs that take ``--donor``
and ``--from``), the donor's path, the lookups in MLflow (read-only: a missing store is not
created to be searched), the plan (program, arms, batch per worker), the sweep's state directory
(``--resume``), the donor's grafts; last, for a real run, that the MLflow server answers (a
SQLite store is created by ``tune.sweep.launch`` once the cluster has admitted the sweep).
Nothing is written here (but a donor given as a run id, downloaded for the graft check).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from geolip.config import Changes, config_diff, config_hash
from geolip.svae.config import SVAERunConfig
from pipelines.atlas.corpus_atlas import check_bank_source
from pipelines.errors import GeolipError
from pipelines.paths import check_dir_path
from pipelines.run_storage import exists
from pipelines.runtime import RunContext
from pipelines.storage import Root
from pipelines.tracking import check_tracking, sqlite_path
from tune.banks import SWAP_QUOTAS, default_swap_corpus
from tune.programs import PROGRAMS, Options, plan
from tune.sources import (
    check_corpus,
    check_donor,
    check_grafts,
    donor_download_dir,
    fetch_donor,
    last_battery,
    source_sweep,
)
from tune.spec import Phase, SweepError, SweepScale, sweep_scale

TRIAL_ENGINES = ("auto", "in-process", "ray-train")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
"""A sweep name: one directory under ``DATA/sweeps``."""


@dataclass(frozen=True)
class SweepJob:
    """One ``geolip sweep PROGRAM``: the program's options and the sweep's ``RunContext``
    (its ``workers`` are each trial's Ray Train workers; ``max_failures`` each trial's)."""

    program: str
    ctx: RunContext
    scale: str = "tiny"
    seeds: int | None = None
    """Seeds per arm (None: the scale's)."""
    arms: tuple[str, ...] = ()
    sets: Changes = ()
    """The user's ``--set`` changes (``geolip.config.parse_overrides``), applied to every trial."""
    corpus: str = "builtin:python-docs"
    bank_source: str = "atlas"
    """Where trials without a bank file get theirs (``pipelines.atlas.corpus_atlas``)."""
    swap_corpus: str | None = None
    """The survey's ``corpus`` swap bank is cut from this corpus' atlas (None: the other
    builtin one, ``tune.banks.default_swap_corpus``)."""
    swap_quotas: str = SWAP_QUOTAS
    """The stratum quotas of the survey's ``mix`` swap bank (``atlas.bank.parse_quotas``)."""
    svae_data: str = "images:structured"
    """The ``svae`` program's data (``geolip train svae --data``): the structured patches whose
    patch-shuffled copy is each run's control."""
    donor: str | None = None
    source: str | None = None
    driver_cpus: float = 0.5
    name: str | None = None
    dry_run: bool = False
    faults: dict = field(default_factory=dict)
    """Test hook: ``{trial key: {"step": s, "marker": path}}``, that trial's worker dies once."""
    max_failures: int | None = None
    """Failures each trial survives: Ray Train restarts and Tune retries (None: 1 where Ray
    runs on more than one node, else 0)."""
    trial_engine: str = "auto"
    """How a training trial runs (``TRIAL_ENGINES``): ``in-process`` in its Tune trial's own
    process (no Train controller or worker group to start; Tune retries a failed trial from its
    last checkpoint), ``ray-train`` on its own Ray Train worker group; ``auto`` [proposed]:
    in-process where ``--workers`` is 1."""

    @property
    def in_process(self) -> bool:
        """Whether training trials train in their Tune trial's process."""
        if self.trial_engine == "auto":
            return self.ctx.workers == 1
        return self.trial_engine == "in-process"


@dataclass(frozen=True)
class PlannedSweep:
    """A checked sweep: its phases, name, state directory and resolved dependencies."""

    job: SweepJob
    scale: SweepScale
    seeds: int
    phases: list[Phase]
    name: str
    state: Path
    source: dict | None
    donor: Path | None
    svae: SVAERunConfig | None = None
    """The ``svae`` program's base config (``svae_base``), read once here."""


def plan_sweep(job: SweepJob, progress=print) -> PlannedSweep:
    """Every check that needs no cluster, and the plan (see the module's docstring)."""
    sc, seeds = check_options(job)
    uri, data = job.ctx.tracking_uri, job.ctx.data_dir
    donor, donor_run = check_donor(job.donor, uri, data) if job.donor else (None, None)
    if donor_run is not None:
        donor = donor_download_dir(data, donor_run)
    source = source_sweep(uri, job.source) if job.source else None
    if source is None and job.program == "contrast":
        source = last_battery(uri, job.ctx.experiment, job.corpus)
        if source is not None:
            progress(f"contrast: the checkpoints of the last seed battery, {source['name']}")
    svae = svae_base(job)
    opts = Options(sc, seeds, tuple(job.arms), job.sets, donor and str(donor), source, svae)
    phases = plan(job.program, opts)
    check_batches(phases, job.ctx.workers)
    name = job.name or sweep_name(job, seeds, source and source["name"])
    state = check_dir_path(data / "sweeps" / name, "the sweep's state directory")
    check_state(job.ctx.root().child(f"sweeps/{name}"), name, job.ctx.resume)
    if donor_run is not None:
        donor = fetch_donor(uri, donor_run, data)
    if donor is not None:
        check_grafts(phases, donor, job.donor)
    if not job.dry_run and sqlite_path(uri) is None:
        check_tracking(uri)  # a server is only asked; a SQLite store is made once admitted
    return PlannedSweep(job, sc, seeds, phases, name, state, source, donor, svae)


def check_options(job: SweepJob) -> tuple[SweepScale, int]:
    """The checks of the options alone; returns the sweep scale and the seeds per arm."""
    if job.program not in PROGRAMS:
        raise SweepError(f"unknown program {job.program!r}; programs: {', '.join(PROGRAMS)}")
    sc = sweep_scale(job.scale)
    default = sc.svae.seeds if job.program == "svae" else sc.seeds
    seeds = default if job.seeds is None else job.seeds
    if seeds < 1:
        raise SweepError(f"--seeds must be >= 1, got {seeds}")
    job.ctx.check_workers()
    if job.trial_engine not in TRIAL_ENGINES:
        raise SweepError(
            f"--trial-engine must be one of {list(TRIAL_ENGINES)}, got {job.trial_engine!r}"
        )
    if job.trial_engine == "in-process" and job.ctx.workers != 1:
        raise SweepError(
            f"--trial-engine in-process trains one worker per trial, got --workers "
            f"{job.ctx.workers}; use --trial-engine ray-train (or auto)"
        )
    if job.donor is not None and job.program != "graft":
        raise SweepError(f"--donor is for `geolip sweep graft`, not {job.program}")
    if job.source is not None and job.program != "contrast":
        raise SweepError(f"--from is for `geolip sweep contrast`, not {job.program}")
    if job.name is not None and not NAME.match(job.name):
        raise SweepError(
            f"--name {job.name!r}: expected a plain name (letters, digits, '.', '_' and '-', "
            "not starting with '.' or '-'): it is a directory under DATA/sweeps"
        )
    if not job.ctx.experiment.strip():
        raise SweepError("--experiment: expected an MLflow experiment name, got ''")
    check_bank_source(job.bank_source)
    check_corpus(job.corpus)
    if job.program == "survey":
        _check_swap(job)
    if job.program == "svae" and job.ctx.storage:
        raise SweepError(
            f"geolip sweep svae: --data-dir {job.ctx.storage} is on object storage; SVAE runs "
            "keep their data and checkpoints on a local data directory (a shared filesystem "
            "on a cluster)"
        )
    return sc, seeds


def svae_base(job: SweepJob):
    """The config ``--set`` changes of the ``svae`` program apply to: ``job.svae_data``'s
    (``pipelines.svae.data.run_config``) at the scale's budget; None for other programs."""
    if job.program != "svae":
        return None
    from pipelines.svae.data import run_config  # torch: only for this program

    try:
        run = run_config(job.svae_data)
    except GeolipError as exc:  # its messages name `train svae`'s flag
        raise SweepError(str(exc).replace("--data ", "--svae-data ", 1)) from None
    return sweep_scale(job.scale).svae.base(run)


def _check_swap(job: SweepJob) -> None:
    from atlas.bank import parse_quotas
    from atlas.query import AtlasError

    if job.swap_corpus is not None:
        check_corpus(job.swap_corpus, "--swap-corpus")
    try:
        parse_quotas(job.swap_quotas)
    except AtlasError as exc:
        raise SweepError(f"--swap-quotas {job.swap_quotas!r}: {exc}") from None


def check_batches(phases: list[Phase], workers: int) -> None:
    """Every train and svae trial's global batch must split evenly over ``--workers``."""
    for t in (t for p in phases for t in p.trials):
        run = t.run or t.svae
        if run is not None and run.train.batch_size % workers:
            raise SweepError(
                f"train.batch_size {run.train.batch_size} of trial {t.key} (the global batch) "
                f"must be divisible by --workers {workers}"
            )


def check_state(state: Root, name: str, resume: bool) -> None:
    """``--resume`` needs a started sweep; a started sweep needs ``--resume`` (``state``: the
    sweep's directory on the data directory, which may be on object storage)."""
    started = exists(state.child("sweep.json"))
    if resume and not started:
        raise SweepError(
            f"--resume: sweep {name} was never started ({state.uri}); run it without --resume"
        )
    if started and not resume:
        raise SweepError(f"sweep {name} already exists ({state.uri}); pass --resume to continue it")


def sweep_name(job: SweepJob, seeds: int, source: str | None = None) -> str:
    """``sweep-<program>-<scale>-<hash>``; the hash covers every option that changes results
    (``source``: the battery a contrast ablates, when found rather than given)."""
    identity = {
        "program": job.program,
        "scale": job.scale,
        "seeds": seeds,
        "arms": job.arms,
        "sets": job.sets,
        "corpus": job.corpus,
        "bank_source": job.bank_source,
        "donor": job.donor,
        "source": source or job.source,
        "workers": job.ctx.workers,
    }
    if job.program == "svae":
        identity["svae_data"] = job.svae_data
    if job.program == "survey":  # the swap banks are part of its results
        identity["swap"] = [job.swap_corpus or default_swap_corpus(job.corpus), job.swap_quotas]
    return f"sweep-{job.program}-{job.scale}-{config_hash(identity, 8)}"


def plan_text(sweep: PlannedSweep) -> str:
    """The plan as text: per phase, each trial's kind, head and how its config differs from
    the scale's base config (the ``svae`` program's: its data's at the scale's budget)."""
    base, lines = sweep.scale.base(), []
    svae = sweep.svae
    hidden = ("train.seed", "model.head.kind", "model.seed")
    for p in sweep.phases:
        lines.append(
            f"phase {p.name}: {len(p.trials)} trial(s)"
            + (f", ASHA over {sorted(p.search['space'])}" if p.search else "")
        )
        for t in p.trials:
            diff = {}
            if t.run is not None or t.svae is not None:
                diff = config_diff(base, t.run) if t.run is not None else config_diff(svae, t.svae)
            shown = {k: b for k, (_, b) in diff.items() if k not in hidden}
            extra = " ".join(f"{k}={short(b)}" for k, b in shown.items())
            dep = f" from {t.donor} ({t.graft})" if t.donor else ""
            dep = dep or (f" of {t.source}" if t.source else "")
            lines.append(f"  {t.key:<28} {t.kind:<9} {t.head:<6} {extra}{dep}")
    total = sum(len(p.trials) for p in sweep.phases)
    sets = " ".join(f"{k}={v}" for k, v in sweep.job.sets)
    what = f"preset {sweep.scale.preset}, {sweep.scale.steps} steps per cold run"
    if svae is not None:
        what = (
            f"SVAE on {sweep.job.svae_data}, {svae.train.steps} steps at batch "
            f"{svae.train.batch_size} per fit, each with its patch-shuffled control"
        )
    lines.append(f"{total} trials; {what}" + (f", --set {sets}" if sets else ""))
    return "\n".join(lines)


def short(value) -> str:
    """A plan's value: floats to 6 significant digits (the config keeps them exact)."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)
