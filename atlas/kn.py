"""Interpolated modified Kneser-Ney byte n-gram model over an atlas's ``char`` stratum.

The classical baseline a byte-level LM has to beat (Chen & Goodman 1998, §4.1.6 "modified
Kneser-Ney", interpolated). For an order-``N`` model and a byte ``w`` after history ``h``:

    p_n(w | h) = max(c_n(hw) - D_n(c_n(hw)), 0) / S_n(h) + gamma_n(h) * p_{n-1}(w | h')
    gamma_n(h) = (D_n1 N1(h.) + D_n2 N2(h.) + D_n3+ N3+(h.)) / S_n(h),   S_n(h) = sum_w c_n(hw)

with ``h'`` the history without its first byte and ``p_0 = 1/256``. ``c_N`` are the raw counts;
every lower order uses continuation counts, ``c_n(g) = |{x : count(xg) > 0}|`` (how many distinct
bytes precede ``g``). ``N_k(h.)`` counts the seen ``w`` with ``c_n(hw) = k``. A history never seen
at order ``n`` (``S_n(h) = 0``) backs off entirely to ``p_{n-1}``. Discounts come from the counts of
counts ``n_k`` of each order's ``c_n``: ``Y = n1 / (n1 + 2 n2)``, ``D1 = 1 - 2Y n2/n1``, ``D2 = 2 -
3Y n3/n2``, ``D3+ = 3 - 4Y n4/n3``; a discount whose counts of counts are zero falls back to ``Y``
(Ney's absolute discount; 0.5 when ``n1 + 2 n2 = 0``), and ``D_k`` is clipped to ``[0, k]`` so the
distribution always sums to one.

Counts follow the atlas's definitions (``atlas.extract``): no gram crosses a document boundary,
so a gram that only starts documents has no continuation count (no ``<s>`` padding).

The model needs *every* byte gram of orders 1..N: an atlas kept with ``min_count > 1`` or cut by its
budget loses the singletons KN's discounts and continuation counts are made of, so ``from_atlas``
refuses one whose ``char`` stratum is not complete (``kn_atlas_config`` is the config that is).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from atlas.config import MAX_ORDER, AtlasConfig
from atlas.keys import binary_buffers
from atlas.query import AtlasError, read_manifest

KN_TARGET = 10**15
"""The atlas budget of a KN atlas: more than any corpus has grams, so nothing is cut."""


def kn_atlas_config(order: int, heldout_fraction: float | None = None) -> AtlasConfig:
    """The atlas a KN model of ``order`` is built from: every byte gram of orders 1..order.

    All of ``target_size`` goes to ``char`` and ``min_count`` is 1, so the stratum is complete; the
    other strata count only unigrams (the smallest they may) and keep none of them.
    """
    if not 1 <= order <= MAX_ORDER["char"]:
        raise ValueError(f"a KN order must be between 1 and {MAX_ORDER['char']}, got {order}")
    extra = {} if heldout_fraction is None else {"heldout_fraction": heldout_fraction}
    return AtlasConfig(
        char_orders=tuple(range(1, order + 1)),
        word_orders=(1,),
        unicode_orders=(1,),
        target_size=KN_TARGET,
        quota_char=1.0,
        quota_word=0.0,
        quota_unicode=0.0,
        min_count=1,
        **extra,
    )


@dataclass(frozen=True)
class KnLevel:
    """One order ``n`` of the model: its grams' counts grouped by history."""

    n: int
    keys: np.ndarray
    """``uint64[G]``, sorted: each gram's bytes packed big-endian (first byte highest)."""
    counts: np.ndarray
    """``int64[G]``: raw counts at the top order, continuation counts below; all > 0."""
    discounts: tuple[float, float, float]
    """``(D1, D2, D3+)`` of this order."""
    histories: np.ndarray
    """``uint64[H]``, sorted: the distinct histories ``key >> 8`` (all 0 at order 1)."""
    totals: np.ndarray
    """``float64[H]``: ``S_n(h)``, the sum of ``counts`` over each history's grams."""
    gamma_mass: np.ndarray
    """``float64[H]``: ``D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.)``, the mass handed to order n-1."""


def discounts_of(counts: np.ndarray) -> tuple[float, float, float]:
    """``(D1, D2, D3+)`` from the counts of counts of ``counts: int64[G]`` (module doc)."""
    n1, n2, n3, n4 = (int(np.count_nonzero(counts == k)) for k in (1, 2, 3, 4))
    y = n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.5
    raw = (
        1 - 2 * y * n2 / n1 if n1 else y,
        2 - 3 * y * n3 / n2 if n2 else y,
        3 - 4 * y * n4 / n3 if n3 else y,
    )
    return tuple(float(min(max(d, 0.0), k)) for k, d in zip((1, 2, 3), raw))


def _level(n: int, keys: np.ndarray, counts: np.ndarray) -> KnLevel:
    """Group an order's sorted ``keys`` and ``counts`` by history (``key >> 8``)."""
    d = discounts_of(counts)
    # Packing is big-endian, so sorting by gram sorts by history: runs of equal histories.
    history = keys >> np.uint64(8)
    histories, starts = np.unique(history, return_index=True)
    totals = np.add.reduceat(counts.astype(np.float64), starts)
    mass = d[0] * (counts == 1) + d[1] * (counts == 2) + d[2] * (counts >= 3)
    gamma = np.add.reduceat(mass, starts)
    return KnLevel(n, keys, counts, d, histories, totals, gamma)


@dataclass(frozen=True)
class KneserNey:
    """An interpolated modified KN model of order ``len(levels)``; ``levels[n - 1]`` is order n."""

    levels: tuple[KnLevel, ...]

    @property
    def order(self) -> int:
        return len(self.levels)

    @classmethod
    def from_counts(cls, grams: dict[int, tuple[np.ndarray, np.ndarray]], order: int) -> KneserNey:
        """From raw ``{n: (keys uint64[G], counts int64[G])}`` of orders 1..``order`` (any
        order of rows); only the top order's counts are used as they are."""
        missing = [n for n in range(1, order + 1) if n not in grams]
        if missing:
            raise ValueError(f"KN of order {order} needs counts of orders {missing}")
        levels = []
        for n in range(1, order + 1):
            if n == order:
                keys, counts = grams[n]
                by_key = np.argsort(keys, kind="stable")
                keys, counts = keys[by_key], np.asarray(counts, np.int64)[by_key]
            else:  # continuation counts: distinct bytes before each n-gram, from order n + 1
                above = grams[n + 1][0]
                keys, counts = np.unique(above & np.uint64((1 << (8 * n)) - 1), return_counts=True)
            levels.append(_level(n, keys.astype(np.uint64), counts.astype(np.int64)))
        return cls(tuple(levels))

    def bits(self, data: np.ndarray) -> np.ndarray:
        """``float64[L]``: ``-log2 p(data[i] | data[:i])`` for every byte of ``data: uint8[L]``,
        each with the longest history there is (shorter at the start)."""
        data = np.asarray(data, np.uint8)
        p = np.full(len(data), 1 / 256)
        code = data.astype(np.uint64)
        for level in self.levels:
            n = level.n
            if n > 1:  # the n-gram ending at i + n - 1 extends the (n-1)-gram ending at i + n - 2
                code = (code[:-1] << np.uint64(8)) | data[n - 1 :].astype(np.uint64)
            if len(code) == 0:
                break
            tail = p[n - 1 :]  # the positions with a history of n - 1 bytes
            h = _find(level.histories, code >> np.uint64(8))
            g = _find(level.keys, code)
            c = np.where(g >= 0, level.counts[np.maximum(g, 0)], 0).astype(np.float64)
            seen = h >= 0
            hi = np.maximum(h, 0)
            disc = np.choose(np.minimum(c, 3).astype(np.int64), (0.0, *level.discounts))
            mixed = (np.maximum(c - disc, 0) + level.gamma_mass[hi] * tail) / level.totals[hi]
            p[n - 1 :] = np.where(seen, mixed, tail)
        return -np.log2(p)

    def bpb(self, data: np.ndarray) -> float:
        """Mean bits per byte of ``data`` (see ``bits``)."""
        if len(data) == 0:
            raise ValueError("no bytes to score")
        return float(self.bits(data).mean())

    @classmethod
    def from_atlas(cls, atlas_dir: str | Path, order: int) -> KneserNey:
        """The order-``order`` model of the atlas at ``atlas_dir`` (its complete ``char`` stratum)."""
        return cls.from_counts(read_char_counts(atlas_dir, order), order)


def _find(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of each query in ``sorted_keys``, -1 where it is absent."""
    at = np.searchsorted(sorted_keys, queries)
    inside = at < len(sorted_keys)
    hit = inside & (sorted_keys[np.minimum(at, len(sorted_keys) - 1)] == queries)
    return np.where(hit, at, -1)


def check_complete(manifest: dict, order: int, where: str) -> None:
    """Refuse an atlas whose ``char`` stratum lacks orders 1..``order`` or any of their grams."""
    char = manifest.get("strata", {}).get("char", {})
    have = set(char.get("orders", []))
    lacking = [n for n in range(1, order + 1) if n not in have]
    if lacking:
        raise AtlasError(
            f"atlas {where} counts char orders {sorted(have)}; a KN model of order {order} needs "
            f"orders 1..{order} (build it with the config of atlas.kn.kn_atlas_config)"
        )
    if char.get("kept") != char.get("distinct_total"):
        raise AtlasError(
            f"atlas {where} keeps {char.get('kept'):,} of its {char.get('distinct_total'):,} char "
            f"grams (min_count {char.get('min_count')}, budget {char.get('budget'):,}); a KN model "
            "needs every gram, singletons included (use atlas.kn.kn_atlas_config)"
        )


def read_char_counts(atlas_dir: str | Path, order: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``{n: (keys uint64[G], counts int64[G])}`` of the atlas's char grams of orders 1..order."""
    manifest = read_manifest(atlas_dir)
    check_complete(manifest, order, str(atlas_dir))
    path = Path(atlas_dir) / "grams" / "stratum=char"
    table = pq.read_table(path, columns=["gram", "n", "count"], filters=[("n", "<=", order)])
    out = {}
    ns = table.column("n").to_numpy()
    counts = table.column("count").to_numpy()
    grams = table.column("gram").combine_chunks()
    for n in range(1, order + 1):
        rows = np.flatnonzero(ns == n)
        _, data = binary_buffers(grams.take(rows))
        packed = np.zeros(len(rows), np.uint64)
        cells = data.reshape(len(rows), n).astype(np.uint64) if len(rows) else packed[:, None]
        for j in range(n):
            packed = (packed << np.uint64(8)) | cells[:, j]
        out[n] = (packed, counts[rows].astype(np.int64))
    return out
