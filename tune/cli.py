"""``geolip sweep PROGRAM`` and ``geolip sweep report RUN_ID`` (registered through the
``geolip.commands`` entry point: ``pipelines`` does not import ``tune``).

The edge of a sweep: ``--set`` is parsed here, once, against the scale's base run config, and the
typed changes go down to every trial. Heavy imports (Ray, MLflow) stay inside the run functions,
so ``geolip --help`` is fast; a sweep is planned and checked (``tune.plan``) before ``tune.sweep``,
which imports Ray, is imported at all.
"""

from __future__ import annotations

import argparse
import dataclasses

from pipelines.atlas.corpus_atlas import BANK_SOURCES
from pipelines.capacity import add_capacity_arguments, capacity_settings
from pipelines.cli import (
    Command,
    add_common_run_arguments,
    add_set_argument,
    int_at_least,
)
from tune.banks import SWAP_QUOTAS
from tune.spec import SWEEP_SCALES

PROGRAM_HELP = {
    "seed-battery": "heads byte/kernel/pmix/pmix8/apmix x banks dense/sparse x seeds (exp_007)",
    "preservation": "codebook arms free/div x3/frozen/slowlane/spread/frozen-random under pmix, apmix, kernel",
    "survey": "kernel-aux doses, write-head aux, bank vocabulary swap, context length (exp_010)",
    "graft": "depth, mixture and pmix->apmix grafts vs cold starts (graft and donor budgets), the donor, a warm restart and a continuation (§13)",
    "hemispheres": "routing-only vs prediction heads, streamed long context: erank trajectories and slopes",
    "ladder": "address dimension D ladder, with and without the tau_D control (§12)",
    "contrast": "controller contrast (permute/randomize) over a battery's checkpoints (§10)",
    "search": "ASHA search over lr, tau, K and chunk on held-out bits/byte",
    "svae": "SVAE lens rungs (D_lens) x 3 seeds on structured patches and their shuffled control: mechanism A/B verdict (svae.md §14)",
}


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scale",
        choices=tuple(SWEEP_SCALES),
        default="tiny",
        help="model preset and per-trial budgets: smoke (tests), tiny (minutes on 2 CPUs), "
        "small, full, calib23m (GPU clusters; see tune.spec.SWEEP_SCALES)",
    )
    p.add_argument(
        "--seeds", type=int_at_least(1), default=None, help="seeds per arm (default: the scale's)"
    )
    p.add_argument("--arms", default="", help="comma-separated arms to run (default: all)")
    add_set_argument(p, "override a config value in every trial, e.g. --set train.lr=0.002")
    p.add_argument("--corpus", default="builtin:python-docs", help="corpus URI of every trial")
    p.add_argument(
        "--bank-source",
        choices=BANK_SOURCES,
        default="atlas",
        help="the trials' banks: cut from the corpus' stratified atlas (built once, before the "
        "first trial) or the train side's top-N trigram frequencies",
    )
    p.add_argument(
        "--swap-corpus",
        default=None,
        help="survey: the corpus whose atlas cuts the 'corpus' swap bank (default: the other "
        "builtin corpus)",
    )
    p.add_argument(
        "--swap-quotas",
        default=SWAP_QUOTAS,
        help=f"survey: stratum quotas of the 'mix' swap bank (default {SWAP_QUOTAS})",
    )
    p.add_argument(
        "--svae-data",
        default="images:structured",
        help="svae: the data (features:DIR | images:structured | text:CORPUS_URI), each run's "
        "control its patch-shuffled copy",
    )
    p.add_argument("--donor", default=None, help="graft: donor checkpoint dir or MLflow run id")
    p.add_argument(
        "--from",
        dest="source",
        default=None,
        help="contrast: parent MLflow run id of a seed-battery sweep (default: the last one)",
    )
    p.add_argument(
        "--workers",
        type=int_at_least(1),
        default=1,
        help="data-parallel Ray Train workers per trial",
    )
    add_capacity_arguments(p, "worker of each trial")
    p.add_argument(
        "--max-failures",
        type=int_at_least(0),
        default=None,
        help="failures each trial survives, continuing from its last checkpoint: Ray Train "
        "worker-group restarts and Tune retries of the trial (default: 1 on a multi-node "
        "cluster, else 0)",
    )
    p.add_argument(
        "--trial-engine",
        choices=("auto", "in-process", "ray-train"),
        default="auto",
        help="how a training trial runs: in-process (in its Tune trial's process, no Train "
        "worker group to start), ray-train (its own Ray Train worker group); default auto: "
        "in-process where --workers is 1",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--name", default=None, help="sweep name (default: from its options)")
    p.add_argument("--experiment", default="geolip-sweeps", help="MLflow experiment name")
    add_common_run_arguments(p)


def job_from_args(program: str, args: argparse.Namespace):
    """The ``SweepJob`` of ``geolip sweep PROGRAM``: ``--set`` is parsed here, once."""
    from pipelines.config_file import config_changes
    from pipelines.runtime import RunContext
    from tune.plan import SweepJob, svae_base
    from tune.spec import sweep_scale

    ctx = RunContext.create(
        args.experiment,
        args.data_dir,
        args.tracking_uri,
        remote_ok=True,  # s3:// data directories (pipelines.run_storage)
        workers=args.workers,
        **capacity_settings(args),
        max_failures=0,
        resume=args.resume,
    )
    job = SweepJob(
        program=program,
        ctx=ctx,
        scale=args.scale,
        seeds=args.seeds,
        arms=tuple(a.strip() for a in args.arms.split(",") if a.strip()),
        corpus=args.corpus,
        bank_source=args.bank_source,
        swap_corpus=args.swap_corpus,
        swap_quotas=args.swap_quotas,
        donor=args.donor,
        source=args.source,
        name=args.name,
        dry_run=args.dry_run,
        max_failures=args.max_failures,
        svae_data=args.svae_data,
        trial_engine=args.trial_engine,
    )
    # --config and --set keys are the program's config's: an AlephRunConfig's, or the SVAE run's.
    base = svae_base(job) or sweep_scale(args.scale).base()
    sets = config_changes(base, args.config_file, args.overrides)
    return dataclasses.replace(job, sets=sets)


def _runner(program: str):
    def run(args: argparse.Namespace) -> int:
        """Plan and check the sweep (no Ray), then, unless ``--dry-run``, launch it."""
        from rich.console import Console

        from tune.plan import plan_sweep, plan_text

        console = Console()

        def progress(text) -> None:
            # Unwrapped: the summary's Markdown tables are read (and copied) line by line.
            console.print(text, soft_wrap=True)

        job = job_from_args(program, args)
        sweep = plan_sweep(job, progress=progress)
        if args.dry_run:
            print(plan_text(sweep))  # a plan is read (and copied) line by line: no wrapping
            return 0
        from tune.sweep import launch  # Ray: only once every check has passed

        outcome = launch(sweep, progress=progress)
        console.print(
            f"sweep {outcome.name}: MLflow run {outcome.run_id} in {outcome.tracking_uri}"
        )
        return 0

    return run


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", help="the sweep's parent MLflow run id")
    p.add_argument("--no-log", action="store_true", help="print only; do not log to the run")
    add_common_run_arguments(p)


def _report(args: argparse.Namespace) -> int:
    from pipelines.paths import data_dir
    from pipelines.tracking import check_tracking, resolve_tracking_uri
    from tune.sources import require_store

    uri = resolve_tracking_uri(args.tracking_uri, data_dir(args.data_dir))
    require_store(uri, f"sweep report {args.run_id}")  # a missing store is not created
    check_tracking(uri)
    from tune.report import summarize  # matplotlib and MLflow: once there is a store

    summarize(uri, args.run_id, log=not args.no_log)
    return 0


COMMANDS = [
    *(Command(f"sweep {name}", text, _add, _runner(name)) for name, text in PROGRAM_HELP.items()),
    Command("sweep report", "re-render a sweep's summary from MLflow alone", _add_report, _report),
]
