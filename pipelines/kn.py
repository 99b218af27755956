"""Kneser-Ney baselines of a corpus (``geolip eval kn`` and the KN rows of every held-out table).

The model is ``atlas.kn``'s interpolated modified Kneser-Ney over byte n-grams, counted by the
atlas build (Ray Data) with the config of ``atlas.kn.kn_atlas_config``: every char gram of orders
1..N of the training split, singletons included. That atlas is built once per corpus and kept
under the data directory with the corpus' other atlases (``pipelines.atlas.corpus_atlas``:
``DATA/atlases/<shards>-<config hash>``). Orders below N are read from the same atlas, so KN-3,
KN-4 and KN-5 cost one build.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.cli import Command, add_common_run_arguments, int_at_least
from pipelines.errors import GeolipError

if TYPE_CHECKING:  # numpy and the shards load with the work, not with `geolip --help`
    import numpy as np

    from pipelines.byte_shards import ByteShards

EVAL_EXPERIMENT = "geolip-eval"

DEFAULT_ORDERS = (3, 4, 5)
"""The orders every held-out table lists: the card's "classical Kneser-Ney 5-gram" and two below."""


ATLAS_ORDER = 5
"""The orders a corpus' KN atlas counts (1..5, or up to the highest asked for): one atlas serves
every table's KN rows, whichever of the orders below it they list."""
MAX_KN_ORDER = 8
"""Bytes are packed 8 to a 64-bit key (``atlas.config.MAX_ORDER``)."""


def parse_orders(text: str) -> tuple[int, ...]:
    """``"3,4,5"`` -> ``(3, 4, 5)``; each between 1 and 8 (an argparse ``type``)."""
    try:
        orders = tuple(sorted({int(t) for t in str(text).split(",") if t.strip()}))
    except ValueError:
        orders = ()
    if not orders or not all(1 <= n <= MAX_KN_ORDER for n in orders):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated n-gram orders between 1 and {MAX_KN_ORDER}, got {text!r}"
        )
    return orders


def ensure_kn_atlas(
    corpus: str, data: Path, shards: ByteShards, order: int, progress: bool = True
) -> Path:
    """The KN atlas of ``corpus`` counting orders 1..``max(order, ATLAS_ORDER)``, under the data
    directory (``pipelines.atlas.corpus_atlas``): reused when built, else built on Ray."""
    from atlas.kn import kn_atlas_config
    from pipelines.atlas.corpus_atlas import ensure_corpus_atlas

    cfg = kn_atlas_config(max(order, ATLAS_ORDER), shards.manifest["heldout_fraction"])
    return ensure_corpus_atlas(corpus, data, shards, cfg, progress)


def kn_rows(
    corpus: str,
    data: Path,
    shards: ByteShards,
    held: np.ndarray,
    orders: Sequence[int] = DEFAULT_ORDERS,
    progress: bool = True,
) -> list[dict]:
    """One row per order: ``{"name": "KN-5", "order", "bpb", "bytes_in", "atlas"}`` on ``held``
    (``uint8[L]``, every byte scored, each with up to ``order - 1`` bytes of history)."""
    from atlas.kn import KneserNey, read_char_counts

    if len(held) == 0:
        raise GeolipError(f"corpus {corpus!r} has no held-out bytes for the KN baseline")
    top = max(orders)
    atlas = ensure_kn_atlas(corpus, data, shards, top, progress)
    counts = read_char_counts(atlas, top)
    rows = []
    for n in sorted(orders):
        model = KneserNey.from_counts({k: v for k, v in counts.items() if k <= n}, n)
        rows.append(
            {
                "name": f"KN-{n}",
                "order": n,
                "bpb": model.bpb(held),
                "bytes_in": int(len(held)),
                "atlas": str(atlas),
            }
        )
    return rows


def kn_metrics(rows: Sequence[dict], prefix: str = "eval/kn") -> dict[str, float]:
    """``{prefix}/{order}/bpb`` per row."""
    return {f"{prefix}/{row['order']}/bpb": row["bpb"] for row in rows}


def add_kn_arguments(p: argparse.ArgumentParser) -> None:
    """``--kn-orders`` and ``--no-kn``: the KN rows of a held-out table."""
    p.add_argument(
        "--kn-orders",
        type=parse_orders,
        default=DEFAULT_ORDERS,
        metavar="N,N,...",
        help="Kneser-Ney orders scored on the same bytes (built from the corpus' KN atlas once)",
    )
    p.add_argument("--no-kn", action="store_true", help="skip the Kneser-Ney baselines")


def _add_eval_kn(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", required=True, help="corpus URI: KN counts its train split")
    p.add_argument(
        "--eval-bytes",
        type=int_at_least(1),
        default=1_000_000,
        help="held-out bytes to score (the validation split's first N)",
    )
    p.add_argument(
        "--orders", type=parse_orders, default=DEFAULT_ORDERS, metavar="N,N,...", help="KN orders"
    )
    p.add_argument("--no-compressors", action="store_true", help="skip the compressor baselines")
    p.add_argument(
        "--prime-bytes",
        type=int_at_least(0),
        default=8_000_000,
        help="train bytes that prime the compressors (the last N; 0: none)",
    )
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    p.add_argument("--no-log", action="store_true", help="do not log to MLflow")
    p.add_argument("--quiet", action="store_true", help="no progress of the atlas build")
    add_common_run_arguments(p)


def eval_kn(
    corpus: str,
    data: Path,
    *,
    orders: Sequence[int] = DEFAULT_ORDERS,
    eval_bytes: int = 1_000_000,
    prime_bytes: int = 8_000_000,
    compressors: bool = True,
    log: bool = True,
    tracking_uri: str | None = None,
    progress: bool = True,
) -> dict:
    """KN bits/byte of ``orders`` on the first ``eval_bytes`` held-out bytes of ``corpus``, the
    compressors on the same bytes, logged as a ``geolip-eval`` run unless ``log`` is false."""
    from pipelines.aleph.evaluate import check_corpus, heldout_bytes
    from pipelines.byte_shards import read_side
    from pipelines.compress import compressor_baselines, results_table

    check_corpus(corpus)
    uri = _tracking(tracking_uri, data) if log else None
    held, shards = heldout_bytes(corpus, data, eval_bytes)
    result = {"corpus": corpus, "bytes": int(len(held))}
    result["kneser_ney"] = kn_rows(corpus, data, shards, held, orders, progress)
    if compressors:
        train = read_side(shards, "train")[-prime_bytes:].tobytes() if prime_bytes else None
        result["compressors"] = results_table(compressor_baselines(held.tobytes(), train))
    if uri is not None:
        result["mlflow_run_id"] = _log_kn(uri, data, result)
    return result


def _tracking(tracking_uri: str | None, data: Path) -> str:
    """The tracking URI, checked before any work (a bad store fails in a second, not after)."""
    from pipelines.tracking import check_tracking, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, data)
    check_tracking(uri)
    return uri


def _log_kn(uri: str, data: Path, result: dict) -> str:
    from pipelines.byte_shards import corpus_slug
    from pipelines.compress import row_metrics
    from pipelines.plots import bars_figure
    from pipelines.tracking import artifact_root, ensure_experiment, start_run

    experiment = ensure_experiment(uri, EVAL_EXPERIMENT, artifact_root(uri, data))
    tags = {"corpus": result["corpus"], "baseline": "kneser-ney"}
    config = {k: v for k, v in result.items() if not isinstance(v, list | dict)}
    name = f"kn-{corpus_slug(result['corpus'])}"
    logger = start_run(uri, experiment, name, tags=tags, config=config)
    metrics = kn_metrics(result["kneser_ney"]) | row_metrics(result.get("compressors", []))
    logger.log_metrics(metrics, 0)
    logger.log_dict(result, "eval_kn.json")
    rows = [{"name": r["name"], "bpb": r["bpb"]} for r in result["kneser_ney"]]
    rows += [
        {"name": c["name"], "bpb": c.get("primed_bpb") or c["bpb"]}
        for c in result.get("compressors", [])
    ]
    title = f"held-out bits/byte of {result['corpus']} ({result['bytes']:,} bytes)"
    logger.log_figure(bars_figure(rows, "name", "bpb", title=title, ylabel="bits/byte"), "kn.png")
    logger.flush()
    logger.finish()
    return logger.run_id


def _run_eval_kn(args: argparse.Namespace) -> int:
    from pipelines.paths import data_dir

    result = eval_kn(
        args.corpus,
        data_dir(args.data_dir),
        orders=args.orders,
        eval_bytes=args.eval_bytes,
        prime_bytes=args.prime_bytes,
        compressors=not args.no_compressors,
        log=not args.no_log,
        tracking_uri=args.tracking_uri,
        progress=not args.quiet,
    )
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        _print_kn(result)
    return 0


def _print_kn(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"held-out bits/byte: {result['bytes']:,} bytes of {result['corpus']}"
    table = Table(title=title)
    for col in ("model", "bits/byte", "primed"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in result["kneser_ney"]:
        table.add_row(f"{row['name']} (interpolated modified Kneser-Ney)", "", f"{row['bpb']:.4f}")
    for row in result.get("compressors", []):
        primed = "" if row.get("primed_bpb") is None else f"{row['primed_bpb']:.4f}"
        table.add_row(row["name"], f"{row['bpb']:.4f}", primed)
    Console().print(table)


COMMANDS = [
    Command(
        "eval kn",
        "Kneser-Ney byte n-gram baselines of a corpus next to the compressors",
        _add_eval_kn,
        _run_eval_kn,
    )
]
