"""Classical compressors as bits-per-byte baselines for a language model's held-out score.

A language model's held-out bits/byte is only meaningful next to what an off-the-shelf compressor
achieves on the same bytes. Each baseline is reported two ways: *plain* (the held-out bytes
compressed on their own) and *primed* (the extra bytes it costs to append the held-out text to the
training text, ``len(C(train + heldout)) - len(C(train))``), which is the fair comparison with a
model that has seen the training text. A compressor can only use what lies in its window (gzip:
32 KiB, bzip2: a 900 kB block, xz -9e: a 64 MiB dictionary, zstd --long: 128 MiB), so priming uses
only the last ``max_prime_bytes`` of the training text and records how many it used.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import lzma
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import zstandard


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def _bzip2(data: bytes) -> bytes:
    return bz2.compress(data, compresslevel=9)


def _xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)


def _zstd(data: bytes) -> bytes:
    # `zstd -19 --long` is level 19 with long-distance matching and a 2**27 window; from_level
    # (zstandard 0.25) fills in level 19's search parameters and these two override theirs.
    params = zstandard.ZstdCompressionParameters.from_level(19, enable_ldm=True, window_log=27)
    return zstandard.ZstdCompressor(compression_params=params).compress(data)


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip -9": _gzip,
    "bzip2 -9": _bzip2,
    "xz -9e": _xz,
    "zstd -19 --long": _zstd,
}
"""Name (the equivalent command line) -> compress function, in the order tables list them."""


@dataclass(frozen=True)
class CompressorResult:
    """One compressor's score on one held-out text."""

    name: str
    """Key in ``COMPRESSORS``, e.g. ``"xz -9e"``."""
    bytes_in: int
    """Length of the held-out text."""
    bytes_out: int
    """Length of the held-out text compressed on its own (container headers included)."""
    bpb: float
    """``8 * bytes_out / bytes_in``: bits per held-out byte."""
    primed_bytes_out: int | None = None
    """``len(C(prime + heldout)) - len(C(prime))``; None when no training text was given."""
    primed_bpb: float | None = None
    """``8 * primed_bytes_out / bytes_in``; None when no training text was given."""
    prime_bytes: int | None = None
    """How many trailing bytes of the training text primed the compressor; None when unprimed."""


def compressor_baselines(
    heldout: bytes,
    train: bytes | None = None,
    names: Sequence[str] | None = None,
    max_prime_bytes: int = 64_000_000,
) -> list[CompressorResult]:
    """Score each named compressor (default: all of ``COMPRESSORS``) on ``heldout``.

    With ``train``, also the primed score, using the last ``max_prime_bytes`` of it: the default
    fits xz -9e's 64 MiB dictionary and zstd's 128 MiB window; gzip and bzip2 see less of it
    anyway. Priming costs two compressions of up to ``max_prime_bytes`` per compressor, and xz -9e
    and zstd -19 run at about 1 MB/s, so lower it for quick looks.
    """
    if not heldout:
        raise ValueError("held-out bytes are empty")
    if max_prime_bytes <= 0:
        raise ValueError(f"max_prime_bytes must be positive, got {max_prime_bytes}")
    names = list(COMPRESSORS) if names is None else list(names)
    unknown = [n for n in names if n not in COMPRESSORS]
    if unknown:
        valid = ", ".join(repr(n) for n in COMPRESSORS)
        raise ValueError(f"unknown compressor(s) {unknown}; valid names: {valid}")

    prime = None if train is None else bytes(train[-max_prime_bytes:])
    results = []
    for name in names:
        compress = COMPRESSORS[name]
        out = len(compress(heldout))
        primed_out = primed_bpb = prime_bytes = None
        if prime is not None:
            primed_out = len(compress(prime + heldout)) - len(compress(prime))
            primed_bpb = 8.0 * primed_out / len(heldout)
            prime_bytes = len(prime)
        results.append(
            CompressorResult(
                name=name,
                bytes_in=len(heldout),
                bytes_out=out,
                bpb=8.0 * out / len(heldout),
                primed_bytes_out=primed_out,
                primed_bpb=primed_bpb,
                prime_bytes=prime_bytes,
            )
        )
    return results


def results_table(results: Sequence[CompressorResult]) -> list[dict]:
    """One dict per result, fields in declaration order (``bars_figure(rows, "name", "bpb")``)."""
    return [dataclasses.asdict(r) for r in results]


def metric_name(name: str) -> str:
    """``"zstd -19 --long"`` -> ``"zstd_19_long"``: lowercase, runs of other characters -> ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def as_metrics(results: Sequence[CompressorResult]) -> dict[str, float]:
    """MLflow metrics: ``compress/<name>/bpb`` and, when primed, ``compress/<name>/primed_bpb``."""
    metrics = {}
    for r in results:
        key = f"compress/{metric_name(r.name)}"
        metrics[f"{key}/bpb"] = r.bpb
        if r.primed_bpb is not None:
            metrics[f"{key}/primed_bpb"] = r.primed_bpb
    return metrics


def row_metrics(rows: Sequence[dict], prefix: str = "eval/compress") -> dict[str, float]:
    """``as_metrics`` of ``results_table`` rows (the form results are kept in JSON)."""
    metrics = {}
    for row in rows:
        key = f"{prefix}/{metric_name(row['name'])}"
        metrics[f"{key}/bpb"] = row["bpb"]
        if row.get("primed_bpb") is not None:
            metrics[f"{key}/primed_bpb"] = row["primed_bpb"]
    return metrics
