"""``geolip sweep PROGRAM``: the driver of an experiment program on Ray Tune, tracked in MLflow.

Order: every check that needs no cluster (``tune.plan``: program, arms, ``--set`` keys, donor,
resume state, then the MLflow store), then the corpus's byte shards and the MLflow experiment and
parent run on the driver (trials must not race to create them), then one Tune run per phase. A
phase's trials may use checkpoints of an earlier phase's trials (grafts, contrast, bank swap); a
trial whose source failed is skipped and recorded. A failing trial is recorded as failed and the sweep goes on.

The sweep's state lives in ``DATA/sweeps/NAME``: ``sweep.json`` (the plan and the parent run id)
and Tune's experiment directories, which ``--resume`` restores with ``Tuner.restore``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from pipelines import capacity
from pipelines.byte_shards import build_byte_shards
from pipelines.capacity import cluster_capacity
from pipelines.run_storage import exists, read_file, storage_kwargs, write_file
from pipelines.runtime import init_ray, one_line
from pipelines.storage import Root, is_uri
from pipelines.tracking import artifact_root, check_tracking, ensure_experiment, open_run
from tune.banks import prepare_banks
from tune.plan import PlannedSweep, SweepJob, plan_sweep, plan_text, sweep_name
from tune.report import close_open_children, summarize
from tune.spec import Phase, SweepError, TrialSpec
from tune.trial import (
    TrialContext,
    checkpoint_of,
    final_checkpoint,
    has_final,
    run_trial,
    trial_config,
    trial_identity,
)

SWEEP_EXPERIMENT = "geolip-sweeps"
# Planning lives in tune.plan (no Ray: the CLI plans and refuses bad input before importing
# this module); its names are this module's API too.
__all__ = [
    "PlannedSweep",
    "SweepJob",
    "SweepOutcome",
    "launch",
    "plan_sweep",
    "plan_text",
    "run_sweep",
    "sweep_name",
]


@dataclass(frozen=True)
class SweepOutcome:
    name: str
    run_id: str
    tracking_uri: str
    summary: dict


@dataclass(frozen=True)
class TrialResources:
    """What one trial reserves (its driver, and in process its worker's CPU or GPU; on Ray Train
    the Train run reserves its workers itself), how many trials
    run at once, whether they train on GPUs, and how many failures each survives (Ray Train
    restarts of its worker group, and Tune retries of the trial from its last checkpoint)."""

    per_trial: dict
    concurrent: int
    gpu: bool
    failures: int = 0
    workers_gpus: float = 0.0
    """GPUs per Ray Train worker (0 on CPUs)."""


def run_sweep(job: SweepJob, progress=print) -> SweepOutcome:
    """Plan, check and run ``job``; returns its summary (also logged to the parent run)."""
    sweep = plan_sweep(job, progress)
    if job.dry_run:
        progress(plan_text(sweep))
        phases = {"phases": [[t.key for t in p.trials] for p in sweep.phases]}
        return SweepOutcome(sweep.name, "", job.ctx.tracking_uri, phases)
    return launch(sweep, progress)


def launch(sweep: PlannedSweep, progress=print) -> SweepOutcome:
    """Run a planned sweep: shards, MLflow parent run, then one Tune run per phase."""
    job, ctx = sweep.job, sweep.job.ctx
    uri, data = ctx.tracking_uri, ctx.data_dir
    resources = _resources(job)  # too small a cluster fails before anything
    check_tracking(uri)  # creates a SQLite store: after the cluster has admitted the sweep
    swap_banks = {}
    if any(t.run is not None for p in sweep.phases for t in p.trials):  # AlephLM trials
        shards = build_byte_shards(job.corpus, data, progress=progress)  # once, before trials
        swap_banks = prepare_banks(sweep, shards, progress)  # atlas, banks: before the trials
    experiment = ensure_experiment(uri, ctx.experiment, artifact_root(uri, data))

    tags = {
        "kind": "sweep",
        "program": job.program,
        "scale": job.scale,
        "seeds": str(sweep.seeds),
        "sweep": sweep.name,
        "sweep_plan": sweep_store(sweep).child("sweep.json").uri,
        **ctx.tags,
    }
    params = {
        "program": job.program,
        "scale": job.scale,
        "seeds": sweep.seeds,
        "arms": list(job.arms),
        "sets": [f"{k}={v}" for k, v in job.sets],
        "corpus": job.corpus,
        **({"svae_data": job.svae_data} if job.program == "svae" else {}),
        "workers": ctx.workers,
        "donor": job.donor or "",
        "source": job.source or "",
    }
    parent = open_run(
        uri,
        experiment,
        sweep.name,
        resume=ctx.resume,
        run_id=_planned_parent(sweep) if ctx.resume else None,
        tags=tags,
        params=params,
        config={"sweep": params, "trials": [t.to_dict() for p in sweep.phases for t in p.trials]},
    )
    n_trials = sum(len(p.trials) for p in sweep.phases)
    progress(
        f"sweep {sweep.name}: {n_trials} trial{'s' if n_trials != 1 else ''} in {len(sweep.phases)} phase(s); MLflow "
        f"{uri} (experiment {ctx.experiment}, run {parent.run_id})"
    )
    _write_plan(sweep, _plan_doc(sweep, parent.run_id))
    try:
        trial_ctx = _trial_context(sweep, parent.run_id, experiment, resources, swap_banks)
        for phase in sweep.phases:
            _run_phase(sweep, phase, trial_ctx, resources, progress)
        summary = summarize(uri, parent.run_id, progress=progress)
    except BaseException as exc:
        parent.finish("FAILED", error=one_line(exc))
        raise
    parent.finish()
    return SweepOutcome(sweep.name, parent.run_id, uri, summary)


def _plan_doc(sweep: PlannedSweep, parent_run_id: str) -> dict:
    return {
        "name": sweep.name,
        "program": sweep.job.program,
        "scale": sweep.job.scale,
        "seeds": sweep.seeds,
        "parent_run_id": parent_run_id,
        "tracking_uri": sweep.job.ctx.tracking_uri,
        "trials": [t.to_dict() for p in sweep.phases for t in p.trials],
        "phases": [p.name for p in sweep.phases],
    }


def _trial_context(
    sweep: PlannedSweep, parent_id: str, experiment_id: str, res: TrialResources, swap_banks: dict
):
    """What every trial of the sweep needs (absolute paths only)."""
    job = sweep.job
    external = {}
    if sweep.donor is not None:  # a donor on the store is read from there by each trial's node
        external[job.donor] = job.donor if is_uri(job.donor) else str(sweep.donor)
    if sweep.source:  # the checkpoints of another sweep's trials, found as that sweep finds them
        other = sweep.source["name"]
        external.update(
            {t["key"]: final_checkpoint(job.ctx, other, t["key"]) for t in sweep.source["trials"]}
        )
    return TrialContext(
        sweep=sweep.name,
        program=job.program,
        parent_run_id=parent_id,
        experiment_id=experiment_id,
        run=job.ctx.replace(
            use_gpu=res.gpu,
            workers_gpus=res.workers_gpus or None,
            resume=False,
            tags={},
            max_failures=res.failures,
            in_process=job.in_process,
        ),
        corpus=job.corpus,
        bank_source=job.bank_source,
        eval_bytes=sweep.scale.eval_bytes,
        svae_data=job.svae_data,
        swap_banks=dict(swap_banks),
        external=external,
        faults=dict(job.faults),
    )


def _resources(job: SweepJob) -> TrialResources:
    """Admit the sweep on what the cluster may have, then wait for one trial's resources.

    What the trials reserve never fills the cluster with drivers waiting for workers: at most
    ``floor(CPUs / (driver + workers))`` run at once (``max_concurrent_trials``; of the CPUs and
    GPUs the cluster may have, its autoscaler's node groups included), and a restored sweep does
    not restart its errored trials all at once either (``_run_phase``). A cluster that can never
    hold one trial is refused; one whose autoscaler may add nodes is waited for (``--wait-nodes``)
    before any run is created."""
    workers = job.ctx.workers
    init_ray(workers)
    cap = cluster_capacity().promised(job.ctx)
    run = capacity.resolve(job.ctx, cap)
    per_worker = capacity.worker_bundle(run)
    driver = {"CPU": job.driver_cpus}
    bundles = [driver] + [per_worker] * workers
    need = capacity.total(bundles)
    if any(v > cap.at_most(k) + 1e-9 for k, v in need.items()):
        raise SweepError(_too_small(cap, need, workers))
    what = f"one trial ({workers} worker{'s' if workers > 1 else ''})"
    capacity.check_possible(bundles, cap, what)
    capacity.wait_for(bundles, capacity.wait_seconds(run), what)
    # At once: as many trials as the cluster may hold; where that is not known (or unlimited,
    # or GPUs taken on trust), as many as it holds now that one trial's nodes are up.
    now = cluster_capacity().now
    most = {k: cap.at_most(k) if cap.at_most(k) < capacity.UNBOUNDED else now.get(k, 0.0)
            for k in need}  # fmt: skip
    fits = min(math.floor(most[k] / v + 1e-9) for k, v in need.items() if v > 0)
    gpus = run.workers_gpus or 0.0
    # In process, the trial's own process trains: it holds its worker's CPU or GPU itself.
    per_trial = capacity.total(bundles) if job.in_process else driver
    return TrialResources(per_trial, max(1, fits), bool(run.use_gpu), _failures(job), gpus)


def _too_small(cap, need: dict, workers: int) -> str:
    scope = "may have at most" if cap.scalable else "has"
    gpu = f" and {need['GPU']:g} GPUs" if "GPU" in need else ""
    return (
        f"the cluster {scope} {capacity.amounts(cap.possible)}; one trial needs "
        f"{need.get('CPU', 0):g} CPUs{gpu} (its driver plus --workers {workers}); lower "
        "--workers or add nodes"
    )


def _failures(job: SweepJob) -> int:
    """``--max-failures``, else 1 where Ray runs on more than one node (a lost node, a preempted
    spot instance, costs a retry from the last checkpoint, not the trial), else 0."""
    if job.max_failures is not None:
        return job.max_failures
    alive = sum(1 for node in ray.nodes() if node.get("Alive"))
    return 1 if alive > 1 else 0


def _run_phase(
    sweep: PlannedSweep, phase: Phase, ctx: TrialContext, res: TrialResources, progress
) -> None:
    trials, skipped = _runnable(phase.trials, ctx)
    for t, missing in skipped:
        progress(f"  skip {t.key}: its source {missing} has no checkpoint (failed or pruned)")
    if not trials:
        return
    ctx = ctx.replace(phase=phase.name)
    specs = {t.key: t for t in trials}
    # Specs and context travel as parameters, not config: Tune prints every config it starts.
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, specs=specs, ctx=ctx), res.per_trial
    )
    tune_root = sweep_store(sweep).child("tune")
    path = tune_root.child(phase.name)
    progress(f"phase {phase.name}: {len(trials)} trial(s), up to {res.concurrent} at a time")
    if sweep.job.ctx.resume and tune.Tuner.can_restore(path.path, **_fs(path)):
        grid = _restore_phase(sweep, phase, path, trainable, res, progress)
    else:
        space = _param_space(phase, trials)
        config = _tune_config(phase, res)
        tuner = _fresh_tuner(trainable, space, phase.name, tune_root, config, res.failures)
        grid = tuner.fit()
    failed = [r for r in grid if r.error is not None]
    # A trial whose process died (in process: with its training) left its run RUNNING.
    errors = {trial_identity(trial_config(r)): one_line(r.error) for r in failed}
    close_open_children(ctx.run.tracking_uri, ctx.parent_run_id, phase.name, errors)
    if failed:
        progress(f"phase {phase.name}: {len(failed)} trial(s) failed (recorded in MLflow)")


def _restore_phase(sweep, phase: Phase, path: Root, trainable, res: TrialResources, progress):
    """Finished trials stay finished; interrupted ones continue. Errored ones are not restarted
    by the restore itself: it would start all of them at once, past max_concurrent_trials (on 2
    CPUs their drivers took every CPU their workers needed); they retry in a fresh Tuner."""
    restored = tune.Tuner.restore(path.path, trainable=trainable, resume_errored=False, **_fs(path))
    grid = restored.fit()
    errored = [trial_config(r) for r in grid if r.error is not None]
    if not errored:
        return grid
    progress(f"phase {phase.name}: retrying {len(errored)} failed trial(s)")
    space = {"retry": tune.grid_search(errored)}
    config = tune.TuneConfig(max_concurrent_trials=res.concurrent, reuse_actors=True)
    tune_root = sweep_store(sweep).child("tune")
    name = _retry_name(tune_root, phase.name)
    return _fresh_tuner(trainable, space, name, tune_root, config, res.failures).fit()


def sweep_store(sweep: PlannedSweep) -> Root:
    """The sweep's state on the data directory (``sweeps/NAME``, on the store with one)."""
    return sweep.job.ctx.root().child(f"sweeps/{sweep.name}")


def _fs(root: Root) -> dict:
    """Tune's ``storage_filesystem`` for a state directory on object storage."""
    return {"storage_filesystem": root.fs} if root.remote else {}


def _fresh_tuner(trainable, space: dict, name: str, tune_root: Root, tune_config, failures=0):
    run_config = tune.RunConfig(
        name=name,
        **storage_kwargs(tune_root),
        failure_config=tune.FailureConfig(max_failures=failures),
        verbose=1,
    )
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)


def _retry_name(tune_root: Root, phase: str) -> str:
    n = 1
    while exists(tune_root.child(f"{phase}-retry-{n}")):
        n += 1
    return f"{phase}-retry-{n}"


def _runnable(trials, ctx: TrialContext) -> tuple[list[TrialSpec], list[tuple[TrialSpec, str]]]:
    ok, skipped = [], []
    for t in trials:
        missing = [k for k in (t.donor, t.source) if k and not has_final(checkpoint_of(ctx, k))]
        (skipped.append((t, missing[0])) if missing else ok.append(t))
    return ok, skipped


def _param_space(phase: Phase, trials: list[TrialSpec]) -> dict:
    # Tune's progress table shows the grid's values: the trial keys read well there.
    if phase.search is None:
        return {"key": tune.grid_search([t.key for t in trials])}
    space = {"key": trials[0].key}
    for key, (kind, *args) in phase.search["space"].items():
        space[key] = tune.loguniform(*args) if kind == "loguniform" else tune.choice(args[0])
    return space


def _tune_config(phase: Phase, res: TrialResources):
    """A grid's trials run one after another in the same trial actor (``reuse_actors``): the
    next trial starts at once, with torch, Ray Train and the MLflow store already loaded (~7 s
    a trial here). Tune reuses an actor only once its trial's thread has ended (a trial still
    running is never reset under it), so a search, whose ASHA stops trials mid-run, keeps one
    actor per trial rather than waiting on each stopped one."""
    if phase.search is None:
        return tune.TuneConfig(max_concurrent_trials=res.concurrent, reuse_actors=True)
    # Reports come at every checkpoint (a fifth of the run): rungs at 1, 2 and 4 reports prune.
    # max_t above the 5 a run makes: a trial that survives ends by itself, finishing its run
    # (at max_t ASHA would stop it at its last report, before its checkpoint and artifacts).
    asha = ASHAScheduler(
        time_attr="training_iteration", max_t=64, grace_period=1, reduction_factor=2
    )
    return tune.TuneConfig(
        metric="val_bpb",
        mode="min",
        scheduler=asha,
        num_samples=phase.search["samples"],
        max_concurrent_trials=res.concurrent,
    )


def _planned_parent(sweep: PlannedSweep) -> str | None:
    """The parent run id that the resumed sweep's ``sweep.json`` recorded (None: none yet)."""
    # On a fresh node the plan is only on the store: read it where the sweep keeps its state.
    raw = read_file(sweep_store(sweep), "sweep.json") if sweep.job.ctx.storage else None
    try:
        doc = json.loads(raw or (sweep.state / "sweep.json").read_bytes())
    except (OSError, ValueError):
        return None
    run_id = doc.get("parent_run_id") if isinstance(doc, dict) else None
    return run_id if isinstance(run_id, str) and run_id else None


def _write_plan(sweep: PlannedSweep, doc: dict) -> None:
    """``sweep.json``: locally (atomically), and on the store where the data directory is."""
    sweep.state.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(doc, indent=2) + "\n").encode()
    tmp = sweep.state / "sweep.json.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, sweep.state / "sweep.json")
    if sweep.job.ctx.storage:
        write_file(sweep_store(sweep), "sweep.json", data)
