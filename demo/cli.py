"""``geolip demo`` on the command line (registered through the ``geolip.commands`` entry
point). ``demo.run`` is imported inside ``_run``, after the checks of ``demo.checks``: it pulls
in Ray, torch and MLflow, and ``geolip --help`` and bad input must stay fast."""

from __future__ import annotations

import argparse

from demo.scales import DEMO_SCALES
from pipelines.cli import Command, add_common_run_arguments, int_at_least


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scale",
        choices=tuple(DEMO_SCALES),
        default="tiny",
        help="budgets: smoke ~5 min, tiny ~11 min on 2 CPUs, small and larger "
        "on a GPU machine (demo.scales)",
    )
    p.add_argument(
        "--corpus", default="builtin:python-docs", help="corpus URI (builtin:, file:, hf:)"
    )
    p.add_argument(
        "--workers",
        type=int_at_least(1),
        default=2,
        help="data-parallel Ray Train workers per training run",
    )
    p.add_argument(
        "--fresh", action="store_true", help="delete what an earlier demo made; start over"
    )
    add_common_run_arguments(p)


def _run(args: argparse.Namespace) -> int:
    from demo.checks import demo_context, preflight

    ctx = demo_context(args.scale, args.data_dir, args.tracking_uri, args.workers)
    preflight(args.scale, args.corpus, ctx, args.fresh)  # before Ray, torch and MLflow load
    from demo.run import run_demo

    run_demo(args.scale, args.corpus, ctx, args.fresh)  # Ctrl-C: an Interrupted, see run_demo
    return 0


COMMANDS = [
    Command(
        "demo",
        "run the whole product end to end (atlas, training, evaluation, SVAE, a sweep), "
        "browsable in MLflow",
        _add,
        _run,
    )
]
