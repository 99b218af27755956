"""How the sweep summaries write a number into a table cell."""

from __future__ import annotations

import math


def fmt(x, spec: str = ".4f") -> str:
    """``x`` formatted with ``spec``; ``—`` for a missing value (None or NaN)."""
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)
