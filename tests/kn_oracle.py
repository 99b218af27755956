"""A plain pure-Python interpolated modified Kneser-Ney: the oracle of ``atlas.kn``.

It shares nothing with ``atlas.kn`` but the definitions in that module's doc: counts by slicing
``bytes``, a dictionary of histories per order, one probability at a time.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict


def oracle_discounts(values) -> tuple[float, float, float]:
    nk = {k: sum(1 for v in values if v == k) for k in (1, 2, 3, 4)}
    y = nk[1] / (nk[1] + 2 * nk[2]) if nk[1] + 2 * nk[2] else 0.5
    out = []
    for k in (1, 2, 3):
        d = k - (k + 1) * y * nk[k + 1] / nk[k] if nk[k] else y
        out.append(min(max(d, 0.0), float(k)))
    return tuple(out)


class OracleKN:
    """Interpolated modified Kneser-Ney, one dictionary per order, one probability per call."""

    def __init__(self, docs: list[bytes], order: int) -> None:
        raw = {n: Counter() for n in range(1, order + 1)}
        for doc in docs:
            for n in raw:
                for i in range(len(doc) - n + 1):
                    raw[n][doc[i : i + n]] += 1
        counts = {order: dict(raw[order])}
        for n in range(1, order):
            counts[n] = dict(Counter(g[1:] for g in raw[n + 1]))  # distinct left neighbours
        self.order = order
        self.d = {n: oracle_discounts(list(c.values())) for n, c in counts.items()}
        self.tables = {n: defaultdict(dict) for n in counts}
        for n, c in counts.items():
            for gram, value in c.items():
                self.tables[n][gram[:-1]][gram[-1]] = value

    def prob(self, history: bytes, byte: int) -> float:
        p = 1 / 256
        for n in range(1, self.order + 1):
            if len(history) < n - 1:
                break
            table = self.tables[n].get(history[len(history) - (n - 1) :] if n > 1 else b"")
            if not table:
                continue
            d = self.d[n]
            c = table.get(byte, 0)
            gamma = sum(d[min(v, 3) - 1] for v in table.values())
            p = (max(c - (d[min(c, 3) - 1] if c else 0.0), 0.0) + gamma * p) / sum(table.values())
        return p

    def bits(self, data: bytes) -> list[float]:
        start = self.order - 1
        return [
            -math.log2(self.prob(data[max(0, i - start) : i], data[i])) for i in range(len(data))
        ]
