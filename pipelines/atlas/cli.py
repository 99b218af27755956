"""``geolip atlas build`` (count a corpus split into the stratified n-gram atlas, ``atlas.build``)
and ``geolip bank build|stats`` (cut a trigram bank from an atlas). ``geolip atlas query|stats``
live in ``pipelines.atlas.query``.
"""

from __future__ import annotations

import argparse
import json
import math
import time

from atlas.config import AtlasConfig, parse_quotas, parse_size
from pipelines.atlas.query import json_value, print_table
from pipelines.cli import Command, add_common_run_arguments, int_at_least
from pipelines.paths import check_dir_path, check_file_path

SIZE_UNITS = "k, M, G = x1000 and Ki, Mi, Gi = x1024: 64k = 64000, 64Ki = 65536"
_DEFAULTS = AtlasConfig()
_DEFAULT_QUOTAS = ",".join(f"{stratum}={share:g}" for stratum, share in _DEFAULTS.quotas.items())


def size_flag(text: str) -> int:
    """An argparse ``type`` for sizes: ``8192``, ``8k`` (8,000) or ``8Ki`` (8,192)."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def fraction_flag(text: str) -> float:
    """An argparse ``type`` for a held-out fraction: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not (math.isfinite(value) and 0 <= value < 1):
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


def atlas_quotas_flag(text: str) -> dict[str, float]:
    """An argparse ``type`` for ``atlas build --quotas``: all three strata, shares summing to 1."""
    try:
        quotas = parse_quotas(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    for stratum, share in quotas.items():
        if not 0 <= share <= 1:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{stratum}={share:g} is not a share in [0, 1]")
    total = sum(quotas.values())
    if abs(total - 1) > 1e-6:
        raise argparse.ArgumentTypeError(f"quotas must sum to 1, got {text!r} (sum {total:g})")
    return quotas


def _add_build(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--corpus", required=True, help="corpus URI: builtin:NAME, file:PATH_OR_GLOB, hf:"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="atlas directory to create")
    p.add_argument(
        "--target-size",
        type=size_flag,
        default="12.9M",
        help=f"entries to keep over all strata, e.g. 12.9M or 500k ({SIZE_UNITS})",
    )
    p.add_argument(
        "--cpus",
        type=int_at_least(1),
        default=None,
        help="logical CPUs of a local Ray (default: the machine's cores)",
    )
    p.add_argument(
        "--split",
        default="train",
        choices=("train", "validation"),
        help="which side of the corpus to count",
    )
    p.add_argument(
        "--heldout-fraction",
        type=fraction_flag,
        default=None,
        help=f"validation share, in [0, 1) (default {_DEFAULTS.heldout_fraction:g})",
    )
    p.add_argument(
        "--min-count",
        type=int_at_least(1),
        default=2,
        help="keep grams seen at least this often",
    )
    p.add_argument(
        "--quotas",
        type=atlas_quotas_flag,
        default=None,
        help=f"shares of the target, all three, summing to 1 (default {_DEFAULT_QUOTAS})",
    )
    p.add_argument(
        "--block-bytes",
        type=size_flag,
        default=None,
        help=f"bytes of documents per map task (default {_DEFAULTS.block_bytes >> 20}Mi = "
        f"{_DEFAULTS.block_bytes}; {SIZE_UNITS})",
    )
    p.add_argument(
        "--partitions", type=int_at_least(1), default=None, help="merge buckets per stratum"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing atlas in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress and no summary table")
    add_common_run_arguments(p)  # a store named here records the build (geolip-data)


def config_from_args(args: argparse.Namespace):
    """The ``AtlasConfig`` the flags describe (each flag was checked by its argparse ``type``)."""
    changes: dict = {
        "split": args.split,
        "min_count": args.min_count,
        "target_size": args.target_size,
    }
    if args.quotas is not None:
        changes.update({f"quota_{stratum}": share for stratum, share in args.quotas.items()})
    optional = {
        "block_bytes": args.block_bytes,
        "heldout_fraction": args.heldout_fraction,
        "partitions": args.partitions,
    }
    changes.update({k: v for k, v in optional.items() if v is not None})
    return _flag("the atlas config", lambda c: AtlasConfig(**c), changes)


def _flag(name: str, parse, value):
    """``parse(value)``, a ``ValueError`` prefixed with the flag's ``name``."""
    try:
        return parse(value)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def _start_ray(cpus: int | None) -> None:
    """The pipelines' one Ray start policy (imported here: it is only needed once checks pass)."""
    from pipelines.runtime import init_ray

    init_ray(cpus=cpus)


def _run_build(args: argparse.Namespace) -> int:
    """Check --out, the flags and (in ``build_atlas``) the corpus, then start Ray and build."""
    from atlas.build import build_atlas  # cheap to import: pyarrow and Ray load on use
    from pipelines.storage import check_root, is_uri

    if is_uri(args.out):  # an object store: probed (endpoint, bucket, key) before any work
        from pipelines.atlas.remote import build_atlas_at

        build, out = build_atlas_at, check_root(args.out, "--out")
    else:
        build, out = build_atlas, check_dir_path(args.out, "--out")
    result = build(
        args.corpus,
        out,
        config_from_args(args),
        overwrite=args.overwrite,
        init_ray=lambda: _start_ray(args.cpus),
        progress=not args.quiet,
    )
    if not is_uri(args.out):
        from pipelines.lineage import atlas_input

        _record(args, lambda: [atlas_input(result.path)])
    return 0


def _record(args: argparse.Namespace, items) -> None:
    """The build as a run of ``geolip-data``, when the command names a store."""
    from pipelines.lineage import DATA_EXPERIMENT, record_named_store

    if (run_id := record_named_store(args.tracking_uri, args.data_dir, items)) is not None:
        print(f"recorded in MLflow: run {run_id} of experiment {DATA_EXPERIMENT}")


def _build_interrupted(args: argparse.Namespace) -> str:
    return (
        f"nothing was written to {args.out} (its staging directory was removed); "
        "run the same command again to build the atlas"
    )


def _add_bank_build(p: argparse.ArgumentParser) -> None:
    p.add_argument("--atlas", required=True, metavar="DIR", help="atlas of the training split")
    p.add_argument(
        "--size",
        required=True,
        type=size_flag,
        help=f"rows N of the bank, e.g. 8192, 8Ki or 64k ({SIZE_UNITS}, as in every size flag)",
    )
    p.add_argument(
        "--quotas",
        default=None,
        help="per-stratum fractions summing to 1 (default char=0.6,word=0.3,unicode=0.1)",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="bank file (.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing FILE")
    p.add_argument(
        "--allow-split", action="store_true", help="accept an atlas of a non-train split"
    )
    add_common_run_arguments(p)  # a store named here records the build (geolip-data)


def _run_bank_build(args: argparse.Namespace) -> int:
    """Check --out and --quotas, cut the bank, write it atomically and print its table."""
    out = check_file_path(args.out, "--out")
    if out.exists() and not args.overwrite:  # fail before the (possibly long) build
        raise FileExistsError(f"--out {out} already exists (pass --overwrite to replace it)")
    from atlas.bank import build_bank, parse_quotas, save_bank_file
    from pipelines.storage import is_uri, readable

    quotas = _flag("--quotas", parse_quotas, args.quotas)
    start = time.perf_counter()
    trigrams, log_prior, provenance = build_bank(
        readable(args.atlas, "--atlas"), args.size, quotas, allow_split=args.allow_split
    )
    if is_uri(args.atlas):  # the URI, not the local cache copy it was read from
        provenance["atlas"] = args.atlas
    save_bank_file(out, trigrams, log_prior, provenance, overwrite=args.overwrite)
    contributions = provenance["contributions"]
    rows = [
        [name, c["quota_rows"], c["distinct_trigrams"], c["taken"], c["new"]]
        for name, c in contributions.items()
        if name != "backfill"
    ]
    rows.append(["backfill", "", "", "", contributions["backfill"]])
    title = f"bank {out}: {len(trigrams)} trigrams in {time.perf_counter() - start:.1f} s"
    print_table(title, ["stratum", "quota rows", "distinct", "taken", "new rows"], rows)
    if not is_uri(args.atlas):
        from pipelines.lineage import bank_lineage

        _record(args, lambda: bank_lineage(out))
    return 0


def _add_bank_stats(p: argparse.ArgumentParser) -> None:
    p.add_argument("bank", metavar="FILE", help="bank file (.safetensors)")
    p.add_argument("--corpus", default=None, help="corpus URI to measure coverage on")
    p.add_argument(
        "--split",
        default="validation",
        choices=("train", "validation"),
        help="the corpus side the coverage is measured on",
    )
    p.add_argument(
        "--heldout",
        type=fraction_flag,
        default=None,
        help="held-out fraction of the corpus split (default: the bank's atlas's)",
    )
    p.add_argument("--top", type=int_at_least(0), default=10, help="top trigrams shown")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")


def _run_bank_stats(args: argparse.Namespace) -> int:
    """Read the bank (and measure its coverage on --corpus); print a table or JSON."""
    from atlas.bank import bank_coverage, bank_summary

    summary = bank_summary(args.bank, top=args.top)
    if args.corpus:
        summary["coverage"] = bank_coverage(args.bank, args.corpus, args.split, args.heldout)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, default=json_value, indent=1))
        return 0
    prov = summary["provenance"]
    rows = [
        ["size", summary["size"]],
        ["atlas", prov.get("atlas")],
        ["corpus", json.dumps(prov.get("corpus"))],
        ["quotas", json.dumps(prov.get("quotas"))],
        ["prior entropy (bits)", summary["prior_entropy_bits"]],
        ["prior mass", summary["prior_mass"]],
    ]
    cov = summary.get("coverage")
    if cov:
        where = f"{cov['corpus']['uri']} ({cov['corpus']['split']})"
        rows += [
            ["coverage on", where],
            ["trigrams (phase 0)", cov["n_trigrams"]],
            ["in bank", f"{cov['in_bank']} ({cov['coverage']:.2%})"],
            ["distinct", f"{cov['distinct_trigrams']}, in bank {cov['distinct_coverage']:.2%}"],
        ]
    print_table(f"bank {args.bank}", ["", "value"], rows)
    top = [[i + 1, g, p] for i, (g, p) in enumerate(summary["top"])]
    print_table("top trigrams by prior", ["#", "trigram", "log prior"], top)
    return 0


COMMANDS = [
    Command(
        "atlas build",
        "count a corpus split into the stratified n-gram atlas (Ray Data + DuckDB)",
        _add_build,
        _run_build,
        interrupted=_build_interrupted,
    ),
    Command("bank build", "cut a trigram bank from an atlas", _add_bank_build, _run_bank_build),
    Command("bank stats", "size, prior and coverage of a bank", _add_bank_stats, _run_bank_stats),
]
