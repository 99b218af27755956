"""``geolip demo``: the whole product on one machine, browsable in MLflow.

Stages, in order (``demo.stages.STAGES``): the atlas of the corpus (Ray Data) and a trigram bank
cut from it; AlephLM with the kernel and the pmix head (Ray Train); held-out bits/byte next to the
compressors and the controller contrast; a sample; MiniLM feature shards (Ray Data) and the SVAE
companion on them and on structured images; one preservation battery (Ray Tune); a summary run.
Everything lands in one data directory and one MLflow experiment (``geolip-demo``).

Each stage is recorded when it finishes (``demo.state``): a re-run skips finished stages and
prints their figures again; an interrupted stage continues from its checkpoints; ``--fresh``
deletes what the demo made and starts over. ``--scale`` picks the budgets (``demo.scales``).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from demo.checks import EXPERIMENT, demo_context, demo_identity, preflight
from demo.scales import DemoScale
from demo.stages import STAGES
from demo.state import DemoLock, DemoState, check_writable, close_interrupted, forget
from pipelines.errors import GeolipError, Interrupted
from pipelines.runtime import RunContext, init_ray
from pipelines.tracking import artifact_root, check_tracking, ensure_experiment, start_run
from pipelines.ui import experiment_url

__all__ = ["EXPERIMENT", "Demo", "demo_context", "print_final", "run_demo"]


@dataclass
class Demo:
    """What every stage reads: budgets, corpus, the run context every job shares, records."""

    scale: DemoScale
    corpus: str
    ctx: RunContext
    """Experiment ``geolip-demo``, ``--workers`` Ray Train workers, runs resumed when found."""
    home: Path
    console: Console
    experiment_id: str
    state: DemoState

    @property
    def data(self) -> Path:
        return self.ctx.data_dir

    @property
    def uri(self) -> str:
        return self.ctx.tracking_uri

    def stage_names(self) -> list[str]:
        return list(STAGES)

    def record(self, stage: str, required: bool = True) -> dict | None:
        rec = self.state.done(stage)
        if rec is None and required:
            raise GeolipError(f"demo stage {stage!r} has not run")
        return rec

    def log_run(self, name, tags, params, metrics, *, dicts=None, texts=None, figures=None):
        """A finished run of the demo experiment; returns its id."""
        tags = {"demo": self.scale.name, **tags}
        logger = start_run(
            self.uri, self.experiment_id, name, tags=tags, params=params, config=params
        )
        with logger:
            logger.log_metrics(metrics, 0)
            for fname, d in (dicts or {}).items():
                logger.log_dict(d, fname)
            for fname, text in (texts or {}).items():
                logger.log_text(text, fname)
            for fname, fig in (figures or {}).items():
                logger.log_figure(fig, fname)
        return logger.run_id


def run_demo(
    scale: str,
    corpus: str,
    ctx: RunContext,
    fresh: bool = False,
    console: Console | None = None,
    stop_after: str | None = None,
) -> Demo:
    """Run (or continue) the demo in ``ctx``; returns the ``Demo`` with every stage's record.

    ``stop_after`` (a test hook) interrupts the demo after that stage, as Ctrl-C would.
    """
    budgets = preflight(scale, corpus, ctx, fresh)  # reads only: nothing is written before
    console = console or Console()
    check_writable(ctx.data_dir)
    check_tracking(ctx.tracking_uri)
    home = ctx.data_dir / "demo" / scale
    with DemoLock(ctx.data_dir / "demo"):
        if fresh:
            forget(home, ctx.tracking_uri, progress=console.print)
        identity = demo_identity(scale, corpus, ctx)
        root = artifact_root(ctx.tracking_uri, ctx.data_dir)
        exp = ensure_experiment(ctx.tracking_uri, ctx.experiment, root)
        d = Demo(budgets, corpus, ctx, home, console, exp, DemoState(home, identity))
        if n := close_interrupted(ctx.tracking_uri, exp):
            console.print(f"marked {n} run(s) of an interrupted demo KILLED; continuing")
        init_ray(ctx.workers)
        for i, (name, (title, fn)) in enumerate(STAGES.items(), 1):
            try:
                _run_stage(d, i, name, title, fn)
                if name == stop_after:
                    raise KeyboardInterrupt(f"stopped after {name} (test hook)")
            except KeyboardInterrupt:
                raise Interrupted(
                    f"in stage {name}: the {len(d.state.stages)} finished stage(s) are kept; "
                    "run the same command again to continue (--fresh starts over)"
                ) from None
    print_final(d)
    return d


def _run_stage(d: Demo, i: int, name: str, title: str, fn) -> None:
    rec = d.state.done(name)
    d.console.rule(f"[bold][{i}/{len(STAGES)}] {title}")
    if rec is not None:
        d.console.print(f"done earlier (--fresh redoes it): {rec['summary']}", markup=False)
        return
    started = time.perf_counter()
    rec = fn(d)
    rec["seconds_stage"] = round(time.perf_counter() - started, 1)
    d.state.record(name, rec)
    d.console.print(f"[dim]{name}: {rec['seconds_stage']:.0f} s")


def print_final(d: Demo) -> None:
    """What ran, the key figures, where the data lives and how to browse it."""
    table = Table(title=f"geolip demo ({d.scale.name}) on {d.corpus}", show_lines=False)
    for col in ("stage", "result", "s"):
        table.add_column(col, justify="right" if col == "s" else "left", overflow="fold")
    for name in STAGES:
        rec = d.record(name)
        table.add_row(name, rec["summary"], f"{rec.get('seconds_stage', 0):.0f}")
    d.console.print(table)
    flags = "" if d.data == Path("data").resolve() else f" --data-dir {d.data}"
    exe = "geolip"
    if shutil.which("geolip") is None and Path(sys.argv[0]).name == "geolip":
        exe = os.path.relpath(sys.argv[0])  # `make demo` runs .venv/bin/geolip, not on PATH
    d.console.print(
        f"data: {d.data}\nMLflow store: {d.uri} (experiment {d.ctx.experiment}, "
        f"id {d.experiment_id})\nbrowse the results: {exe} ui{flags}\n"
        f"  then open {experiment_url('http://127.0.0.1:5000', d.experiment_id)}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
