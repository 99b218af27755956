"""Byte shards: a corpus URI's train and validation streams as Parquet chunks, fed to Ray Train.

Layout of ``DATA/shards/<slug>-<key>/``::

    manifest.json                   uri, split record per side (fingerprint, bytes, documents)
    train/part-00000.parquet ...    rows (chunk: binary, offset: int64) of ~``chunk_bytes`` each
    validation/part-00000.parquet

Each side is one byte stream (its documents' UTF-8 bytes, concatenated in corpus order, as
``atlas.corpus.corpus_bytes`` makes it) cut into chunks whose lengths are multiples of 3, so every
chunk keeps the stream's global trigram phase. Training reads the train side with
``ray.data.read_parquet``: each Train worker iterates only its own share of the chunks
(``get_dataset_shard``) and samples windows inside them (``geolip.aleph.data.sample_chunk_windows``).

Why the driver writes the shards rather than a Ray Data pipeline: the split is a pure function of
the document stream and the held-out stream must be byte-identical on every run (compressor and
ablation comparisons score the same bytes); one streaming pass with bounded memory gives that
directly, while a parallel write would need an order-preserving shuffle for the same guarantee.
The key in the directory name covers the URI, the split fraction, the chunk size and, for
``file:`` corpora, each file's size and modification time, so a changed corpus gets new shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from atlas.corpus import DEFAULT_HELDOUT, SplitStats, encode_text, iter_split, parse_uri
from atlas.corpus.files import resolve_paths
from pipelines.paths import new_parents

FORMAT = "geolip-byte-shards/1"
CHUNK_BYTES = 3 * 21845  # 64 KiB less one byte: a multiple of 3, so chunks keep the phase
FILE_BYTES = 8 << 20  # one Parquet file per ~8 MB: several blocks to share among workers


@dataclass(frozen=True)
class ByteShards:
    """A built shard directory and its manifest."""

    path: Path
    manifest: dict

    def side(self, split: str) -> Path:
        return self.path / split

    def n_bytes(self, split: str) -> int:
        return int(self.manifest["splits"][split]["n_bytes"])


def build_byte_shards(
    uri: str,
    data: Path,
    heldout_fraction: float | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    progress=print,
) -> ByteShards:
    """Shards of ``uri`` under ``data/shards`` (reused when already built with the same key)."""
    built = built_byte_shards(uri, data, heldout_fraction, chunk_bytes)
    if built is not None:
        return built
    fraction = DEFAULT_HELDOUT if heldout_fraction is None else heldout_fraction
    spec = parse_uri(uri)
    key = _key(str(spec), fraction, chunk_bytes)
    out = _shards_dir(data, str(spec), key)
    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    with new_parents(out):
        manifest = _stage(str(spec), key, fraction, chunk_bytes, staging, out)
    progress(_describe(out, manifest))
    return ByteShards(out, manifest)


def built_byte_shards(
    uri: str, data: Path, heldout_fraction: float | None = None, chunk_bytes: int = CHUNK_BYTES
) -> ByteShards | None:
    """The shards ``build_byte_shards`` would reuse, or None where none are built (reads only
    the manifest: the corpus itself is not opened)."""
    fraction = DEFAULT_HELDOUT if heldout_fraction is None else heldout_fraction
    if chunk_bytes <= 0 or chunk_bytes % 3:
        raise ValueError(f"chunk_bytes must be a positive multiple of 3, got {chunk_bytes}")
    spec = parse_uri(uri)
    key = _key(str(spec), fraction, chunk_bytes)
    out = _shards_dir(data, str(spec), key)
    manifest = _read_manifest(out)
    if manifest is not None and manifest.get("key") == key:
        return ByteShards(out, manifest)
    return None


def _shards_dir(data: Path, spec: str, key: str) -> Path:
    return Path(data) / "shards" / f"{corpus_slug(spec)}-{key}"


def _stage(
    spec: str, key: str, fraction: float, chunk_bytes: int, staging: Path, out: Path
) -> dict:
    """Write both sides and the manifest under ``staging``, rename it to ``out``; returns the
    manifest."""
    try:
        splits = {
            side: _write_side(spec, side, fraction, chunk_bytes, staging / side)
            for side in ("train", "validation")
        }
        manifest = {"format": FORMAT, "key": key, "uri": spec, "chunk_bytes": chunk_bytes}
        manifest.update(heldout_fraction=fraction, splits=splits)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():  # a stale or foreign directory under our key's name: replace it
            shutil.rmtree(out)
        os.replace(staging, out)
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_side(shards: ByteShards, split: str, limit: int | None = None) -> np.ndarray:
    """One side's stream as ``uint8[L]`` (the first ``limit`` bytes), read on this process."""

    parts, total = [], 0
    for file in sorted(shards.side(split).glob("*.parquet")):
        table = pq.read_table(file, columns=["chunk"])
        for value in table.column("chunk").to_pylist():
            parts.append(value)
            total += len(value)
            if limit is not None and total >= limit:
                return np.frombuffer(b"".join(parts)[:limit], dtype=np.uint8)
    return np.frombuffer(b"".join(parts), dtype=np.uint8)


def _write_side(uri: str, side: str, fraction: float, chunk_bytes: int, out: Path) -> dict:

    out.mkdir(parents=True)
    stats, digest = SplitStats(), hashlib.sha256()
    n_docs = n_bytes = files = 0
    rows: list[bytes] = []
    offsets: list[int] = []

    def flush() -> None:
        nonlocal rows, offsets, files
        if rows:
            table = pa.table({"chunk": pa.array(rows, pa.binary()), "offset": offsets})
            pq.write_table(table, out / f"part-{files:05d}.parquet", compression="none")
            rows, offsets, files = [], [], files + 1

    def docs() -> Iterator[bytes]:
        nonlocal n_docs
        for doc in iter_split(uri, side, fraction, stats):
            n_docs += 1
            yield encode_text(doc.text)

    for chunk, offset in _chunks(docs(), chunk_bytes):
        digest.update(chunk)
        rows.append(chunk)
        offsets.append(offset)
        n_bytes += len(chunk)
        if len(rows) * chunk_bytes >= FILE_BYTES:
            flush()
    flush()
    return {
        "n_bytes": n_bytes,
        "n_docs": n_docs,
        "files": files,
        "split_mode": stats.mode,
        "fingerprint": digest.hexdigest()[:16],
    }


def _chunks(docs: Iterator[bytes], chunk_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Cut the concatenation of ``docs`` into ``(chunk, offset)`` of ``chunk_bytes`` (last: less)."""
    pending, offset = bytearray(), 0
    for data in docs:
        pending += data
        while len(pending) >= chunk_bytes:
            yield bytes(pending[:chunk_bytes]), offset
            del pending[:chunk_bytes]
            offset += chunk_bytes
    if pending:
        yield bytes(pending), offset


def _key(uri: str, fraction: float, chunk_bytes: int) -> str:
    stamp = {"uri": uri, "heldout_fraction": fraction, "chunk_bytes": chunk_bytes}
    stamp["files"] = _file_stamps(uri)
    stamp["format"] = FORMAT
    return hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:10]


def _file_stamps(uri: str) -> list:
    """``[path, size, mtime_ns]`` of a ``file:`` corpus' files (so edits invalidate shards)."""

    spec = parse_uri(uri)
    if spec.scheme != "file":
        return []
    stamps = []
    for _, path in resolve_paths(spec.target, uri):
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                st = file.stat()
                stamps.append([str(file.resolve()), st.st_size, st.st_mtime_ns])
    return stamps


def corpus_slug(uri: str) -> str:
    """A corpus URI as a short file-name-safe slug: ``file:/a/b.txt`` -> ``file-a-b-txt``."""
    return re.sub(r"[^A-Za-z0-9]+", "-", uri).strip("-")[:48] or "corpus"


def _read_manifest(path: Path) -> dict | None:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def _describe(path: Path, manifest: dict) -> str:
    s = manifest["splits"]
    return (
        f"byte shards {path.name}: train {s['train']['n_bytes'] / 1e6:.2f} MB, "
        f"validation {s['validation']['n_bytes'] / 1e6:.2f} MB ({s['train']['split_mode']} split)"
    )
