"""``geolip demo``: the whole product on one machine, browsable in MLflow.

Stages, in order: the atlas of the corpus (Ray Data) and a trigram bank cut from it; AlephLM with
the kernel and the pmix head (Ray Train); held-out bits/byte next to the compressors and the
controller contrast; a sample; MiniLM feature shards (Ray Data) and the SVAE companion on them and
on structured images; one preservation battery (Ray Tune); a summary run. Everything lands in one
data directory and one MLflow experiment (``geolip-demo``).

Each stage is recorded when it finishes (``demo.state``): a re-run skips finished stages and
prints their figures again; an interrupted stage continues from its checkpoints; ``--fresh``
deletes what the demo made and starts over. ``--scale`` picks the budgets (``DEMO_SCALES``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.cli import Command
from pipelines.errors import GeolipError
from pipelines.aleph.cli import add_common_run_arguments

EXPERIMENT = "geolip-demo"


@dataclass(frozen=True)
class DemoScale:
    """Budgets of one ``geolip demo --scale``."""

    name: str
    preset: str
    train_sets: tuple[str, ...]
    atlas_target: int
    bank_size: int
    eval_bytes: int
    contrast_seeds: int
    contrast_windows: int
    sample_bytes: int
    prime_bytes: int
    feature_sentences: int
    svae_sets: tuple[str, ...]
    sweep_scale: str
    sweep_seeds: int
    sweep_arms: tuple[str, ...] = ("apmix/free", "apmix/spread")
    sweep_sets: tuple[str, ...] = ()
    svae_control: bool = True


DEMO_SCALES = {
    # The test's: every stage, a few steps each (~4 min on 2 CPUs).
    "smoke": DemoScale(
        "smoke",
        "tiny",
        ("train.steps=8", "train.log_every=4", "train.eval_windows=4"),
        atlas_target=20_000,
        bank_size=512,
        eval_bytes=20_000,
        contrast_seeds=1,
        contrast_windows=8,
        sample_bytes=60,
        prime_bytes=100_000,
        feature_sentences=24,
        svae_sets=("train.steps=20", "train.eval_every=10", "train.batch_size=16"),
        sweep_scale="tiny",
        sweep_seeds=1,
        sweep_sets=("train.steps=6", "train.log_every=3"),
        svae_control=False,
    ),
    # The default: about 15 minutes on 2 CPU cores.
    "tiny": DemoScale(
        "tiny",
        "tiny",
        ("train.steps=1500", "train.log_every=50", "train.eval_windows=8"),
        atlas_target=500_000,
        bank_size=1024,
        eval_bytes=100_000,
        contrast_seeds=3,
        contrast_windows=32,
        sample_bytes=240,
        prime_bytes=1_000_000,
        feature_sentences=256,
        svae_sets=("train.steps=300", "train.eval_every=50"),
        sweep_scale="tiny",
        sweep_seeds=2,
    ),
    # The same story on a GPU machine: the small preset (d=384, L=4) and a small-scale sweep.
    "small": DemoScale(
        "small",
        "small",
        ("train.steps=2000",),
        atlas_target=2_000_000,
        bank_size=8192,
        eval_bytes=1_000_000,
        contrast_seeds=3,
        contrast_windows=64,
        sample_bytes=400,
        prime_bytes=8_000_000,
        feature_sentences=2048,
        svae_sets=(),
        sweep_scale="small",
        sweep_seeds=2,
    ),
}


def _stages():
    from demo.stages.aleph import stage_atlas, stage_bank, stage_eval, stage_sample, stage_train
    from demo.stages.companion import stage_features, stage_summary, stage_svae, stage_sweep

    return {
        "atlas": ("atlas of the corpus (Ray Data -> Parquet, DuckDB)", stage_atlas),
        "bank": ("trigram bank cut from the atlas", stage_bank),
        "train-kernel": ("AlephLM, kernel head (Ray Train)", lambda d: stage_train(d, "kernel")),
        "train-pmix": ("AlephLM, pmix head (Ray Train)", lambda d: stage_train(d, "pmix")),
        "eval": ("held-out bits/byte, compressors, controller contrast", stage_eval),
        "sample": ("sample from the better head", stage_sample),
        "features": ("MiniLM feature shards (Ray Data)", stage_features),
        "svae-features": (
            "SVAE companion on the features (Ray Train)",
            lambda d: stage_svae(d, "svae-features"),
        ),  # fmt: skip
        "svae-images": (
            "SVAE companion on structured images (Ray Train)",
            lambda d: stage_svae(d, "svae-images"),
        ),  # fmt: skip
        "sweep": ("preservation battery (Ray Tune)", stage_sweep),
        "summary": ("summary run", stage_summary),
    }


@dataclass
class Demo:
    """What every stage reads: budgets, corpus, where data and MLflow live, finished records."""

    scale: DemoScale
    corpus: str
    data: Path
    uri: str
    home: Path
    workers: int
    console: object
    experiment_id: str
    state: object = None
    experiment: str = EXPERIMENT

    def stage_names(self) -> list[str]:
        return list(_stages())

    def record(self, stage: str, required: bool = True) -> dict | None:
        rec = self.state.done(stage)
        if rec is None and required:
            raise GeolipError(f"demo stage {stage!r} has not run")
        return rec

    def log_run(self, name, tags, params, metrics, *, dicts=None, texts=None, figures=None):
        """A finished run of the demo experiment; returns its id."""
        from pipelines.tracking import start_run

        tags = {"demo": self.scale.name, **tags}
        logger = start_run(self.uri, self.experiment_id, name, tags=tags, params=params)
        with logger:
            logger.log_metrics(metrics, 0)
            for fname, d in (dicts or {}).items():
                logger.log_dict(d, fname)
            for fname, text in (texts or {}).items():
                logger.log_text(text, fname)
            for fname, fig in (figures or {}).items():
                logger.log_figure(fig, fname)
        return logger.run_id


def run_demo(scale: str, corpus: str, data_dir: str | None, tracking_uri: str | None,
             workers: int = 2, fresh: bool = False, console=None, stop_after: str | None = None):  # fmt: skip
    """Run (or continue) the demo; returns the ``Demo`` with every stage's record.

    ``stop_after`` (a test hook) interrupts the demo after that stage, as Ctrl-C would.
    """
    from rich.console import Console

    from pipelines.aleph.driver import _init_ray
    from pipelines.paths import data_dir as resolve_data
    from pipelines.tracking import (
        artifact_root,
        check_tracking,
        ensure_experiment,
        resolve_tracking_uri,
    )
    from demo.state import DemoLock, DemoState, check_writable, close_interrupted, forget

    if scale not in DEMO_SCALES:
        raise GeolipError(f"--scale {scale!r}: expected one of {', '.join(DEMO_SCALES)}")
    if workers < 1:
        raise GeolipError(f"--workers must be >= 1, got {workers}")
    console = console or Console()
    data = resolve_data(data_dir)
    check_writable(data)
    uri = resolve_tracking_uri(tracking_uri, data)
    check_tracking(uri)
    home = data / "demo" / scale
    with DemoLock(data / "demo"):
        if fresh:
            forget(home, uri, progress=console.print)
        identity = {"scale": scale, "corpus": corpus, "workers": workers}
        exp = ensure_experiment(uri, EXPERIMENT, artifact_root(uri, data))
        d = Demo(DEMO_SCALES[scale], corpus, data, uri, home, workers, console, exp)
        d.state = DemoState(home, identity)
        if n := close_interrupted(uri, exp):
            console.print(f"marked {n} run(s) of an interrupted demo KILLED; continuing")
        _init_ray(workers)
        stages = _stages()
        for i, (name, (title, fn)) in enumerate(stages.items(), 1):
            try:
                _run_stage(d, i, len(stages), name, title, fn)
                if name == stop_after:
                    raise KeyboardInterrupt(f"stopped after {name} (test hook)")
            except KeyboardInterrupt:
                console.print(
                    f"interrupted in stage {name}: the {len(d.state.stages)} finished stage(s) "
                    "are kept; run the same command again to continue (--fresh starts over)"
                )
                raise
    print_final(d)
    return d


def _run_stage(d: Demo, i: int, n: int, name: str, title: str, fn) -> None:
    rec = d.state.done(name)
    d.console.rule(f"[bold][{i}/{n}] {title}")
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
    from rich.table import Table

    from pipelines.ui import experiment_url

    table = Table(title=f"geolip demo ({d.scale.name}) on {d.corpus}", show_lines=False)
    for col in ("stage", "result", "s"):
        table.add_column(col, justify="right" if col == "s" else "left", overflow="fold")
    for name in d.stage_names():
        rec = d.record(name)
        table.add_row(name, rec["summary"], f"{rec.get('seconds_stage', 0):.0f}")
    d.console.print(table)
    flags = "" if d.data == Path("data").resolve() else f" --data-dir {d.data}"
    exe = "geolip"
    if shutil.which("geolip") is None and Path(sys.argv[0]).name == "geolip":
        exe = os.path.relpath(sys.argv[0])  # `make demo` runs .venv/bin/geolip, not on PATH
    d.console.print(
        f"data: {d.data}\nMLflow store: {d.uri} (experiment {d.experiment}, id {d.experiment_id})\n"
        f"browse the results: {exe} ui{flags}\n"
        f"  then open {experiment_url('http://127.0.0.1:5000', d.experiment_id)}",
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", default="tiny", help="smoke (~5 min) | tiny (~11 min on 2 CPUs) "
                   "| small (a GPU machine)")  # fmt: skip
    p.add_argument(
        "--corpus", default="builtin:python-docs", help="corpus URI (builtin:, file:, hf:)"
    )
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers per training run")
    p.add_argument(
        "--fresh", action="store_true", help="delete what an earlier demo made; start over"
    )
    add_common_run_arguments(p)


def _run(args: argparse.Namespace) -> int:
    try:
        run_demo(
            args.scale, args.corpus, args.data_dir, args.tracking_uri, args.workers, args.fresh
        )
    except KeyboardInterrupt:
        return 130  # the message is printed; no traceback for Ctrl-C
    return 0


COMMANDS = [Command("demo", "run the whole product end to end (atlas, training, evaluation, "
                    "SVAE, a sweep), browsable in MLflow", _add, _run)]  # fmt: skip
