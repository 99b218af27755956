"""Compressor baselines: round trips, bits/byte bounds, priming windows, errors and metric keys."""

from __future__ import annotations

import bz2
import gzip
import lzma
import random

import pytest
import zstandard

from pipelines.compress import (
    COMPRESSORS,
    CompressorResult,
    as_metrics,
    compressor_baselines,
    metric_name,
    results_table,
)

DECOMPRESSORS = {
    "gzip -9": gzip.decompress,
    "bzip2 -9": bz2.decompress,
    "xz -9e": lzma.decompress,
    "zstd -19 --long": zstandard.ZstdDecompressor(max_window_size=2**27).decompress,
}


def english_like(n_words: int, seed: int = 0) -> bytes:
    """Zipf-ish words from a small vocabulary with punctuation: compressible, not repetitive."""
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvk"
    vocab = ["".join(rng.choices(letters, k=rng.randint(1, 9))) for _ in range(2000)]
    weights = [1 / (i + 1) for i in range(len(vocab))]
    words = rng.choices(vocab, weights=weights, k=n_words)
    text = " ".join(w + ("." if rng.random() < 0.08 else "") for w in words)
    return text.encode()


def test_compressors_in_table_order() -> None:
    assert list(COMPRESSORS) == ["gzip -9", "bzip2 -9", "xz -9e", "zstd -19 --long"]
    assert set(DECOMPRESSORS) == set(COMPRESSORS)


@pytest.mark.parametrize("name", list(COMPRESSORS))
def test_round_trip(name: str) -> None:
    data = english_like(5000) + random.Random(1).randbytes(3000) + b"\x00" * 1000
    packed = COMPRESSORS[name](data)
    assert DECOMPRESSORS[name](packed) == data
    assert COMPRESSORS[name](data) == packed  # deterministic (gzip: mtime=0)


def test_zstd_uses_long_window() -> None:
    # Plain level 19 caps the window at 8 MiB; --long's 2**27 is cut only to the input's size.
    data = bytes(9 << 20)  # zeros: quick to compress even at level 19
    plain = zstandard.ZstdCompressor(level=19).compress(data)
    assert zstandard.get_frame_parameters(plain).window_size == 2**23
    long = COMPRESSORS["zstd -19 --long"](data)
    assert zstandard.get_frame_parameters(long).window_size >= len(data)


def test_random_bytes_cost_about_8_bits() -> None:
    heldout = random.Random(3).randbytes(65_536)
    results = compressor_baselines(heldout)
    assert [r.name for r in results] == list(COMPRESSORS)
    for r in results:
        assert 7.9 < r.bpb < 8.3, r
        assert r.bytes_in == len(heldout)
        assert r.bytes_out == len(COMPRESSORS[r.name](heldout))
        assert r.bpb == pytest.approx(8 * r.bytes_out / r.bytes_in)
        assert r.primed_bytes_out is r.primed_bpb is r.prime_bytes is None


def test_text_compresses_well_below_8_bits() -> None:
    repetitive = b"the quick brown fox jumps over the lazy dog. " * 2000
    for r in compressor_baselines(repetitive):
        assert r.bpb < 0.5, r
    # Only bounds per compressor: which one wins on synthetic text is not guaranteed.
    for r in compressor_baselines(english_like(30_000)):
        assert 1.0 < r.bpb < 5.0, r


def test_priming_on_seen_bytes_is_nearly_free() -> None:
    train = random.Random(4).randbytes(20_000)
    heldout = train[-10_000:]
    results = {r.name: r for r in compressor_baselines(heldout, train)}
    gz = results["gzip -9"]
    assert 7.9 < gz.bpb < 8.3
    assert gz.primed_bpb < 1.0
    assert gz.primed_bpb == pytest.approx(8 * gz.primed_bytes_out / len(heldout))
    assert gz.primed_bytes_out == len(COMPRESSORS["gzip -9"](train + heldout)) - len(
        COMPRESSORS["gzip -9"](train)
    )
    for r in results.values():
        assert r.prime_bytes == len(train)
        assert r.primed_bpb < r.bpb / 2, r


def test_priming_uses_the_last_max_prime_bytes() -> None:
    rng = random.Random(5)
    early, late = rng.randbytes(10_000), rng.randbytes(10_000)
    train = early + rng.randbytes(30_000) + late
    zstd = ["zstd -19 --long"]

    (whole,) = compressor_baselines(early, train, names=zstd)
    assert whole.prime_bytes == len(train) and whole.primed_bpb < 1.0

    (window,) = compressor_baselines(early, train, names=zstd, max_prime_bytes=20_000)
    assert window.prime_bytes == 20_000
    assert window.primed_bpb > 7.5  # `early` lies outside the window: nothing to reuse

    (recent,) = compressor_baselines(late, train, names=zstd, max_prime_bytes=20_000)
    assert recent.prime_bytes == 20_000 and recent.primed_bpb < 1.0


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="held-out bytes are empty"):
        compressor_baselines(b"")
    with pytest.raises(ValueError, match="'lz4'.*valid names: 'gzip -9', 'bzip2 -9'"):
        compressor_baselines(b"abc", names=["gzip -9", "lz4"])
    with pytest.raises(ValueError, match="max_prime_bytes must be positive"):
        compressor_baselines(b"abc", b"train", max_prime_bytes=0)


def test_subset_keeps_requested_order() -> None:
    results = compressor_baselines(b"hello " * 100, names=["xz -9e", "gzip -9"])
    assert [r.name for r in results] == ["xz -9e", "gzip -9"]


def test_metric_names_are_sanitised() -> None:
    assert metric_name("gzip -9") == "gzip_9"
    assert metric_name("zstd -19 --long") == "zstd_19_long"
    assert metric_name("  XZ  -9e!! ") == "xz_9e"


def test_as_metrics_and_table() -> None:
    names = ["gzip -9", "zstd -19 --long"]
    heldout, train = english_like(2000, seed=6), english_like(4000, seed=7)

    plain = as_metrics(compressor_baselines(heldout, names=names))
    assert set(plain) == {"compress/gzip_9/bpb", "compress/zstd_19_long/bpb"}

    results = compressor_baselines(heldout, train, names=names)
    metrics = as_metrics(results)
    assert set(metrics) == {
        "compress/gzip_9/bpb",
        "compress/gzip_9/primed_bpb",
        "compress/zstd_19_long/bpb",
        "compress/zstd_19_long/primed_bpb",
    }
    assert metrics["compress/gzip_9/primed_bpb"] == results[0].primed_bpb
    assert all(isinstance(v, float) for v in metrics.values())

    rows = results_table(results)
    assert [row["name"] for row in rows] == names
    assert list(rows[0]) == [
        "name",
        "bytes_in",
        "bytes_out",
        "bpb",
        "primed_bytes_out",
        "primed_bpb",
        "prime_bytes",
    ]
    assert CompressorResult(**rows[1]) == results[1]
