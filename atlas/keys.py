"""Integer gram keys: counting them with document frequencies, and hashing them into buckets.

Every extractor turns gram occurrences into unsigned integer keys (``atlas.extract``); the two
operations here are shared by all strata, together with the zero-copy views between Arrow binary
arrays and numpy buffers that the extractors and the merge use.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_TABLE_CELLS = 1 << 24  # a presence table of at most 16 MB (document x key)
_MAX_DOC_LOOP = 4096  # documents a per-document loop may visit (a Python iteration each)
_MIN_GROUP_BITS = 6  # document groups of at least 64 (fewer: the per-document segments win)


def count_keys(key: np.ndarray, doc: np.ndarray, n_docs: int) -> tuple[np.ndarray, ...]:
    """``(distinct keys ascending, count, doc_freq)`` of occurrences ``key: uint[M]``.

    ``doc: uint32[M]`` is each occurrence's document, non-decreasing (occurrences come in buffer
    order). Keys are unsigned integers of any width up to 64 bits. One sort of
    ``key << doc_bits | doc`` does it all: runs of equal values are (key, doc) pairs, whose run
    lengths sum to counts; pairs per key are document frequencies.
    """
    if len(key) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    if n_docs == 1:
        distinct, counts = np.unique(key, return_counts=True)
        return distinct.astype(np.uint64), counts.astype(np.int64), np.ones(len(distinct), np.int64)
    doc_bits = int(n_docs - 1).bit_length()
    key_bits = int(key.max()).bit_length()
    if key_bits + doc_bits > 64:
        # Too wide to pack with the document: re-number the keys densely (< M) first.
        distinct, dense = np.unique(key, return_inverse=True)
        ids, counts, freqs = count_keys(dense.astype(np.uint64), doc, n_docs)
        return distinct[ids], counts, freqs
    if key_bits <= 16 and n_docs << key_bits <= _TABLE_CELLS:
        return _count_by_table(key.astype(np.uint32, copy=False), doc, n_docs, key_bits)
    if key_bits <= 32 - _MIN_GROUP_BITS and key_bits + doc_bits > 32:
        return _count_by_doc_groups(key.astype(np.uint32, copy=False), doc, n_docs, key_bits)
    if key_bits <= 32 < key_bits + doc_bits and len(key) >= 256 * n_docs:
        return _count_by_segments(key.astype(np.uint32, copy=False), doc, n_docs)
    # A 32-bit sort is ~5x faster than a 64-bit one here (AVX2 sort); low orders often fit.
    dtype = np.uint32 if key_bits + doc_bits <= 32 else np.uint64
    packed = key.astype(dtype)
    packed <<= dtype(doc_bits)
    packed |= doc
    packed.sort()
    pair_start = _run_starts(packed)
    pair_count = np.diff(np.r_[pair_start, len(packed)])
    pair_key = packed[pair_start] >> dtype(doc_bits)
    key_start = _run_starts(pair_key)
    counts = np.add.reduceat(pair_count, key_start).astype(np.int64)
    freqs = np.diff(np.r_[key_start, len(pair_key)]).astype(np.int64)
    return pair_key[key_start].astype(np.uint64), counts, freqs


def _count_by_table(
    key: np.ndarray, doc: np.ndarray, n_docs: int, key_bits: int
) -> tuple[np.ndarray, ...]:
    """``count_keys`` for keys of at most 16 bits: direct tables instead of a sort.

    Counts are a ``bincount``; a (document x key) presence table gives document frequencies
    (byte unigrams and bigrams: two linear passes, ~4x faster than sorting them).
    """
    width = 1 << key_bits
    if n_docs <= _MAX_DOC_LOOP and n_docs * width <= 4 * len(key):
        return _count_by_doc_tables(key, doc, n_docs, width)
    counts = np.bincount(key, minlength=width)
    present = np.zeros(n_docs * width, dtype=bool)
    cell = doc << np.uint32(key_bits)  # < _TABLE_CELLS: fits uint32
    cell |= key
    present[cell] = True
    freqs = present.reshape(n_docs, width).sum(axis=0)
    distinct = np.flatnonzero(counts)
    return distinct.astype(np.uint64), counts[distinct].astype(np.int64), freqs[distinct]


def _count_by_doc_tables(
    key: np.ndarray, doc: np.ndarray, n_docs: int, width: int
) -> tuple[np.ndarray, ...]:
    """``_count_by_table`` for few long documents: one ``bincount`` per document, whose
    non-zero cells are that document's distinct keys (no presence table, no scatter: ~4x
    faster for byte unigrams of 4 MB blocks of 20 KB documents)."""
    bounds = _doc_bounds(doc, n_docs)
    counts = np.zeros(width, np.int64)
    freqs = np.zeros(width, np.int64)
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a:
            here = np.bincount(key[a:b], minlength=width)
            counts += here
            freqs += here > 0
    distinct = np.flatnonzero(counts)
    return distinct.astype(np.uint64), counts[distinct], freqs[distinct]


def _count_by_doc_groups(
    key: np.ndarray, doc: np.ndarray, n_docs: int, key_bits: int
) -> tuple[np.ndarray, ...]:
    """``count_keys`` for keys too wide to pack with the document into 32 bits, but narrow
    enough to pack with a group of ``2 ** (32 - key_bits)`` documents (e.g. byte trigrams).

    Each group is one 32-bit packed sort (``count_keys``); the groups' distinct keys, far fewer
    than the occurrences, are then summed by key.
    """
    group_bits = 32 - key_bits
    bounds = np.searchsorted(doc, np.arange(0, n_docs + (1 << group_bits), 1 << group_bits))
    parts = []
    for first, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        if b > a:
            local = doc[a:b] - np.uint32(first << group_bits)
            parts.append(count_keys(key[a:b], local, 1 << group_bits))
    keys = np.concatenate([p[0] for p in parts])
    if len(parts) == 1:
        return parts[0]
    distinct, inverse = np.unique(keys, return_inverse=True)
    counts = np.bincount(inverse, np.concatenate([p[1] for p in parts]), len(distinct))
    freqs = np.bincount(inverse, np.concatenate([p[2] for p in parts]), len(distinct))
    return distinct, counts.astype(np.int64), freqs.astype(np.int64)


def _count_by_segments(key: np.ndarray, doc: np.ndarray, n_docs: int) -> tuple[np.ndarray, ...]:
    """``count_keys`` for 32-bit keys that no longer fit 32 bits with the document.

    Sorting each document's keys in place dedupes (key, doc) pairs with 32-bit sorts only: a
    second sort of the pair keys gives document frequencies, a sort of all keys the counts.
    """
    bounds = _doc_bounds(doc, n_docs)
    by_doc = key.copy()
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a > 1:
            by_doc[a:b].sort()
    new_pair = np.ones(len(by_doc), dtype=bool)
    new_pair[1:] = by_doc[1:] != by_doc[:-1]
    new_pair[bounds[:-1][bounds[:-1] < len(by_doc)]] = True
    pair_keys = np.sort(by_doc[new_pair])
    distinct, freqs = _sorted_counts(pair_keys)
    _, counts = _sorted_counts(np.sort(key))
    return distinct.astype(np.uint64), counts, freqs


def _doc_bounds(doc: np.ndarray, n_docs: int) -> np.ndarray:
    """``bounds: int[n_docs + 1]``: document d's occurrences are ``[bounds[d], bounds[d + 1])``
    of the non-decreasing ``doc``."""
    return np.searchsorted(doc, np.arange(n_docs + 1, dtype=doc.dtype))


def _run_starts(sorted_values: np.ndarray) -> np.ndarray:
    """Indices where a run of equal values starts in ``sorted_values`` (non-empty)."""
    return np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])


def _sorted_counts(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a sorted array and how often each occurs."""
    starts = _run_starts(sorted_values)
    return sorted_values[starts], np.diff(np.r_[starts, len(sorted_values)]).astype(np.int64)


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fixed bijection of ``uint64`` that spreads every input bit.

    Pure arithmetic, so a gram hashes to the same bucket in every process and on every machine
    (Python's ``hash()`` is salted per process).
    """
    x = x ^ (x >> np.uint64(30))
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def bucket_order(hashes: np.ndarray, partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """``(bucket of each hash: int32[K], permutation grouping them by bucket, stable)``."""
    if partitions <= 1:
        return np.zeros(len(hashes), np.int32), np.arange(len(hashes))
    buckets = (hashes % np.uint64(partitions)).astype(np.int32)
    # Small integers: numpy's stable sort is a radix sort for 16-bit keys.
    small = buckets.astype(np.uint16) if partitions <= 1 << 16 else buckets
    order = np.argsort(small, kind="stable")
    return buckets[order], order


def binary_buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets: int64[N + 1] from 0, data: uint8[...])`` of a (large_)binary array, no copy."""
    n = len(values)
    _, offset_buf, data_buf = values.buffers()
    offset_type = np.int64 if pa.types.is_large_binary(values.type) else np.int32
    if offset_buf is None:
        return np.zeros(n + 1, np.int64), np.zeros(0, np.uint8)
    offsets = np.frombuffer(offset_buf, offset_type)[values.offset : values.offset + n + 1]
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    start = int(offsets[0])
    return offsets.astype(np.int64) - start, data[start : int(offsets[-1])]


def binary_array(data: np.ndarray, offsets: np.ndarray) -> pa.Array:
    """A large_binary array whose value i is ``data[offsets[i]:offsets[i + 1]]``."""
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data))]
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(offsets) - 1, buffers)
