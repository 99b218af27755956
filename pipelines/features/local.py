"""The in-process engine of ``extract_features``, and the choice between it and Ray Data.

On one machine a Ray Data actor pool costs a process start, the imports of torch and
transformers and a model load before its first batch (~6 s on 2 cores, 11 s on a fresh Ray):
more than encoding the demo's 563 sentences takes (~3.6 s). The local engine runs the same
``HostEncoder`` batches in the calling process and writes the same shards, so ``auto`` uses it
where Ray would only add that start-up: a request of at most ``LOCAL_MAX_SENTENCES`` sentences
when no cluster is configured (no ``RAY_ADDRESS``) and Ray, if running, is one node. Everything
else (a cluster, GPU workers elsewhere, a long job that wants Ray's scheduling) runs on Ray Data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import progress as bars

ENGINES = ("auto", "local", "ray")
# [proposed] Where Ray Data's start-up stops dominating: ~10x the sentences it costs (2 cores).
LOCAL_MAX_SENTENCES = 20_000
# Rows per Parquet row group: bounded memory whatever the request's size.
ROWS_PER_FLUSH = 32_768


def choose_engine(engine: str, n_sentences: int) -> str:
    """``local`` or ``ray`` for ``engine`` (one of ``ENGINES``) and a request of ``n_sentences``."""
    if engine != "auto":
        return engine
    if n_sentences > LOCAL_MAX_SENTENCES or os.environ.get("RAY_ADDRESS"):
        return "ray"
    import ray

    # A Ray already running (the demo's) may span machines whose GPUs the pool would use.
    if ray.is_initialized() and len([n for n in ray.nodes() if n.get("Alive")]) > 1:
        return "ray"
    return "local"


def encode_local(encoder_cls, encoder_kwargs: dict, sentences: dict, staging: Path, batch: int):
    """Encode each side's ``{document, sentence, text}`` rows with ``encoder_cls(**kwargs)`` in
    this process into ``staging/<side>/part-00000.parquet``; ``{side: sentences}`` encoded.

    Batches are cut from rows sorted by length, as the Ray path and sentence-transformers do (less
    padding). torch's thread count is restored afterwards: the encoder sets it for its process.
    """
    import torch

    threads = torch.get_num_threads()
    try:
        encoder = encoder_cls(**encoder_kwargs)
        total = sum(len(rows) for rows in sentences.values())
        with bars.bar(total, "features", unit="sentence") as shown:
            for side, rows in sentences.items():
                _encode_side(encoder, rows, staging / side, batch, shown)
    finally:
        torch.set_num_threads(threads)
    return {side: len(rows) for side, rows in sentences.items()}


def _encode_side(encoder, rows: list[dict], out: Path, batch: int, shown) -> None:
    """One side's shard: encoder tables of ``batch`` rows each, flushed in row groups."""
    out.mkdir(parents=True)
    rows = sorted(rows, key=lambda r: len(r["text"]))
    pending: list[pa.Table] = []
    pending_rows, writer = 0, None
    try:
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            columns = {k: [r[k] for r in chunk] for k in ("document", "sentence", "text")}
            # The encoder's split column is the Ray path's partition key, not a shard column.
            table = encoder({**columns, "split": [""] * len(chunk)}).drop_columns(["split"])
            pending.append(table)
            pending_rows += table.num_rows
            shown.update(len(chunk))
            if pending_rows >= ROWS_PER_FLUSH:
                writer, pending_rows = _flush(writer, pending, out), 0
        _flush(writer, pending, out, close=True)
    except BaseException:
        if writer is not None:
            writer.close()
        raise


def _flush(writer, pending: list[pa.Table], out: Path, close: bool = False):
    """Write ``pending`` as one row group (opening the file on the first), then clear it."""
    if pending:
        table = pa.concat_tables(pending)
        if writer is None:
            writer = pq.ParquetWriter(out / "part-00000.parquet", table.schema)
        writer.write_table(table)
        pending.clear()
    if close and writer is not None:
        writer.close()
    return writer
