"""AlephLM on the command line: ``geolip train aleph``, ``geolip aleph sample``,
``geolip eval aleph`` and ``geolip eval contrast``.

The edge of every AlephLM job: the run config is built here, once, from ``--scale``, ``--head``
and ``--set`` (``pipelines.scales``), and passed down as the typed object. Heavy imports (torch,
Ray, MLflow) stay inside the run functions, so ``geolip --help`` is fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from geolip.aleph.config import HEADS
from geolip.aleph.experiments.names import OPS, SCOPES
from pipelines.aleph.arguments import (
    MAX_SAMPLE_BYTES,
    ablation_ops,
    head_kind,
    int_at_least_because,
    sample_bytes,
    temperature,
    utf8_text,
)
from pipelines.atlas.corpus_atlas import BANK_SOURCES
from pipelines.capacity import add_capacity_arguments, capacity_settings
from pipelines.cli import (
    Command,
    add_common_run_arguments,
    add_set_argument,
    int_at_least,
)
from pipelines.kn import add_kn_arguments
from pipelines.scales import SCALE_NAMES
from pipelines.system_metrics import add_system_metrics_argument, system_metrics_setting

GRAFTS = ("none", "depth", "mixture", "retrofit", "continue")
FORMATS = ("table", "json")
MIN_EVAL_BYTES = 6
"""The fewest held-out bytes the evaluator scores: 2 trigrams (one context, one target)."""
MIN_TRAIN_EVAL_BYTES = 1000
"""The fewest held-out bytes a training run scores (``pipelines.aleph.job.check_job``)."""


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", required=True, help="corpus URI (hf:, file:, builtin:)")
    p.add_argument(
        "--scale",
        choices=SCALE_NAMES,
        default="tiny",
        help="model preset and budget: smoke (seconds, tests), tiny (1,500 steps, minutes on 2 "
        "CPUs), small (6.7M, 5k steps), full (10k steps), calib23m (23M, 8k steps)",
    )
    p.add_argument(
        "--head",
        type=head_kind,
        choices=HEADS,
        default="pmix",
        help="output head (model.head.kind)",
    )
    p.add_argument(
        "--bank", default=None, help="trigram bank file (default: cut as --bank-source says)"
    )
    p.add_argument(
        "--bank-source",
        choices=BANK_SOURCES,
        default="atlas",
        help="without --bank: cut from the corpus' stratified atlas (built once under the data "
        "dir) or the train side's top-N trigram frequencies",
    )
    add_set_argument(p, "override a config value, e.g. --set train.steps=500 (repeatable)")
    p.add_argument(
        "--workers", type=int_at_least(1), default=1, help="data-parallel Ray Train workers"
    )
    add_capacity_arguments(p)
    p.add_argument(
        "--checkpoint-every",
        type=int_at_least(0),
        default=0,
        help="steps between checkpoints (0: a fifth of the run, rounded up)",
    )
    p.add_argument(
        "--max-failures", type=int_at_least(0), default=2, help="worker-group restarts allowed"
    )
    p.add_argument("--resume", action="store_true", help="continue the run from its checkpoint")
    add_system_metrics_argument(p)
    p.add_argument(
        "--init-from",
        default=None,
        help="warm-start from this donor checkpoint: a directory, s3://..., runs:/ID/model or "
        "models:/NAME/VERSION",
    )
    p.add_argument(
        "--register",
        default=None,
        metavar="NAME",
        help="register the logged model as a new version of the MLflow registered model NAME",
    )
    p.add_argument("--graft", choices=GRAFTS, default="none", help="how the donor maps")
    p.add_argument("--experiment", default="geolip-aleph", help="MLflow experiment name")
    p.add_argument(
        "--eval-bytes",
        type=int_at_least_because(
            MIN_TRAIN_EVAL_BYTES, "a training run scores at least 1000 bytes"
        ),
        default=None,
        help=f"held-out bytes to score, >= {MIN_TRAIN_EVAL_BYTES} (default: the scale's)",
    )
    p.add_argument("--name", default=None, help="run name (default: from config hash and seed)")
    add_common_run_arguments(p)


def job_from_args(args: argparse.Namespace):
    """The ``TrainJob`` of ``geolip train aleph``: the run config is built here, once (before
    torch is imported: a bad ``--set`` is refused at once)."""
    from pipelines.config_file import apply_config
    from pipelines.runtime import RunContext
    from pipelines.scales import get_scale

    scale = get_scale(args.scale)
    run = apply_config(scale.run_config(args.head), args.config_file, args.overrides)
    ctx = RunContext.create(
        args.experiment,
        args.data_dir,
        args.tracking_uri,
        remote_ok=True,  # s3:// data directories (pipelines.run_storage)
        workers=args.workers,
        **capacity_settings(args),
        max_failures=args.max_failures,
        resume=args.resume,
        system_metrics=system_metrics_setting(args),
        tags={"scale": scale.name},
    )
    from pipelines.aleph.job import TrainJob
    from pipelines.model_uri import model_arg

    return TrainJob(
        run=run,
        corpus=args.corpus,
        ctx=ctx,
        bank=args.bank,
        bank_source=args.bank_source,
        init_from=model_arg(args.init_from, "--init-from", ctx.tracking_uri, ctx.data_dir),
        graft=args.graft,
        register=args.register,
        checkpoint_every=args.checkpoint_every,
        run_name=args.name,
        eval_bytes=scale.eval_bytes if args.eval_bytes is None else args.eval_bytes,
    )


def _run_train(args: argparse.Namespace) -> int:
    from rich.console import Console

    job = job_from_args(args)
    from pipelines.aleph.job import check_job

    check_job(job)  # before Ray, MLflow and matplotlib are imported: bad input fails fast
    from geolip.aleph.experiments.employment import Employment
    from pipelines.aleph.driver import train_aleph

    console = Console()
    outcome = train_aleph(job, progress=console.print)
    final = outcome.verdict["final"]
    keys = ("bpb", "val_bpb", "heldout_bpb_windowed", "heldout_bpb_streamed", "tokens_per_s")
    for key in (k for k in keys if k in final):
        value = final[key]
        console.print(f"  {key:<22} {value:.4f}" if value < 100 else f"  {key:<22} {value:,.0f}")
    used = Employment.from_metrics(final)
    if used is not None:
        console.print(f"  aleph employment       {used.summary()}", markup=False)
    console.print(f"checkpoint: {outcome.checkpoint}")
    console.print(f"MLflow run {outcome.run_id} in {outcome.tracking_uri}")
    if outcome.model is not None:
        registered = (
            f", registered as {outcome.model.registered}" if outcome.model.registered else ""
        )
        console.print(f"logged model: {outcome.model.run_uri}{registered}", markup=False)
    return 0


def _add_sample(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        required=True,
        help="checkpoint: a directory, s3://..., runs:/ID/model or models:/NAME/VERSION",
    )
    add_common_run_arguments(p)  # where a runs:/ or models:/ URI is looked up
    p.add_argument("--prompt", type=utf8_text, default="", help="text to continue (UTF-8)")
    p.add_argument(
        "--bytes",
        type=sample_bytes,
        default=300,
        help=f"number of bytes to generate, 1 to {MAX_SAMPLE_BYTES:,}",
    )
    p.add_argument(
        "--temperature", type=temperature, default=0.8, help="sampling temperature (finite, > 0)"
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed")


FLUSH_BYTES = 64
"""``aleph sample`` flushes stdout at each newline and at least every this many bytes."""


def _run_sample(args: argparse.Namespace) -> int:
    import codecs

    from geolip.aleph.checkpoint import load_checkpoint
    from geolip.aleph.generate import stream
    from pipelines.model_uri import checkpoint_arg

    model, _, _ = load_checkpoint(checkpoint_arg(args, args.checkpoint, "--checkpoint"))
    prompt = args.prompt.encode("utf-8")
    chunks = stream(model, prompt, args.bytes, temperature=args.temperature, seed=args.seed)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out, pending = sys.stdout, 0
    try:
        for chunk in _prepend(prompt, chunks):
            text = decoder.decode(chunk)
            out.write(text)
            pending += len(chunk)
            if pending >= FLUSH_BYTES or "\n" in text:
                out.flush()
                pending = 0
        out.write(decoder.decode(b"", final=True) + "\n")
        out.flush()
    except BrokenPipeError:
        _quiet_stdout()  # the reader left (`| head`): not an error
    return 0


def _prepend(first: bytes, rest):
    if first:
        yield first
    yield from rest


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null, so the interpreter's final flush does not
    fail again (the Python docs' recipe for SIGPIPE)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _add_eval_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        help="checkpoint: a directory (e.g. runs/aleph/NAME/final), s3://..., runs:/ID/model "
        "or models:/NAME/VERSION",
    )
    p.add_argument("--corpus", required=True, help="corpus URI whose validation split is scored")
    p.add_argument(
        "--eval-bytes",
        type=int_at_least_because(MIN_EVAL_BYTES, "the evaluation scores at least 2 trigrams"),
        default=1_000_000,
        help=f"held-out bytes to score (>= {MIN_EVAL_BYTES})",
    )
    p.add_argument("--format", choices=FORMATS, default="table", help="output format")
    p.add_argument("--no-log", action="store_true", help="do not log to MLflow")
    add_common_run_arguments(p)


def _add_eval(p: argparse.ArgumentParser) -> None:
    _add_eval_common(p)
    p.add_argument(
        "--streams",
        type=int_at_least(1),
        default=8,
        help="parallel streams of the streamed regime (each needs 6 of the --eval-bytes)",
    )
    p.add_argument("--no-compressors", action="store_true", help="skip the compressor baselines")
    add_kn_arguments(p)
    p.add_argument(
        "--prime-bytes",
        type=int_at_least(0),
        default=8_000_000,
        help="train bytes that prime the compressors (the last N; 0: none)",
    )


def _run_eval(args: argparse.Namespace) -> int:
    from pipelines.aleph.evaluate import eval_checkpoint
    from pipelines.model_uri import checkpoint_arg
    from pipelines.paths import data_dir

    result = eval_checkpoint(
        checkpoint_arg(args, args.checkpoint, "CHECKPOINT"),
        args.corpus,
        data_dir(args.data_dir),
        eval_bytes=args.eval_bytes,
        prime_bytes=args.prime_bytes,
        streams=args.streams,
        compressors=not args.no_compressors,
        kn_orders=() if args.no_kn else args.kn_orders,
        log=not args.no_log,
        tracking_uri=args.tracking_uri,
    )
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        _print_eval(result)
    return 0


def _print_eval(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"held-out bits/byte: {result['bytes']:,} bytes of {result['corpus']}")
    for col in ("model", "regime", "bits/byte", "primed", "bytes scored", "dropped"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for regime in ("windowed", "streamed"):
        r = result[regime]
        scored, dropped = f"{r['bytes_scored']:,}", str(r["bytes_dropped"])
        table.add_row("AlephLM", regime, f"{r['bpb']:.4f}", "", scored, dropped)
    for row in result.get("compressors", []):
        primed = "" if row.get("primed_bpb") is None else f"{row['primed_bpb']:.4f}"
        scored = f"{row['bytes_in']:,}"
        table.add_row(row["name"], "whole", f"{row['bpb']:.4f}", primed, scored, "0")
    for row in result.get("kneser_ney", []):
        table.add_row(row["name"], "whole", "", f"{row['bpb']:.4f}", f"{row['bytes_in']:,}", "0")
    Console().print(table)


def _add_contrast(p: argparse.ArgumentParser) -> None:
    _add_eval_common(p)
    p.add_argument(
        "--ops",
        type=ablation_ops,
        default="permute,randomize,rotate",
        help=f"comma-separated ablations, of {', '.join(OPS)}",
    )
    p.add_argument("--seeds", type=int_at_least(1), default=3, help="seeds per ablation")
    p.add_argument("--scope", choices=SCOPES, default="all", help="which codebook readers")
    p.add_argument(
        "--windows", type=int_at_least(1), default=64, help="fixed held-out windows scored"
    )


def _run_contrast(args: argparse.Namespace) -> int:
    from pipelines.aleph.evaluate import contrast_checkpoint
    from pipelines.model_uri import checkpoint_arg
    from pipelines.paths import data_dir

    result, report = contrast_checkpoint(
        checkpoint_arg(args, args.checkpoint, "CHECKPOINT"),
        args.corpus,
        data_dir(args.data_dir),
        eval_bytes=args.eval_bytes,
        ops=args.ops,
        seeds=args.seeds,
        scope=args.scope,
        windows=args.windows,
        log=not args.no_log,
        tracking_uri=args.tracking_uri,
    )
    print(json.dumps(result, indent=2) if args.format == "json" else report.as_markdown())
    return 0


COMMANDS = [
    Command("train aleph", "train AlephLM on Ray Train, tracked in MLflow", _add_train, _run_train),
    Command(
        "aleph sample", "continue a prompt from an AlephLM checkpoint", _add_sample, _run_sample
    ),
    Command(
        "eval aleph",
        "held-out bits/byte of a checkpoint next to the compressors",
        _add_eval,
        _run_eval,
    ),
    Command(
        "eval contrast",
        "controller contrast of a checkpoint (permute/randomize/rotate)",
        _add_contrast,
        _run_contrast,
    ),
]
