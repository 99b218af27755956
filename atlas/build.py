"""``build_atlas``: the Ray Data job that turns one side of a corpus into a stratified n-gram atlas.

Phases (their seconds are recorded in the manifest under ``phases``):

1. **stage** — the driver streams the split's documents (``atlas.corpus.iter_split``) into Parquet
   shards of about ``block_bytes`` each, hashing the bytes on the way (the corpus fingerprint,
   equal to ``corpus_bytes``'). The driver holds one block at a time, and a Parquet directory is
   an input every node of a cluster can read when the staging directory is on shared storage.
2. **map** — a Ray Data dataset of the shards, ``.map(count_shard)``: one task per block reads
   its shard, the vectorised extractors (``atlas.extract``) count all strata, and the counts are
   written as hash-partitioned partials (``atlas.merge.write_partials``). Documents never span
   two blocks, so per-block document frequencies simply add up.
3. **merge** — one Ray task per (stratum, bucket) sums its partials with DuckDB; ``atlas.merge``
   says why this beats Ray Data's generic groupby and how it scales out.
4. **select** — budgets per stratum (quotas of ``target_size``, unused shares handed on), then
   rank and write ``grams/stratum=S/part-0.parquet``.
5. **publish** — ``manifest.json`` is written last, then the staging directory
   ``DIR.tmp-XXXXXXXX`` is renamed to ``DIR``. Any failure removes the staging directory, so
   ``DIR`` is always absent, the complete old atlas, or the complete new one.

An atlas directory holds ``manifest.json`` and ``grams/stratum=<char|word|unicode>/part-*.parquet``
with columns ``gram`` (binary), ``text`` (string, backslash-escaped where not UTF-8), ``n`` (int8),
``count``, ``doc_freq`` and ``rank`` (int64; 1 = most frequent in its stratum, ties by gram bytes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from atlas.config import STRATA, AtlasConfig
from atlas.corpus import CorpusError, SplitStats, encode_text, iter_split, parse_uri
from atlas.progress import Reporter, summary_table

# pyarrow, atlas.merge (numpy, pandas) and atlas.ray_session are imported where they are used:
# importing this module stays cheap (~0.1 s), so that every check before Ray starts also
# finishes in about a second.

FORMAT = "geolip-atlas/1"
__all__ = ["FORMAT", "BuildResult", "build_atlas", "summary_table"]


@dataclass(frozen=True)
class BuildResult:
    """Where the atlas is, its manifest, and whether it was already there (nothing rebuilt)."""

    path: Path
    manifest: dict
    already_built: bool


def build_atlas(
    corpus_uri: str,
    out_dir: str | os.PathLike,
    cfg: AtlasConfig | None = None,
    *,
    overwrite: bool = False,
    init_ray: Callable[[], None] | None = None,
    progress: bool = True,
    shown_as: str | None = None,
) -> BuildResult:
    """Build the atlas of ``corpus_uri`` (its ``cfg.split`` side) into ``out_dir``.

    An atlas already in ``out_dir`` with the same config hash and corpus fingerprint is returned
    as is (``already_built``); any other existing directory raises ``FileExistsError`` unless
    ``overwrite``. ``init_ray`` starts Ray when it is not running (the pipelines pass their one
    start policy, ``pipelines.runtime.init_ray``); without it Ray must be running already.
    Corpus problems raise ``CorpusError`` (a ``ValueError``). ``shown_as`` names ``out`` in
    messages (the ``s3://`` URI an atlas staged here for upload is published to).

    """
    cfg = AtlasConfig() if cfg is None else cfg
    out = Path(out_dir).expanduser().resolve()  # workers run elsewhere: paths must be absolute
    _check_out(out)
    existing = _existing_atlas(out, cfg, overwrite)
    # Everything that needs no cluster is checked before Ray starts (~20 s on a small machine).
    first_document(corpus_uri, cfg)
    report = Reporter(progress)
    if existing is not None:
        return _already_built(corpus_uri, out, cfg, existing, report, shown_as or str(out))
    missing_parents = [p for p in reversed(out.parents) if not p.exists()]
    staging = out.parent / f"{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    try:
        staging.mkdir(parents=True)
        phases: dict[str, float] = {}
        from atlas.ray_session import start_ray, warm_up_cluster

        # Ray first, so that its workers load the map's code while the driver stages.
        _, phases["ray_start"] = _timed(start_ray, init_ray)
        warm_up_cluster()
        corpus, phases["stage"] = _timed(
            _stage_documents, corpus_uri, cfg, staging / "docs", report
        )
        manifest = _build(staging, corpus, cfg, report, phases)
        manifest["build_seconds"] = round(time.perf_counter() - started, 3)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in reversed(missing_parents):  # deepest first; only the ones we created
            _remove_empty(parent)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.table(summary_table(manifest))
    return BuildResult(out, manifest, already_built=False)


def _already_built(
    uri: str, out: Path, cfg: AtlasConfig, existing: dict, report: Reporter, shown: str
) -> BuildResult:
    """The atlas at ``out`` (same config) if it counts the same text; else ``FileExistsError``.

    The split is hashed as it streams, with nothing written and no Ray: the refusal is the
    command's only output.
    """
    found = _split_fingerprint(uri, cfg)
    if existing["corpus"]["fingerprint"] != found:
        raise FileExistsError(
            f"{shown} holds an atlas of other corpus data (fingerprint "
            f"{existing['corpus']['fingerprint']}, now {found}); pass --overwrite to replace it"
        )
    report.line(f"already built: {shown} (config {cfg.config_hash()})")
    report.table(summary_table(existing))
    return BuildResult(out, existing, already_built=True)


def _split_fingerprint(uri: str, cfg: AtlasConfig) -> str:
    """The fingerprint ``_stage_documents`` records: sha256 of the split's bytes, 16 digits."""
    digest = hashlib.sha256()
    for doc in iter_split(uri, cfg.split, cfg.heldout_fraction):
        digest.update(encode_text(doc.text))
    return digest.hexdigest()[:16]


def first_document(uri: str, cfg: AtlasConfig) -> None:
    """Read the split up to its first document: a malformed URI, a missing file, a glob that
    matches nothing, an empty file or directory raise ``CorpusError`` now, not after Ray starts.
    """
    if next(iter(iter_split(uri, cfg.split, cfg.heldout_fraction)), None) is None:
        raise CorpusError(f"corpus {uri!r} has no documents in its {cfg.split!r} split")


def _check_out(out: Path) -> None:
    """Refuse an ``out`` that is, or lies under, a regular file (before anything is written)."""
    for candidate in (out, *out.parents):
        if candidate.exists():
            if not candidate.is_dir():
                where = "is" if candidate == out else f"lies under {candidate}, which is"
                raise FileExistsError(
                    f"atlas output {out} {where} a regular file; expected a directory"
                )
            return


def _existing_atlas(out: Path, cfg: AtlasConfig, overwrite: bool) -> dict | None:
    """The manifest of an atlas at ``out`` built with ``cfg`` (None: nothing there or replacing).

    Refuses, even with ``overwrite``, to replace a non-empty directory that is not an atlas.
    """
    if not out.exists():
        return None
    manifest = _read_manifest(out / "manifest.json")
    if manifest is None:
        if out.is_dir() and not any(out.iterdir()):
            return None
        raise FileExistsError(f"{out} exists and is not an atlas; choose another --out")
    if overwrite:
        return None
    if manifest.get("config_hash") != cfg.config_hash():
        raise FileExistsError(
            f"{out} holds an atlas built with another config (hash {manifest.get('config_hash')}, "
            f"this build {cfg.config_hash()}); pass --overwrite to replace it"
        )
    return manifest


def _read_manifest(path: Path) -> dict | None:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def _stage_documents(uri: str, cfg: AtlasConfig, docs_dir: Path, report: Reporter) -> dict:
    """Write the split as Parquet shards (``doc`` bytes, ``doc_index``); return its record."""
    docs_dir.mkdir(parents=True)
    stats, digest = SplitStats(), hashlib.sha256()
    pending: list[bytes] = []
    n_docs = n_bytes = pending_bytes = shards = 0
    for doc in iter_split(uri, cfg.split, cfg.heldout_fraction, stats):
        data = encode_text(doc.text)
        digest.update(data)
        pending.append(data)
        n_docs, n_bytes, pending_bytes = n_docs + 1, n_bytes + len(data), pending_bytes + len(data)
        if pending_bytes >= cfg.block_bytes:
            _write_shard(docs_dir, shards, pending, n_docs - len(pending))
            pending, pending_bytes, shards = [], 0, shards + 1
    if pending:
        _write_shard(docs_dir, shards, pending, n_docs - len(pending))
        shards += 1
    if n_docs == 0:
        raise CorpusError(f"corpus {uri!r} has no documents in its {cfg.split!r} split")
    corpus = {
        "uri": str(parse_uri(uri)),
        "split": cfg.split,
        "fingerprint": digest.hexdigest()[:16],
        "n_docs": n_docs,
        "n_bytes": n_bytes,
        "heldout_fraction": cfg.heldout_fraction,
        "split_mode": stats.mode,
        "blocks": shards,
    }
    report.line(f"staged {n_docs:,} documents, {n_bytes / 1e6:.1f} MB in {shards} blocks")
    return corpus


def _write_shard(docs_dir: Path, shard: int, docs: list[bytes], first_index: int) -> None:
    """One staged block: its documents' bytes and their indices in the split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "doc": pa.array(docs, pa.large_binary()),
            "doc_index": pa.array(range(first_index, first_index + len(docs)), pa.int64()),
        }
    )
    pq.write_table(table, docs_dir / _shard_name(shard), compression="none")


def _shard_name(shard: int) -> str:
    return f"shard-{shard:06d}.parquet"


def _build(staging: Path, corpus: dict, cfg: AtlasConfig, report: Reporter, phases) -> dict:
    """Map, merge and select into ``staging/grams``; return the manifest (without the total).

    Ray is running already (``build_atlas`` starts it before staging).
    """
    import ray

    partitions = cfg.partitions or 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    blocks, phases["map"] = _timed(
        _run_map, staging / "docs", corpus["blocks"], staging / "partials", cfg, partitions, report
    )
    if sum(b["n_docs"] for b in blocks) != corpus["n_docs"]:
        raise RuntimeError("the map phase lost or repeated documents; partial counts discarded")
    merged, phases["merge"] = _timed(_run_merge, staging, cfg, report)
    strata, phases["select"] = _timed(_select, staging, merged, cfg, report)
    return {
        "format": FORMAT,
        "corpus": corpus,
        "config": cfg.to_dict(),
        "config_hash": cfg.config_hash(),
        "strata": strata,
        "unicode_invalid_bytes": sum(b["unicode_invalid_bytes"] for b in blocks),
        "partitions": partitions,
        "phases": phases,
        # Summed over map tasks: against phases["map"] x CPUs, how well the map phase overlapped.
        "map_tasks": {
            "count_seconds": round(sum(b["count_seconds"] for b in blocks), 3),
            "write_seconds": round(sum(b["write_seconds"] for b in blocks), 3),
            "partial_rows": sum(b["rows"] for b in blocks),
        },
        "versions": _versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, round(time.perf_counter() - started, 3)


def _run_map(
    docs: Path, n_blocks: int, partials: Path, cfg: AtlasConfig, partitions: int, report: Reporter
) -> list[dict]:
    """One Ray Data task per staged block (``count_shard``); the blocks' statistics."""
    import ray.data

    from atlas.merge import count_shard
    from atlas.ray_session import data_context

    report.line(f"map: counting {n_blocks} blocks into {partitions} buckets per stratum")
    # Items name the shards rather than hold the text: each task reads its own block, so the
    # driver never holds the corpus (read_parquet would do the same, with ~2 s more overhead).
    shards = [{"shard": str(docs / _shard_name(i)), "block": i} for i in range(n_blocks)]
    # A dataset copies the context when it is created: set it first.
    with data_context(report.enabled):
        dataset = ray.data.from_items(shards, override_num_blocks=n_blocks)
        counted = dataset.map(
            count_shard, fn_kwargs={"cfg": cfg, "root": str(partials), "partitions": partitions}
        )
        return sorted(counted.take_all(), key=lambda b: b["block"])


def _run_merge(staging: Path, cfg: AtlasConfig, report: Reporter) -> dict[str, dict]:
    """Merge every (stratum, bucket) as its own Ray task; per-stratum totals and candidates."""
    import ray

    from atlas.merge import merge_bucket, stratum_dirs

    remote = ray.remote(num_cpus=1)(merge_bucket)
    jobs = []
    for stratum, dirs in stratum_dirs(staging / "partials").items():
        for bucket_dir in dirs:
            out = staging / "candidates" / f"stratum={stratum}" / f"{bucket_dir.name}.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            # No bucket needs more candidates than the largest budget a stratum can get.
            ref = remote.remote(bucket_dir, out, cfg.min_count, cfg.target_size)
            jobs.append((stratum, out, ref))
    results = report.track([ref for _, _, ref in jobs], "merge")
    merged = {s: {"distinct": 0, "tokens": 0, "candidates": 0, "files": []} for s in STRATA}
    for (stratum, out, _), result in zip(jobs, results):
        for key in ("distinct", "tokens", "candidates"):
            merged[stratum][key] += result[key]
        if result["candidates"]:
            merged[stratum]["files"].append(out)
    return merged


def _select(staging: Path, merged: dict, cfg: AtlasConfig, report: Reporter) -> dict:
    """Budgets per stratum, then each stratum's kept grams ranked into ``grams/``; its record."""
    from atlas.merge import allocate_budgets, write_stratum

    available = {s: merged[s]["candidates"] for s in STRATA}
    budgets = allocate_budgets(cfg.target_size, cfg.quotas, available)
    report.line("select: " + ", ".join(f"{s} {budgets[s]:,}" for s in STRATA))
    strata = {}
    for stratum in STRATA:
        out = staging / "grams" / f"stratum={stratum}" / "part-0.parquet"
        files = merged[stratum]["files"]
        written = write_stratum(files, out, budgets[stratum], available[stratum])
        tokens = merged[stratum]["tokens"]
        strata[stratum] = {
            "orders": list(cfg.orders(stratum)),
            "distinct_total": merged[stratum]["distinct"],
            "candidates": available[stratum],
            "kept": written["kept"],
            "tokens_total": tokens,
            "tokens_kept": written["tokens_kept"],
            "coverage": written["tokens_kept"] / tokens if tokens else 0.0,
            "min_count": cfg.min_count,
            "quota": cfg.quotas[stratum],
            "budget": budgets[stratum],
        }
    return strata


def _publish(staging: Path, out: Path) -> None:
    """Move the finished atlas into place; an old one is replaced only after the new one is in."""
    for scratch in ("docs", "partials", "candidates"):
        shutil.rmtree(staging / scratch, ignore_errors=True)
    if not out.exists():
        os.replace(staging, out)
        return
    old = out.parent / f"{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove_empty(path: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: someone else put something there
        path.rmdir()


def _versions() -> dict[str, str]:
    import duckdb
    import numpy
    import pyarrow as pa
    import ray

    return {
        "python": platform.python_version(),
        "ray": ray.__version__,
        "pyarrow": pa.__version__,
        "duckdb": duckdb.__version__,
        "numpy": numpy.__version__,
    }
