"""Vectorised n-gram counting of one block of documents, for the three strata of the atlas.

Definitions (``atlas.reference`` implements the same ones with ``Counter``, as the test oracle):

- A document is a byte string (text is encoded UTF-8 with ``surrogateescape``, so raw bytes read
  from a non-UTF-8 file come back unchanged). Documents are counted independently: no n-gram
  crosses a document boundary. ``count`` is the number of occurrences, ``doc_freq`` the number of
  documents containing the gram at least once.
- ``char``: every byte n-gram of the document's bytes.
- ``word``: tokens are maximal runs of bytes that are not ASCII whitespace (space, ``\\t``,
  ``\\n``, ``\\r``, ``\\x0b``, ``\\x0c``); each token is followed by one space, and a word n-gram is
  n consecutive tokens joined as ``b"t1 t2 t3 "`` (so the unigram of ``the`` is ``b"the "``).
- ``unicode``: the document is decoded as UTF-8; within each maximal run of valid code points
  >= U+0080, every code-point n-gram, stored as its UTF-8 bytes. Bytes that are not part of a
  valid UTF-8 sequence break runs and are counted in ``unicode_invalid_bytes``.

How it is fast: the block is one contiguous ``uint8`` buffer plus document offsets. Each gram
occurrence becomes an unsigned integer key (bytes packed big-endian for ``char``, 21-bit code
points for ``unicode``, token ids in base |vocabulary| for ``word``, see ``atlas.words``);
``atlas.keys.count_keys`` sorts ``key << doc_bits | doc`` once, so runs of equal (key, doc) pairs
give counts and runs of equal keys give document frequencies. Only the distinct grams of the block
are turned back into bytes. No Python loop runs per gram; the loops are over orders and documents.

With ``partitions`` > 1 each order's grams come grouped by ``bucket`` (a hash of the gram's
bytes modulo ``partitions``, equal in every block and process), ready for the hash-partitioned
merge of ``atlas.merge``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from atlas.config import STRATA, AtlasConfig
from atlas.keys import GOLDEN, binary_array, binary_buffers, bucket_order, count_keys, mix
from atlas.words import spans, word_chunks

_CP_BITS = 21  # every code point fits in 21 bits, so three fit in a 63-bit key
SCHEMA = pa.schema(
    [
        ("gram", pa.large_binary()),
        ("n", pa.int8()),
        ("count", pa.int64()),
        ("doc_freq", pa.int64()),
        ("bucket", pa.int32()),
    ]
)


@dataclass
class BlockCounts:
    """Per-stratum tables (``SCHEMA``) of one block, and its tallies.

    A table has one record batch per order, each sorted by ``bucket``; gram order is otherwise
    unspecified.
    """

    strata: dict[str, pa.Table]
    unicode_invalid_bytes: int
    n_docs: int
    n_bytes: int


@dataclass
class _Block:
    """A block as one buffer: ``buf: uint8[L]``, document d is ``buf[offsets[d]:offsets[d+1]]``."""

    buf: np.ndarray
    offsets: np.ndarray
    partitions: int

    def __post_init__(self) -> None:
        self.n_docs = len(self.offsets) - 1
        self.doc_of = np.repeat(np.arange(self.n_docs, dtype=np.uint32), np.diff(self.offsets))


def count_block(docs: list[bytes], cfg: AtlasConfig, partitions: int = 1) -> BlockCounts:
    """Count every stratum and order of ``cfg`` over ``docs`` (see the module doc)."""
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum([len(d) for d in docs], out=offsets[1:])
    buf = np.frombuffer(b"".join(docs), dtype=np.uint8)
    return count_buffer(buf, offsets, cfg, partitions)


def count_arrow(
    docs: pa.Array | pa.ChunkedArray, cfg: AtlasConfig, partitions: int = 1
) -> BlockCounts:
    """``count_block`` over a (large_)binary Arrow array, without copying the document bytes."""
    if isinstance(docs, pa.ChunkedArray):
        docs = docs.combine_chunks()
    if docs.null_count:
        raise ValueError("documents must not be null")
    offsets, data = binary_buffers(docs)
    return count_buffer(data, offsets, cfg, partitions)


def count_buffer(
    buf: np.ndarray, offsets: np.ndarray, cfg: AtlasConfig, partitions: int = 1
) -> BlockCounts:
    """``count_block`` over ``buf: uint8[L]`` cut by ``offsets: int64[D + 1]``."""
    block = _Block(buf, offsets, partitions)
    chunks = {
        "char": _char_chunks(block, cfg.char_orders),
        "word": word_chunks(block, cfg.word_orders, partitions, _chunk),
    }
    chunks["unicode"], invalid = _unicode_chunks(block, cfg.unicode_orders)
    tables = {s: pa.Table.from_batches(chunks[s], schema=SCHEMA) for s in STRATA}
    return BlockCounts(tables, invalid, block.n_docs, len(buf))


def _chunk(grams: pa.Array, n: int, counts, freqs, buckets) -> pa.RecordBatch:
    """One order's grams as a record batch of ``SCHEMA``."""
    columns = [grams, pa.array(np.full(len(counts), n, np.int8)), pa.array(counts)]
    columns += [pa.array(freqs), pa.array(buckets, pa.int32())]
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


def _keyed_chunk(block: _Block, n: int, keys, counts, freqs, spell) -> pa.RecordBatch:
    """Group distinct integer keys of order ``n`` by bucket, then spell them out."""
    # Keys are the gram's bytes (or code points) themselves, so hashing keys hashes bytes.
    salt = np.uint64(n * int(GOLDEN) % 2**64)
    buckets, order = bucket_order(mix(keys + salt), block.partitions)
    return _chunk(spell(keys[order], n), n, counts[order], freqs[order], buckets)


def _char_chunks(block: _Block, orders: tuple[int, ...]) -> list[pa.RecordBatch]:
    """The char stratum: the block's byte n-grams of each order."""
    chunks = []
    # Four bytes fit a uint32, whose arithmetic and sorts are twice as fast as uint64's.
    code = block.buf.astype(np.uint32 if max(orders) <= 4 else np.uint64)
    for n in range(1, max(orders) + 1):
        if n > 1:
            # The n-gram code at i extends the (n-1)-gram code at i by byte i + n - 1.
            code = code[:-1] << code.dtype.type(8)
            code |= block.buf[n - 1 :]
        if n not in orders or len(code) == 0:
            continue
        fits = _fits(block, n, len(code))
        key, doc = code, block.doc_of[: len(code)]
        if fits is not None:
            key, doc = key[fits], doc[fits]
        keys, counts, freqs = count_keys(key, doc, block.n_docs)
        chunks.append(_keyed_chunk(block, n, keys, counts, freqs, _char_bytes))
    return chunks


def _fits(block: _Block, n: int, m: int) -> np.ndarray | None:
    """Mask of the first ``m`` positions whose n-gram ends inside its own document."""
    if n == 1 or block.n_docs <= 1:
        return None  # the last document's tail is already cut off by the length m
    starts, ends = block.offsets[:-1, None], block.offsets[1:, None]
    # The last n - 1 positions of each document start grams that would cross its end.
    tails = ends - np.arange(1, n)[None, :]
    tails = tails[(tails >= starts) & (tails < m)]
    mask = np.ones(m, dtype=bool)
    mask[tails] = False
    return mask


def _char_bytes(keys: np.ndarray, n: int) -> pa.Array:
    """Byte strings of ``n``-byte codes packed big-endian into ``keys: uint64[K]``."""
    data = keys.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 8 - n :].ravel()
    return binary_array(data, np.arange(0, n * (len(keys) + 1), n))


def _unicode_chunks(block: _Block, orders: tuple[int, ...]) -> tuple[list[pa.RecordBatch], int]:
    """The unicode stratum: code-point n-grams within runs of valid code points >= U+0080; also
    the count of invalid UTF-8 bytes."""
    high = block.buf >= 0x80
    if not high.any():
        return [], 0  # pure ASCII: no code point can qualify
    cp, cp_doc, invalid = _code_points(block, high)
    good = np.flatnonzero(cp_doc >= 0)
    chunks = []
    for n in orders:
        # n consecutive good code points span exactly n - 1 positions of the decoded buffer.
        j = np.flatnonzero(good[n - 1 :] - good[: len(good) - n + 1] == n - 1)
        if len(j) == 0:
            continue
        key = np.zeros(len(j), dtype=np.uint64)
        for t in range(n):
            key = (key << np.uint64(_CP_BITS)) | cp[good[j + t]]
        keys, counts, freqs = count_keys(key, cp_doc[good[j]].astype(np.uint32), block.n_docs)
        chunks.append(_keyed_chunk(block, n, keys, counts, freqs, _unicode_bytes))
    return chunks, invalid


def _code_points(block: _Block, high: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``(code points: uint64[C], document of each good one else -1: int64[C], invalid bytes)``.

    An ASCII byte always decodes to itself, so decoding splits at ASCII bytes: only the maximal
    runs of bytes >= 0x80 (cut at document starts) are decoded, each after a NUL. NUL is ASCII:
    it ends a run, and a truncated sequence never completes with the next run's bytes.
    """
    run_starts, _ = spans(block.buf, block.offsets, high)
    positions = np.flatnonzero(high)
    sep = np.insert(block.buf[positions], np.searchsorted(positions, run_starts), 0)
    run_doc = np.searchsorted(block.offsets, run_starts, side="right") - 1
    text = sep.tobytes().decode("utf-8", errors="surrogateescape")
    cp = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
    escaped = (cp >= 0xDC80) & (cp <= 0xDCFF)  # one per invalid byte (surrogateescape)
    good = (cp >= 0x80) & ~escaped
    run_of = np.cumsum(cp == 0) - 1
    cp_doc = np.where(good, run_doc[run_of], -1)
    return cp.astype(np.uint64), cp_doc, int(escaped.sum())


def _unicode_bytes(keys: np.ndarray, n: int) -> pa.Array:
    """UTF-8 strings of ``n`` code points packed in 21-bit fields of ``keys: uint64[K]``."""
    shifts = np.uint64(_CP_BITS) * np.arange(n - 1, -1, -1, dtype=np.uint64)
    cps = ((keys[:, None] >> shifts[None, :]) & np.uint64(0x1FFFFF)).astype("<u4")
    data = cps.tobytes().decode("utf-32-le").encode("utf-8")
    width = 1 + (cps >= 0x80).astype(np.int64) + (cps >= 0x800) + (cps >= 0x10000)
    offsets = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(width.sum(axis=1), out=offsets[1:])
    return binary_array(np.frombuffer(data, dtype=np.uint8), offsets)
