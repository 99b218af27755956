"""Trigram banks cut from the atlas (spec §4.2) and their coverage on held-out text (§5.3).

A bank is ``N`` unique byte trigrams ``trigrams: uint8 [N, 3]`` with a log prior
``log_prior: float32 [N]``, saved as safetensors with a JSON ``provenance`` in the metadata: the
format ``geolip.aleph.bank.load_bank`` reads. Construction, per §4.2:

1. For each stratum ``s``, every 3-byte window of every kept entry (all offsets, not only
   multiples of 3: an entry such as ``b"of the "`` can sit at any phase of the stream) is
   weighted by the entry's count and summed into ``c_s(x)`` — one vectorised DuckDB query.
2. The top ``⌊q_s N⌋`` trigrams of each stratum are taken, deduplicated, and the bank is
   backfilled from the pooled ranking ``Σ_s c_s(x) / Σ_x c_s(x)`` until it holds ``N`` rows.
3. ``ρ = log p(x)`` with ``p`` the pooled score divided by the number of non-empty strata, so
   that ``p`` is a probability distribution over all trigrams of the atlas.

Every ranking breaks ties by the trigram's bytes, so a bank is a pure function of the atlas.
Banks come from training text only: an atlas of another split is refused unless asked for.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from safetensors import safe_open
from safetensors.numpy import save_file

from atlas.corpus import DEFAULT_HELDOUT, corpus_bytes
from atlas.query import STRATA, AtlasError, one_line, open_atlas, read_manifest

DEFAULT_QUOTAS = {"char": 0.6, "word": 0.3, "unicode": 0.1}
BANK_FORMAT = "geolip-bank/1"
QUOTA_TOLERANCE = 1e-6

# All windows of every entry at once: one row per (entry, offset) from unnest(range(...)) in the
# projection, then a 3-byte slice (1-based, inclusive). The lateral-join spelling
# (FROM atlas, range(...)) plans a hash join on the gram itself and is much slower.
_TRIGRAM_SQL = """
SELECT stratum, gram[i:i + 2] AS tri, sum(count)::DOUBLE AS score
FROM (
    SELECT stratum, gram, count, unnest(range(1, octet_length(gram) - 1)) AS i
    FROM atlas
    WHERE octet_length(gram) >= 3
)
GROUP BY ALL
"""


def parse_quotas(spec: str | dict | None) -> dict[str, float]:
    """Quotas from ``"char=0.6,word=0.3,unicode=0.1"`` (or a dict); ``None`` gives the default.

    Strata left out get 0. Unknown strata, duplicates, unparseable or negative values and sums
    other than 1 are errors: a remainder is never silently filled from the pooled ranking.
    """
    if spec is None:
        return dict(DEFAULT_QUOTAS)
    items = spec.items() if isinstance(spec, dict) else _quota_items(spec)
    quotas = dict.fromkeys(STRATA, 0.0)
    seen: set[str] = set()
    for name, value in items:
        if name not in STRATA:
            raise AtlasError(
                f"unknown stratum {name!r} in quotas: expected some of {', '.join(STRATA)}"
            )
        if name in seen:
            raise AtlasError(f"stratum {name!r} appears twice in quotas")
        seen.add(name)
        try:
            q = float(value)
        except (TypeError, ValueError):
            raise AtlasError(f"quota for {name!r} is not a number: {value!r}") from None
        if not math.isfinite(q) or q < 0:
            raise AtlasError(f"quota for {name!r} must be a finite number >= 0, got {value!r}")
        quotas[name] = q
    total = sum(quotas.values())
    if abs(total - 1.0) > QUOTA_TOLERANCE:
        raise AtlasError(f"quotas must sum to 1, got {total:g} ({_format_quotas(quotas)})")
    return quotas


def _quota_items(spec: str) -> list[tuple[str, str]]:
    items = []
    for part in spec.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise AtlasError(
                f"malformed quotas {spec!r}: expected STRATUM=FRACTION,... "
                "such as char=0.6,word=0.3,unicode=0.1"
            )
        items.append((name.strip(), value.strip()))
    return items


def _format_quotas(quotas: dict[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in quotas.items())


def trigram_scores(atlas_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{stratum: (codes int64 [M], scores float64 [M])}``: ``c_s`` over the trigrams it
    contains, ``code = 65536·b1 + 256·b2 + b3``. Empty strata are left out."""
    con = open_atlas(atlas_dir)
    try:
        table = con.sql(_TRIGRAM_SQL).to_arrow_table()
    except Exception as exc:  # duckdb.Error (e.g. a part file corrupt past its footer)
        raise AtlasError(f"reading atlas {atlas_dir} failed: {one_line(exc)}") from exc
    finally:
        con.close()
    out = {}
    for stratum in STRATA:
        part = table.filter(pc.equal(table.column("stratum"), stratum))
        if part.num_rows:
            out[stratum] = (_codes(part.column("tri")), part.column("score").to_numpy())
    return out


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    """3-byte binary cells -> int64 codes, read straight from the Arrow value buffers."""
    parts = []
    for chunk in column.chunks:
        chunk = chunk.cast(pa.large_binary())
        start = chunk.offset
        offsets = np.frombuffer(chunk.buffers()[1], np.int64)[start : start + len(chunk) + 1]
        values = np.frombuffer(chunk.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
        b = values.reshape(-1, 3).astype(np.int64)
        parts.append(b[:, 0] * 65536 + b[:, 1] * 256 + b[:, 2])
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _ranked(codes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``codes`` by score descending, ties by code (= by bytes) ascending."""
    return codes[np.lexsort((codes, -scores))]


def select_bank(
    scores: dict[str, tuple[np.ndarray, np.ndarray]],
    size: int,
    quotas: dict[str, float],
    clamp: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """§4.2 on precomputed scores: ``(codes [N], log_prior [N], contributions)``, rows ordered by
    pooled score (highest first). A ``size`` above the distinct trigrams is refused, or with
    ``clamp`` cut down to them."""
    if not scores:
        raise AtlasError("the atlas holds no entry of 3 bytes or more: no trigram to choose")
    all_codes = np.unique(np.concatenate([c for c, _ in scores.values()]))
    if clamp:
        size = min(size, len(all_codes))
    if size > len(all_codes):
        raise AtlasError(
            f"bank size {size} is larger than the {len(all_codes)} distinct trigrams this atlas "
            f"can supply; use --size {len(all_codes)} or less"
        )
    pooled = np.zeros(len(all_codes))
    for codes, score in scores.values():
        pooled[np.searchsorted(all_codes, codes)] += score / score.sum()
    chosen: dict[int, None] = {}  # insertion-ordered set
    contributions = {}
    for stratum in STRATA:
        want = math.floor(quotas.get(stratum, 0.0) * size)
        codes, score = scores.get(stratum, (np.zeros(0, np.int64), np.zeros(0)))
        top = _ranked(codes, score)[:want]
        before = len(chosen)
        chosen.update(dict.fromkeys(top.tolist()))
        contributions[stratum] = {
            "quota_rows": want,
            "taken": len(top),
            "new": len(chosen) - before,
            "distinct_trigrams": len(codes),
        }
    # Backfill: the pooled ranking, minus what the quotas already took.
    picked = np.fromiter(chosen, np.int64, len(chosen))
    ranked = _ranked(all_codes, pooled)
    extra = ranked[~np.isin(ranked, picked)][: size - len(picked)]
    backfill = len(extra)
    picked = np.concatenate([picked, extra])
    contributions["backfill"] = backfill
    p = pooled[np.searchsorted(all_codes, picked)] / len(scores)
    order = np.lexsort((picked, -p))
    return picked[order], np.log(p[order]), contributions


def build_bank(
    atlas_dir: str | Path,
    size: int,
    quotas: str | dict | None = None,
    *,
    allow_split: bool = False,
    clamp: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """A bank cut from the atlas: ``(trigrams uint8 [N, 3], log_prior float32 [N], provenance)``.

    ``quotas`` as in ``parse_quotas``. Refuses an atlas built from a split other than ``train``
    unless ``allow_split`` (held-out text in the bank would inflate its coverage). A ``size``
    above the trigrams the atlas can supply is refused, or with ``clamp`` cut down to them
    (``provenance["requested"]`` keeps the size asked for).
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise AtlasError(f"bank size must be a positive integer, got {size!r}")
    q = parse_quotas(quotas)
    root = Path(atlas_dir).resolve()
    manifest = read_manifest(root)
    corpus = manifest.get("corpus", {})
    if corpus.get("split") != "train" and not allow_split:
        raise AtlasError(
            f"atlas {root} was built from split {corpus.get('split')!r}: banks come from the "
            "training split only (pass allow_split / --allow-split to override)"
        )
    codes, log_prior, contributions = select_bank(trigram_scores(root), size, q, clamp)
    trigrams = np.stack([codes // 65536, (codes // 256) % 256, codes % 256], axis=1)
    provenance = {
        "format": BANK_FORMAT,
        "source": "atlas",
        "atlas": str(root),
        "config_hash": manifest.get("config_hash"),
        "corpus": {k: corpus.get(k) for k in ("uri", "split", "fingerprint", "heldout_fraction")},
        "size": len(codes),
        "requested": size,
        "quotas": q,
        "contributions": contributions,
        "prior": "log of the pooled normalised score (1/S) sum_s c_s(x) / sum_x c_s(x)",
    }
    return trigrams.astype(np.uint8), log_prior.astype(np.float32), provenance


def save_bank_file(
    path: str | Path,
    trigrams: np.ndarray,
    log_prior: np.ndarray,
    provenance: dict,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a bank atomically (a temporary file in the same directory, renamed into place).

    Refuses an existing ``path`` unless ``overwrite``; a failure leaves nothing behind.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"bank file {path} already exists (pass --overwrite to replace it)")
    trigrams = np.ascontiguousarray(trigrams, np.uint8)
    log_prior = np.ascontiguousarray(log_prior, np.float32)
    if trigrams.ndim != 2 or trigrams.shape[1] != 3 or log_prior.shape != (len(trigrams),):
        raise AtlasError(
            f"bank arrays must be trigrams [N, 3] and log_prior [N], "
            f"got {trigrams.shape} and {log_prior.shape}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        arrays = {"trigrams": trigrams, "log_prior": log_prior}
        save_file(arrays, tmp, metadata={"provenance": json.dumps(provenance, sort_keys=True)})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_bank_file(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(trigrams uint8 [N, 3], log_prior float32 [N], provenance)`` without torch."""
    path = Path(path)
    if path.is_dir():
        raise AtlasError(f"bank file {path} is a directory; expected a .safetensors bank file")
    if not path.is_file():
        raise AtlasError(f"bank file {path} does not exist")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            trigrams, log_prior = fh.get_tensor("trigrams"), fh.get_tensor("log_prior")
        provenance = json.loads(meta.get("provenance", "{}"))
    except Exception as exc:  # safetensors and json raise several types on corrupt input
        raise AtlasError(
            f"bank file {path} is not a readable bank ({one_line(exc)}); expected a .safetensors "
            "file written by `geolip bank build`"
        ) from exc
    if not isinstance(provenance, dict):
        raise AtlasError(f"bank file {path}: its provenance metadata is not a JSON object")
    if trigrams.ndim != 2 or trigrams.shape[1] != 3 or log_prior.shape != (len(trigrams),):
        raise AtlasError(
            f"bank file {path} holds trigrams {trigrams.shape} and log_prior {log_prior.shape}; "
            "expected [N, 3] and [N]"
        )
    return trigrams, log_prior, provenance


def trigram_codes(rows: np.ndarray) -> np.ndarray:
    """``[..., 3]`` bytes -> ``[...]`` int64 codes ``65536·b1 + 256·b2 + b3``."""
    r = rows.astype(np.int64)
    return r[..., 0] * 65536 + r[..., 1] * 256 + r[..., 2]


def bank_summary(path: str | Path, top: int = 10) -> dict:
    """Size, provenance, the ``top`` rows by prior, and the prior's entropy (bits, after
    renormalising over the bank) and mass (the pooled atlas probability the bank holds)."""
    trigrams, log_prior, provenance = read_bank_file(path)
    p = np.exp(log_prior.astype(np.float64))
    mass = float(p.sum())
    q = p / mass if mass > 0 else p
    entropy = float(-(q[q > 0] * np.log2(q[q > 0])).sum())
    order = np.lexsort((trigram_codes(trigrams), -log_prior))[:top]
    return {
        "path": str(path),
        "size": len(trigrams),
        "prior_entropy_bits": entropy,
        "prior_mass": mass,
        "top": [(bytes(trigrams[i].tolist()), float(log_prior[i])) for i in order],
        "provenance": provenance,
    }


def bank_coverage(
    path: str | Path,
    corpus_uri: str,
    split: str = "validation",
    heldout_fraction: float | None = None,
) -> dict:
    """Coverage of the bank on a corpus split (§5.3): the fraction of the stream's phase-0
    trigrams (bytes ``3t..3t+2``, every complete one) that are bank rows.

    ``heldout_fraction`` defaults to the one recorded in the bank's provenance (so the split
    matches the atlas's), else the corpus default. Also reports trigram and distinct counts.
    """
    trigrams, _, provenance = read_bank_file(path)
    if heldout_fraction is None:
        heldout_fraction = (provenance.get("corpus") or {}).get("heldout_fraction")
    if heldout_fraction is None:
        heldout_fraction = DEFAULT_HELDOUT
    data, record = corpus_bytes(corpus_uri, split, heldout_fraction)
    arr = np.frombuffer(data, np.uint8)
    n = len(arr) // 3
    if n == 0:
        raise AtlasError(f"{corpus_uri} split {split!r} has fewer than 3 bytes: no trigram")
    codes = trigram_codes(arr[: 3 * n].reshape(n, 3))
    inside = np.isin(codes, trigram_codes(trigrams))
    distinct, first = np.unique(codes, return_index=True)
    return {
        "corpus": record,
        "n_trigrams": int(n),
        "distinct_trigrams": int(len(distinct)),
        "in_bank": int(inside.sum()),
        "coverage": float(inside.mean()),
        "distinct_in_bank": int(inside[first].sum()),
        "distinct_coverage": float(inside[first].mean()),
    }
