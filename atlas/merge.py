"""The reduce side of an atlas build: hash-partitioned partials, bucket merges, stratified selection.

Why this merge and not Ray Data's ``groupby``: a generic groupby shuffles every row through the
object store and aggregates in Python-facing operators (NOTES-stack: 15-86 s for 2M keys, against
0.45 s in DuckDB). Here each map task has already counted its block, hashes every distinct gram
into one of ``P`` buckets (``atlas.keys.mix``, the same in every process and on every machine)
and writes one Arrow IPC file per (stratum, bucket). A bucket is then an independent
``GROUP BY gram`` in DuckDB over its files: the buckets run as parallel Ray tasks, scale out to a
cluster when the staging directory is on shared storage, and each bucket's memory is about
``1/P`` of the partials.

Selection: a stratum may keep ``budget`` grams (``allocate_budgets``), the ones with the largest
count (ties: smaller gram bytes first) among those seen at least ``min_count`` times. Each bucket
keeps at most ``limit`` of its own candidates in that order, which cannot lose a globally
selected gram as long as ``limit`` >= the budget; the final per-stratum pass sorts the union
once in DuckDB and numbers the rows (``rank``). That sort is the one step that does not scale
out: its cost grows with the kept grams (~1.5 s per 5M word grams here), not with the corpus.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.parquet as pq

from atlas import heap
from atlas.config import STRATA, AtlasConfig
from atlas.extract import BlockCounts, count_arrow
from atlas.keys import binary_buffers

OUTPUT_SCHEMA = pa.schema(
    [
        ("gram", pa.binary()),
        ("text", pa.string()),
        ("n", pa.int8()),
        ("count", pa.int64()),
        ("doc_freq", pa.int64()),
        ("rank", pa.int64()),
    ]
)
_ROW_GROUP = 128 * 1024


def _duckdb(threads: int | None = None):
    import duckdb  # lazy: only the build's tasks need it

    config = {} if threads is None else {"threads": str(threads)}
    return duckdb.connect(config=config)


def _sql_path(path: Path | str) -> str:
    """``path`` as a SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def write_partials(counts: BlockCounts, root: Path, block_id: str) -> int:
    """Write one block's counts as ``root/stratum=S/bucket=B/block-ID.arrow``; returns the rows.

    The extractors already grouped each order's grams by bucket, so a bucket's file is a few
    zero-copy slices. Files are written uncompressed (Arrow IPC): lz4 would shrink the scratch
    space ~3x but cost ~25 % of a map task. They appear under their final name only when
    complete (write, then rename), and the name depends only on the block, so a retried task
    overwrites its files instead of adding more.
    """
    rows = 0
    for stratum, table in counts.strata.items():
        slices: dict[int, list[pa.RecordBatch]] = {}
        for batch in table.to_batches():
            buckets = batch.column("bucket").to_numpy()
            starts = (
                np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]]) if len(buckets) else []
            )
            ends = [*starts[1:], len(buckets)]
            for start, end in zip(starts, ends):
                slices.setdefault(int(buckets[start]), []).append(batch.slice(start, end - start))
        for bucket, parts in slices.items():
            path = root / f"stratum={stratum}" / f"bucket={bucket}" / f"block-{block_id}.arrow"
            path.parent.mkdir(parents=True, exist_ok=True)
            part = pa.Table.from_batches(parts).drop_columns(["bucket"])
            feather.write_feather(part, f"{path}.tmp", compression="uncompressed")
            os.replace(f"{path}.tmp", path)
        rows += table.num_rows
    return rows


def _limit_arrow_threads() -> None:
    """One Arrow compute thread per map task: Ray runs one task per CPU, and Arrow's default pool
    (one thread per core in every task) oversubscribes the cores (measured: 20 MB map phase
    2.82 s -> 2.29 s on 2 CPUs)."""
    if pa.cpu_count() != 1:
        pa.set_cpu_count(1)


def warm_up() -> None:
    """A no-op task that loads what ``count_shard`` and ``merge_bucket`` need (see build)."""
    import duckdb  # noqa: F401  (the merge's tasks run in the same worker processes)
    import ray.data  # noqa: F401  (the map's tasks run inside Ray Data's task wrapper)

    _limit_arrow_threads()


def count_shard(row: dict, cfg: AtlasConfig, root: str, partitions: int) -> dict:
    """The map task of a build: count one staged block (a Parquet shard), write its partials.

    ``row`` is ``{"shard": path, "block": index}``; returns the block's statistics. The partial
    files are named by the block index, so a retried task rewrites them instead of adding more.
    """
    _limit_arrow_threads()
    heap.keep()
    try:
        return _count_shard(row, cfg, Path(root), partitions)
    finally:
        heap.release()  # the block's arrays are gone with _count_shard's frame


def _count_shard(row: dict, cfg: AtlasConfig, root: Path, partitions: int) -> dict:
    started = time.perf_counter()
    docs = pq.read_table(row["shard"], columns=["doc"]).column("doc")
    counts = count_arrow(docs, cfg, partitions)
    counted = time.perf_counter()
    rows = write_partials(counts, root, f"{int(row['block']):06d}")
    return {
        "block": int(row["block"]),
        "n_docs": counts.n_docs,
        "n_bytes": counts.n_bytes,
        "unicode_invalid_bytes": counts.unicode_invalid_bytes,
        "rows": rows,
        "count_seconds": counted - started,
        "write_seconds": time.perf_counter() - counted,
    }


def merge_bucket(bucket_dir: Path, out_path: Path, min_count: int, limit: int) -> dict:
    """Sum one bucket's partials by gram; write candidates (count >= min_count, best ``limit``).

    Returns ``distinct`` and ``tokens`` (sum of counts) over all of the bucket's grams, and
    ``candidates`` (how many reach ``min_count``, before ``limit``).
    """
    files = sorted(Path(bucket_dir).glob("*.arrow"))
    if not files:
        return {"distinct": 0, "tokens": 0, "candidates": 0}
    partials = pa.concat_tables([feather.read_table(f, memory_map=True) for f in files])
    con = _duckdb(threads=1)  # one bucket task per CPU
    con.register("partials", partials)
    # n is a function of the gram; grouping by it too is faster than any_value(n).
    merged = (
        con.sql(
            "SELECT gram, n, sum(count)::BIGINT AS count, sum(doc_freq)::BIGINT AS doc_freq "
            "FROM partials GROUP BY gram, n"
        )
        .arrow()
        .read_all()
    )
    counts = merged.column("count")
    tokens = pc.sum(counts).as_py() or 0
    candidates = merged.filter(pc.greater_equal(counts, min_count))
    found = candidates.num_rows
    if found > limit:
        candidates = (
            con.sql(
                f"SELECT * FROM candidates ORDER BY count DESC, gram, doc_freq, n LIMIT {int(limit)}"
            )
            .arrow()
            .read_all()
        )
    con.close()
    pq.write_table(candidates, out_path, compression="none")
    return {"distinct": merged.num_rows, "tokens": int(tokens), "candidates": found}


def allocate_budgets(target: int, quotas: dict[str, float], available: dict[str, int]) -> dict:
    """Entries each stratum may keep: its quota of ``target``, with unused shares handed on.

    A stratum with fewer candidates than its share keeps them all; what it leaves is split among
    the remaining strata in proportion to their quotas (repeated until no share is unused).
    Shares are rounded by largest remainder, so the budgets add up to ``target`` whenever there
    are enough candidates. A quota of 0 keeps nothing.
    """
    budgets = {s: 0 for s in quotas}
    active = [s for s in quotas if quotas[s] > 0]
    left = target
    while active:
        total = sum(quotas[s] for s in active)
        shares = {s: left * quotas[s] / total for s in active}
        short = [s for s in active if available[s] <= shares[s]]
        if not short:
            budgets.update({s: math.floor(shares[s]) for s in active})
            spare = left - sum(budgets[s] for s in active)
            # available > share here, so one more entry never exceeds a stratum's candidates.
            by_remainder = sorted(active, key=lambda s: budgets[s] - shares[s])
            for s in by_remainder[:spare]:
                budgets[s] += 1
            break
        for s in short:
            budgets[s] = available[s]
            left -= available[s]
            active.remove(s)
    return budgets


def write_stratum(candidate_files: list[Path], out_path: Path, budget: int, available: int) -> dict:
    """Rank a stratum's ``available`` candidates, keep the best ``budget``, write them.

    Returns ``kept`` and ``tokens_kept``. An empty stratum still gets an (empty) file, so that
    every stratum's partition exists.
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    kept = tokens = 0
    with pq.ParquetWriter(out_path, OUTPUT_SCHEMA, use_dictionary=["n"]) as writer:
        if candidate_files and budget > 0:
            con = _duckdb()
            files = ", ".join(_sql_path(f) for f in candidate_files)
            # One sort; the rank is the position in its output (a window would sort again).
            # doc_freq and n cannot change the order (grams are unique) but sorting on them too
            # halves DuckDB's time: it sorts key-only rows much faster than rows with payload.
            limit = f"LIMIT {int(budget)}" if budget < available else ""
            reader = con.sql(
                f"SELECT gram, n, count, doc_freq FROM read_parquet([{files}]) "
                f"ORDER BY count DESC, gram, doc_freq, n {limit}"
            ).arrow()
            for batch in reader:
                table = _output_batch(batch, first_rank=kept + 1)
                writer.write_table(table, row_group_size=_ROW_GROUP)
                kept += table.num_rows
                tokens += int(pc.sum(table.column("count")).as_py() or 0)
            con.close()
        else:
            writer.write_table(OUTPUT_SCHEMA.empty_table())
    return {"kept": kept, "tokens_kept": tokens}


def _output_batch(batch: pa.RecordBatch, first_rank: int) -> pa.Table:
    grams = batch.column("gram").cast(pa.binary())
    ranks = np.arange(first_rank, first_rank + batch.num_rows, dtype=np.int64)
    columns = {
        "gram": grams,
        "text": gram_text(grams),
        "n": batch.column("n").cast(pa.int8()),
        "count": batch.column("count").cast(pa.int64()),
        "doc_freq": batch.column("doc_freq").cast(pa.int64()),
        "rank": pa.array(ranks),
    }
    return pa.Table.from_pydict(columns, schema=OUTPUT_SCHEMA)


def gram_text(grams: pa.Array) -> pa.Array:
    """Each gram decoded as UTF-8 with ``errors="backslashreplace"`` (a ``string`` array).

    Valid grams are reinterpreted in place; only the invalid ones go through Python's decoder.
    """
    grams = grams.cast(pa.large_binary())
    invalid = invalid_utf8(grams)
    if invalid.any():
        bad = grams.filter(pa.array(invalid)).to_pylist()
        fixed = [g.decode("utf-8", errors="backslashreplace").encode() for g in bad]
        grams = pc.replace_with_mask(grams, pa.array(invalid), pa.array(fixed, pa.large_binary()))
    return grams.cast(pa.large_string()).cast(pa.string())


def invalid_utf8(values: pa.Array) -> np.ndarray:
    """``bool[len(values)]``: which values of a (large_)binary array are not valid UTF-8.

    All values are decoded in one call, each after a NUL (ASCII, so no sequence runs across two
    values); the invalid bytes (surrogate-escaped) are mapped back to their value by position.
    """
    offsets, data = binary_buffers(values)
    n = len(values)
    mask = np.zeros(n, dtype=bool)
    if not (data >= 0x80).any():
        return mask
    sep = np.insert(data, offsets[:-1], 0)
    text = sep.tobytes().decode("utf-8", errors="surrogateescape")
    cp = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
    escaped = (cp >= 0xDC80) & (cp <= 0xDCFF)
    if not escaped.any():
        return mask
    width = 1 + (cp >= 0x80).astype(np.int64) + (cp >= 0x800) + (cp >= 0x10000)
    width[escaped] = 1
    byte_pos = (np.cumsum(width) - width)[escaped]
    mask[np.searchsorted(offsets[:-1] + np.arange(n), byte_pos, side="right") - 1] = True
    return mask


def stratum_dirs(root: Path) -> dict[str, list[Path]]:
    """``{stratum: [bucket directories]}`` under a partials root."""
    return {s: sorted((root / f"stratum={s}").glob("bucket=*")) for s in STRATA}
