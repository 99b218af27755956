"""``geolip sweep PROGRAM``: the driver of an experiment program on Ray Tune, tracked in MLflow.

Order: every check that needs no cluster (program, arms, ``--set`` keys, donor, resume state),
then the corpus's byte shards and the MLflow store, experiment and parent run on the driver
(trials must not race to create them), then one Tune run per phase. A phase's trials may use
checkpoints of an earlier phase's trials (grafts, contrast, bank swap); a trial whose source
failed is skipped and recorded. A failing trial is recorded as failed and the sweep goes on.

The sweep's state lives in ``DATA/sweeps/NAME``: ``sweep.json`` (the plan and the parent run id)
and Tune's experiment directories, which ``--resume`` restores with ``Tuner.restore``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from tune.programs import CONTRAST_OPS, Options, plan, scale
from tune.spec import Phase, SweepError, TrialSpec
from tune.trial import checkpoint_of

SWEEP_EXPERIMENT = "geolip-sweeps"


@dataclass(frozen=True)
class SweepJob:
    """The command line of ``geolip sweep PROGRAM``."""

    program: str
    scale: str = "tiny"
    seeds: int | None = None
    arms: tuple[str, ...] = ()
    sets: tuple[str, ...] = ()
    corpus: str = "builtin:python-docs"
    donor: str | None = None
    source: str | None = None
    workers: int = 1
    use_gpu: bool | None = None
    driver_cpus: float = 0.5
    max_failures: int = 0
    resume: bool = False
    name: str | None = None
    experiment: str = SWEEP_EXPERIMENT
    tracking_uri: str | None = None
    data_dir: str | None = None
    tags: dict = field(default_factory=dict)
    dry_run: bool = False
    fault: dict | None = None
    """Test hook: ``{trial key: {"step": s, "marker": path}}``, that trial's worker dies once."""


@dataclass(frozen=True)
class SweepOutcome:
    name: str
    run_id: str
    tracking_uri: str
    summary: dict


def run_sweep(job: SweepJob, progress=print) -> SweepOutcome:
    """Plan, check and run ``job``; returns its summary (also logged to the parent run)."""
    from pipelines.aleph_job import build_run_config
    from pipelines.paths import data_dir
    from pipelines.tracking import check_tracking, resolve_tracking_uri

    sc = scale(job.scale)
    seeds = job.seeds or sc.seeds
    if seeds < 1:
        raise SweepError(f"--seeds must be >= 1, got {seeds}")
    if job.workers < 1:
        raise SweepError(f"--workers must be >= 1, got {job.workers}")
    build_run_config(sc.preset, "pmix", (*sc.overrides, *job.sets))  # unknown --set keys fail here
    data = data_dir(job.data_dir)
    uri = resolve_tracking_uri(job.tracking_uri, data)
    if not job.dry_run or job.source or job.donor or job.program == "contrast":
        check_tracking(uri)  # an unreachable server fails here, before any work
    source = _source_sweep(uri, job.source) if job.source else None
    if source is None and job.program == "contrast":
        source = _last_battery(uri, job.experiment, job.corpus)
        if source is not None:
            progress(f"contrast: the checkpoints of the last seed battery, {source['name']}")
    donor = _donor_path(job.donor, uri, data) if job.donor else None
    opts = Options(sc, seeds, tuple(job.arms), donor=donor and str(donor), source_sweep=source)
    phases = plan(job.program, opts)
    name = job.name or sweep_name(job, seeds, source and source["name"])
    state = data / "sweeps" / name
    _check_state(state, name, job.resume)
    if donor is not None:
        _check_grafts(phases, donor, sc, job.sets)
    if job.dry_run:
        progress(plan_text(phases, sc, job.sets))
        return SweepOutcome(name, "", uri, {"phases": [[t.key for t in p.trials] for p in phases]})
    return _launch(job, sc, seeds, phases, name, state, data, uri, source, donor, progress)


def sweep_name(job: SweepJob, seeds: int, source: str | None = None) -> str:
    """``sweep-<program>-<scale>-<hash>``; the hash covers every option that changes results
    (``source``: the battery a contrast ablates, when found rather than given)."""
    from geolip.config import config_hash

    identity = {"program": job.program, "scale": job.scale, "seeds": seeds, "arms": job.arms,
                "sets": job.sets, "corpus": job.corpus, "donor": job.donor,
                "source": source or job.source, "workers": job.workers}  # fmt: skip
    return f"sweep-{job.program}-{job.scale}-{config_hash(identity, 8)}"


def plan_text(phases: list[Phase], sc, sets) -> str:
    """The plan as text: per phase, each trial's kind, arm and what it changes."""
    lines = []
    for p in phases:
        lines.append(f"phase {p.name}: {len(p.trials)} trial(s)"
                     + (f", ASHA over {sorted(p.search['space'])}" if p.search else ""))  # fmt: skip
        for t in p.trials:
            extra = " ".join(o for o in t.overrides if not o.startswith("train.seed="))
            dep = (
                f" from {t.donor} ({t.graft})" if t.donor else f" of {t.source}" if t.source else ""
            )
            lines.append(f"  {t.key:<28} {t.kind:<9} {t.head:<6} {extra}{dep}")
    total = sum(len(p.trials) for p in phases)
    lines.append(f"{total} trials; preset {sc.preset}, {sc.steps} steps per cold run"
                 + (f", --set {' '.join(sets)}" if sets else ""))  # fmt: skip
    return "\n".join(lines)


def _check_state(state: Path, name: str, resume: bool) -> None:
    started = (state / "sweep.json").exists()
    if resume and not started:
        raise SweepError(
            f"--resume: sweep {name} was never started ({state}); run it without --resume"
        )
    if started and not resume:
        raise SweepError(f"sweep {name} already exists ({state}); pass --resume to continue it")


def _launch(job, sc, seeds, phases, name, state, data, uri, source, donor, progress):
    from pipelines.byte_shards import build_byte_shards
    from pipelines.tracking import artifact_root, ensure_experiment, open_run
    from tune.report import summarize

    per_trial, concurrent, gpu = _resources(job)  # too small a cluster fails before anything
    build_byte_shards(job.corpus, data, progress=progress)  # once, before trials share it
    experiment = ensure_experiment(uri, job.experiment, artifact_root(uri, data))
    tags = {"kind": "sweep", "program": job.program, "scale": job.scale, "seeds": str(seeds),
            "sweep": name, "sweep_plan": str(state / "sweep.json"), **job.tags}  # fmt: skip
    params = {"program": job.program, "scale": job.scale, "seeds": seeds, "arms": list(job.arms),
              "sets": list(job.sets), "corpus": job.corpus, "workers": job.workers,
              "donor": job.donor or "", "source": job.source or ""}  # fmt: skip
    parent = open_run(uri, experiment, name, resume=job.resume, tags=tags, params=params)
    progress(f"sweep {name}: {sum(len(p.trials) for p in phases)} trials in {len(phases)} "
             f"phase(s); MLflow {uri} (experiment {job.experiment}, run {parent.run_id})")  # fmt: skip
    state.mkdir(parents=True, exist_ok=True)
    plan_doc = {"name": name, "program": job.program, "scale": job.scale, "seeds": seeds,
                "parent_run_id": parent.run_id, "tracking_uri": uri,
                "trials": [t.to_dict() for p in phases for t in p.trials],
                "phases": [p.name for p in phases]}  # fmt: skip
    _write_json(state / "sweep.json", plan_doc)
    try:
        ctx = _context(job, sc, name, parent.run_id, uri, experiment, data, source, donor, gpu)
        for phase in phases:
            _run_phase(phase, ctx, state, per_trial, concurrent, job.resume, progress)
        summary = summarize(uri, parent.run_id, progress=progress)
    except BaseException as exc:
        parent.finish("FAILED", error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    parent.finish()
    return SweepOutcome(name, parent.run_id, uri, summary)


def _context(job, sc, name, parent_id, uri, experiment, data, source, donor, gpu) -> dict:
    """What every trial of the sweep needs (JSON-able; absolute paths only)."""
    external = {job.donor: str(donor)} if donor is not None else {}
    if source:  # the checkpoints of another sweep's trials, found as that sweep finds them
        other = {"sweep": source["name"], "data_dir": str(Path(data).resolve())}
        external.update({t["key"]: str(checkpoint_of(other, t["key"])) for t in source["trials"]})
    return {
        "sweep": name, "program": job.program, "phase": "", "parent_run_id": parent_id,
        "uri": uri, "experiment": job.experiment, "experiment_id": experiment,
        "data_dir": str(Path(data).resolve()), "corpus": job.corpus, "preset": sc.preset,
        "steps": sc.steps, "scale_overrides": list(sc.overrides), "sets": list(job.sets),
        "workers": job.workers, "use_gpu": gpu, "max_failures": job.max_failures,
        "eval_bytes": sc.eval_bytes, "banks": dict(sc.banks), "external": external,
        "contrast_ops": list(CONTRAST_OPS), "faults": dict(job.fault or {}),
    }  # fmt: skip


def _resources(job: SweepJob) -> tuple[dict, int, bool]:
    """One trial's resources (its driver; Train reserves its workers itself), how many trials
    fit at once, and whether they train on GPUs.

    What the trials reserve never fills the cluster with drivers waiting for workers: at most
    ``floor(CPUs / (driver + workers))`` run at once (``max_concurrent_trials``), and a restored
    sweep does not restart its errored trials all at once either (``_run_phase``).
    """
    import ray

    from pipelines.aleph_train import _init_ray

    _init_ray(job.workers)
    total = ray.cluster_resources()
    gpu = job.use_gpu if job.use_gpu is not None else total.get("GPU", 0) > 0
    need_cpu = job.driver_cpus + (0 if gpu else job.workers)
    cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
    if cpus < need_cpu or (gpu and gpus < job.workers):
        raise SweepError(
            f"the cluster has {cpus:g} CPUs and {gpus:g} GPUs; one trial needs {need_cpu:g} CPUs"
            + (f" and {job.workers} GPUs" if gpu else "")
            + " (its driver plus --workers); lower --workers or add nodes"
        )
    fits = math.floor(cpus / need_cpu)
    if gpu:
        fits = min(fits, math.floor(gpus / job.workers))
    return {"CPU": job.driver_cpus}, max(1, fits), gpu


def _run_phase(phase: Phase, ctx: dict, state: Path, per_trial: dict, concurrent: int,
               resume: bool, progress) -> None:  # fmt: skip
    from ray import tune

    from tune.report import close_open_children
    from tune.trial import run_trial

    trials, skipped = _runnable(phase.trials, ctx)
    for t, missing in skipped:
        progress(f"  skip {t.key}: its source {missing} has no checkpoint (failed or pruned)")
    if not trials:
        return
    ctx = {**ctx, "phase": phase.name}
    specs = {t.key: t.to_dict() for t in trials}
    # Specs and context travel as parameters, not config: Tune prints every config it starts.
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, specs=specs, ctx=ctx), per_trial
    )
    path = state / "tune" / phase.name
    progress(f"phase {phase.name}: {len(trials)} trial(s), up to {concurrent} at a time")
    if resume and tune.Tuner.can_restore(str(path)):
        # Finished trials stay finished; interrupted ones continue. Errored ones are not
        # restarted by the restore itself: it would start all of them at once, past
        # max_concurrent_trials (on 2 CPUs their drivers took every CPU their workers needed).
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=False)
        grid = tuner.fit()
        errored = [dict(r.config) for r in grid if r.error is not None]
        if errored:
            progress(f"phase {phase.name}: retrying {len(errored)} failed trial(s)")
            space = {"retry": tune.grid_search(errored)}
            grid = _fresh_tuner(trainable, space, _retry_name(state, phase.name), state,
                                tune.TuneConfig(max_concurrent_trials=concurrent)).fit()  # fmt: skip
    else:
        tune_config = _tune_config(phase, concurrent)
        space = _param_space(phase, trials)
        grid = _fresh_tuner(trainable, space, phase.name, state, tune_config).fit()
    close_open_children(ctx["uri"], ctx["parent_run_id"], phase.name)
    failed = [r for r in grid if r.error is not None]
    if failed:
        progress(f"phase {phase.name}: {len(failed)} trial(s) failed (recorded in MLflow)")


def _fresh_tuner(trainable, space: dict, name: str, state: Path, tune_config):
    from ray import tune

    run_config = tune.RunConfig(
        name=name,
        storage_path=str(state / "tune"),
        failure_config=tune.FailureConfig(max_failures=0),
        verbose=1,
    )
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)


def _retry_name(state: Path, phase: str) -> str:
    n = 1
    while (state / "tune" / f"{phase}-retry-{n}").exists():
        n += 1
    return f"{phase}-retry-{n}"


def _runnable(trials, ctx) -> tuple[list[TrialSpec], list[tuple[TrialSpec, str]]]:
    ok, skipped = [], []
    for t in trials:
        missing = [k for k in (t.donor, t.source) if k and not checkpoint_of(ctx, k).is_dir()]
        (skipped.append((t, missing[0])) if missing else ok.append(t))
    return ok, skipped


def _param_space(phase: Phase, trials: list[TrialSpec]) -> dict:
    from ray import tune

    # Tune's progress table shows the grid's values: the trial keys read well there.
    if phase.search is None:
        return {"key": tune.grid_search([t.key for t in trials])}
    space = {"key": trials[0].key}
    for key, (kind, *args) in phase.search["space"].items():
        space[key] = tune.loguniform(*args) if kind == "loguniform" else tune.choice(args[0])
    return space


def _tune_config(phase: Phase, concurrent: int):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    if phase.search is None:
        return tune.TuneConfig(max_concurrent_trials=concurrent)
    # Reports come at every checkpoint (a fifth of the run): rungs at 1, 2 and 4 reports prune.
    # max_t above the 5 a run makes: a trial that survives ends by itself, finishing its run
    # (at max_t ASHA would stop it at its last report, before its checkpoint and artifacts).
    asha = ASHAScheduler(time_attr="training_iteration", max_t=64, grace_period=1,
                         reduction_factor=2)  # fmt: skip
    return tune.TuneConfig(
        metric="val_bpb", mode="min", scheduler=asha, num_samples=phase.search["samples"],
        max_concurrent_trials=concurrent,
    )  # fmt: skip


def _source_sweep(uri: str, run_id: str) -> dict:
    """The plan of the sweep whose parent MLflow run is ``run_id`` (``--from``)."""
    from pipelines.tracking import _client

    try:
        run = _client(uri).get_run(run_id)
    except Exception as exc:
        raise SweepError(f"--from {run_id}: no such MLflow run in {uri}") from exc
    name = run.data.tags.get("sweep")
    data_plan = _plan_file(run)
    if not name or data_plan is None:
        raise SweepError(f"--from {run_id}: not a geolip sweep run (no sweep plan)")
    return data_plan


def _last_battery(uri: str, experiment: str, corpus: str) -> dict | None:
    """The plan of the latest finished ``seed-battery`` sweep on ``corpus`` (None: there is none)."""
    from pipelines.tracking import _client

    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    query = (
        "tags.program = 'seed-battery' and tags.kind = 'sweep' and attributes.status = 'FINISHED'"
    )
    for run in client.search_runs(
        [exp.experiment_id], query, order_by=["attributes.start_time DESC"]
    ):
        plan = _plan_file(run)
        if plan is not None and run.data.params.get("corpus") == corpus:
            return plan
    return None


def _plan_file(run) -> dict | None:
    path = run.data.tags.get("sweep_plan")
    if not path or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text())


def _donor_path(donor: str, uri: str, data: Path) -> Path:
    """``--donor``: a checkpoint directory, or an MLflow run id whose checkpoint is downloaded."""
    path = Path(donor).expanduser()
    if path.is_dir():
        if not (path / "geo_config.json").exists() and not (path / "config.json").exists():
            raise SweepError(f"--donor {donor}: not a geolip checkpoint directory")
        return path.resolve()
    from pipelines.tracking import _client

    try:
        client = _client(uri)
        client.get_run(donor)
    except Exception as exc:
        raise SweepError(
            f"--donor {donor}: neither a checkpoint directory nor an MLflow run in {uri}"
        ) from exc
    dst = data / "donors" / donor
    if not (dst / "checkpoint").is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        client.download_artifacts(donor, "checkpoint", str(dst))
    return (dst / "checkpoint").resolve()


def _check_grafts(phases: list[Phase], donor: Path, sc, sets) -> None:
    """Graft the donor onto every target now: a shape that cannot be grafted fails before Tune."""
    from pipelines.aleph_job import _graft, _load_donor, build_run_config

    model = _load_donor(str(donor))
    for t in (t for p in phases for t in p.trials if t.donor):
        run_cfg = build_run_config(sc.preset, t.head, (*sc.overrides, *t.overrides, *sets))
        try:
            _graft(model, run_cfg, t.graft, None)
        except ValueError as exc:
            raise SweepError(f"--donor {donor} cannot be grafted for {t.key}: {exc}") from exc


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
