"""``geolip.paired``: Δ ± SE of two models on the same held-out targets, over windows and seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geolip.paired import bits_per_byte, estimate, paired_delta


def _text_noise(n: int, seed: int = 0) -> np.ndarray:
    """Per-target bits with a slowly varying difficulty (the text), like real held-out bytes."""
    rng = np.random.default_rng(seed)
    hard = np.repeat(rng.normal(0, 1.0, n // 64 + 1), 64)[:n]
    return 2.5 + hard + rng.normal(0, 0.5, n)


def test_pairing_cancels_the_text_and_finds_a_small_true_difference() -> None:
    n = 64 * 1024
    text = _text_noise(n)
    rng = np.random.default_rng(1)
    ref = {"0": text}
    arm = {"0": text - 0.01 + rng.normal(0, 0.05, n)}  # 0.01 bits/byte better, per target
    d = paired_delta(arm, ref)
    assert d.mean == pytest.approx(-0.01, abs=0.002)
    assert d.blocks == 256 and d.seeds == 1 and d.se_seeds == 0.0
    # Target noise 0.05 over n targets: SE ≈ 0.05 / sqrt(n).
    assert d.se == pytest.approx(0.05 / math.sqrt(n), rel=0.25)
    assert d.verdict() == "lower"
    # Unpaired, the text's own spread swamps the same difference: the arm's SE is far larger.
    assert estimate(arm).se > 20 * d.se
    # No difference at all is within noise.
    assert paired_delta({"0": text + rng.normal(0, 0.05, n)}, ref).verdict() == "within noise"


def test_seeds_add_their_spread_and_are_paired_when_shared() -> None:
    n = 256 * 40
    text = _text_noise(n, seed=3)
    offsets = {"0": 0.00, "1": 0.08, "2": -0.05}  # run-to-run spread of training
    ref = {s: text + o for s, o in offsets.items()}
    arm = {s: text + o - 0.02 for s, o in offsets.items()}  # every seed 0.02 better
    paired = paired_delta(arm, ref)
    assert paired.mean == pytest.approx(-0.02, abs=1e-12)
    assert paired.se_seeds == pytest.approx(0.0, abs=1e-12)  # shared seeds: offsets cancel
    assert paired.seeds == 3
    # The same runs under other seed names cannot be paired: the offsets' spread counts.
    renamed = {f"x{s}": v for s, v in arm.items()}
    unpaired = paired_delta(renamed, ref)
    spread = np.std(list(offsets.values()), ddof=1) / math.sqrt(3)
    assert unpaired.se_seeds == pytest.approx(math.hypot(spread, spread), rel=1e-9)
    assert unpaired.se > paired.se
    # One arm's own figure: the seeds' spread plus the windows'.
    est = estimate(ref)
    assert est.mean == pytest.approx(text.mean() + np.mean(list(offsets.values())))
    assert est.se == pytest.approx(math.hypot(est.se_windows, spread), rel=1e-9)


def test_different_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="different held-out targets"):
        paired_delta({"0": np.zeros(300)}, {"0": np.zeros(301)})
    with pytest.raises(ValueError, match="arm runs scored different targets"):
        estimate({"0": np.zeros(300), "1": np.zeros(200)})
    with pytest.raises(ValueError, match="no arm runs"):
        estimate({})


def test_short_texts_use_as_many_windows_as_targets_and_units_are_bits_per_byte() -> None:
    d = paired_delta({"0": np.arange(10.0)}, {"0": np.zeros(10)})
    assert d.blocks == 10
    assert math.isnan(paired_delta({"0": np.ones(1)}, {"0": np.zeros(1)}).se)
    assert paired_delta({"0": np.ones(1)}, {"0": np.zeros(1)}).verdict() == "within noise"
    assert bits_per_byte(np.array([3 * math.log(2)]))[0] == pytest.approx(1.0)
