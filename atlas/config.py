"""``AtlasConfig``: what an atlas build counts, how much of it it keeps, and how it runs.

An atlas is named by ``config_hash`` (sha256 of the canonical JSON of the fields that change the
result) together with the corpus fingerprint: a rebuild with the same two is recognised as done.
``block_bytes`` and ``partitions`` only change how the work is cut up, never the counts, so they
stay out of the hash.

Sizes on the command line may be written ``12.9M``, ``500k``, ``2G`` (decimal), ``64Ki`` (binary) and
quotas as ``char=0.35,word=0.6,unicode=0.05``; ``parse_size`` and ``parse_quotas`` read them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field

from atlas.corpus.split import DEFAULT_HELDOUT, SPLITS

STRATA = ("char", "word", "unicode")
# Execution knobs: they change how the job is cut into tasks, not what it produces.
_UNHASHED = ("block_bytes", "partitions")
# Orders are packed into integers by the extractors: bytes into 64 bits (8 per code), code points
# into 21-bit fields of a 63-bit code (3 per code). Word n-grams have no packing limit.
MAX_ORDER = {"char": 8, "word": 8, "unicode": 3}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(?:e(\d+))?\s*([kKmMgG]i?)?\s*$")
# One meaning everywhere (atlas targets, bank sizes, block bytes): SI multipliers are decimal,
# the IEC ones (Ki, Mi, Gi) binary.
_MULTIPLIER = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 2**10, "mi": 2**20, "gi": 2**30}


@dataclass(frozen=True)
class AtlasConfig:
    """One atlas build. Defaults reproduce the 12.9M-entry atlas the spec (aleph.md §4.2) names.

    Quotas: word n-grams are a long tail that keeps growing with the corpus, so they get most of
    the entries (0.6); byte 1..4-grams saturate (a few million distinct 4-grams even on large
    English corpora), so 0.35 keeps essentially all char grams above the minimum count; 0.05 for
    multi-byte code points covers the non-Latin text of a mostly-English corpus. A stratum with
    fewer candidates than its quota hands the unused entries to the others, in proportion to
    their quotas, so the atlas reaches the target whenever the corpus allows.
    """

    char_orders: tuple[int, ...] = (1, 2, 3, 4)
    """Byte n-gram orders of the ``char`` stratum (1..8)."""
    word_orders: tuple[int, ...] = (1, 2, 3)
    """Word n-gram orders of the ``word`` stratum (1..8)."""
    unicode_orders: tuple[int, ...] = (1, 2, 3)
    """Code-point n-gram orders of the ``unicode`` stratum (1..3)."""
    target_size: int = 12_900_000
    """Total entries to keep over all strata (fewer when the corpus has fewer candidates)."""
    quota_char: float = 0.35
    """Share of ``target_size`` for the ``char`` stratum."""
    quota_word: float = 0.60
    """Share of ``target_size`` for the ``word`` stratum."""
    quota_unicode: float = 0.05
    """Share of ``target_size`` for the ``unicode`` stratum."""
    min_count: int = 2
    """Grams seen fewer times than this are never kept (1 keeps everything)."""
    split: str = "train"
    """Corpus side the atlas is built from; banks must come from training data only."""
    heldout_fraction: float = DEFAULT_HELDOUT
    """Fraction of documents held out for validation (see ``atlas.corpus.split``)."""
    block_bytes: int = 4 << 20
    """Target bytes of documents per Ray Data block (one map task each); not hashed."""
    partitions: int | None = field(default=None)
    """Hash buckets per stratum for the merge; ``None``: twice the cluster's CPUs. Not hashed."""

    def __post_init__(self) -> None:
        for stratum in STRATA:
            orders = getattr(self, f"{stratum}_orders")
            if isinstance(orders, list):  # from JSON (a manifest's config)
                object.__setattr__(self, f"{stratum}_orders", orders := tuple(orders))
            _check_orders(stratum, orders)
        quotas = self.quotas
        for stratum, q in quotas.items():
            if not 0 <= q <= 1:
                raise ValueError(f"quota_{stratum} must be in [0, 1], got {q}")
        if abs(sum(quotas.values()) - 1) > 1e-6:
            raise ValueError(f"quotas must sum to 1, got {quotas} (sum {sum(quotas.values()):g})")
        _check_positive_int("target_size", self.target_size)
        _check_positive_int("min_count", self.min_count)
        _check_positive_int("block_bytes", self.block_bytes)
        if self.partitions is not None:
            _check_positive_int("partitions", self.partitions)
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")

    @property
    def quotas(self) -> dict[str, float]:
        """``{stratum: share of target_size}``."""
        return {s: float(getattr(self, f"quota_{s}")) for s in STRATA}

    def orders(self, stratum: str) -> tuple[int, ...]:
        """The n-gram orders counted in ``stratum``."""
        return getattr(self, f"{stratum}_orders")

    def to_dict(self) -> dict:
        """All fields as plain JSON values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    def config_hash(self) -> str:
        """12 hex digits of sha256 over the canonical JSON of the result-changing fields."""
        payload = {k: v for k, v in self.to_dict().items() if k not in _UNHASHED}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def replace(self, **changes) -> AtlasConfig:
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


def _check_orders(stratum: str, orders: tuple[int, ...]) -> None:
    name, top = f"{stratum}_orders", MAX_ORDER[stratum]
    if not isinstance(orders, tuple) or not orders:
        raise ValueError(f"{name} must be a non-empty tuple of ints, got {orders!r}")
    if any(isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= top for n in orders):
        raise ValueError(f"{name} must hold orders between 1 and {top}, got {orders!r}")
    if list(orders) != sorted(set(orders)):
        raise ValueError(f"{name} must be strictly increasing, got {orders!r}")


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def parse_size(text: str) -> int:
    """``"12.9M"`` -> 12_900_000, ``"500k"`` -> 500_000, ``"2G"``, ``"1e6"``, ``"4096"``,
    ``"64Ki"`` -> 65_536, ``"1Mi"`` -> 1_048_576.

    k, M and G are decimal (k = 1000) and Ki, Mi and Gi binary (Ki = 1024), in every flag that
    takes a size. Raises ``ValueError`` for anything else, or a size that is not a positive
    whole number.
    """
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(
            f"malformed size {text!r}: expected a number with optional k, M, G (x1000) "
            "or Ki, Mi, Gi (x1024)"
        )
    number, exponent, suffix = match.groups()
    value = float(number) * 10 ** int(exponent or 0) * _MULTIPLIER[(suffix or "").lower()]
    if value < 1 or value != int(value):
        raise ValueError(f"size {text!r} is not a positive whole number ({value:g})")
    return int(value)


def parse_quotas(text: str) -> dict[str, float]:
    """``"char=0.35,word=0.6,unicode=0.05"`` -> ``{"char": 0.35, ...}``; all three are required."""
    quotas: dict[str, float] = {}
    for item in str(text).split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in STRATA:
            raise ValueError(
                f"malformed quotas {text!r}: expected STRATUM=SHARE pairs for {', '.join(STRATA)}"
            )
        if name in quotas:
            raise ValueError(f"malformed quotas {text!r}: {name} given twice")
        try:
            quotas[name] = float(value)
        except ValueError:
            raise ValueError(
                f"malformed quotas {text!r}: {value.strip()!r} is not a number"
            ) from None
    missing = [s for s in STRATA if s not in quotas]
    if missing:
        raise ValueError(f"malformed quotas {text!r}: missing {', '.join(missing)}")
    return quotas
