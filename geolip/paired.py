"""Paired comparisons of models scored on the same held-out targets: Δ bits/byte ± SE.

Every AlephLM training ends by scoring each target trigram of its held-out bytes once (the
``windowed`` regime, ``geolip.aleph.bpb.target_nll_windowed``). Two runs of one corpus and
``eval_bytes`` score the *same* targets, so their difference can be taken target by target, and
the noise of "which text happened to be held out" cancels where the models agree.

The standard error ``[proposed]``:

- **windows**: the per-target differences (arm minus reference, each averaged over its seeds) are
  cut into ``blocks`` contiguous, nearly equal blocks (256 by default, so the SE rests on at least
  256 windows however long they are); ``SE_w = std(block means) / sqrt(blocks)``. Blocks of
  hundreds of bytes keep the serial correlation of neighbouring targets inside a block.
- **seeds**: with two or more seeds the runs' own spread is added. Seeds both arms share are
  paired (``SE_s = std(Δ_seed) / sqrt(S)``); otherwise the two means' seed errors add up.
- ``SE = sqrt(SE_w² + SE_s²)``: the two sources are independent (the windows are the same for
  every seed, so the between-seed spread holds no window noise).

A Δ within ``z·SE`` (z = 2) is reported as "within noise".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

BLOCKS = 256
"""Windows the per-target differences are averaged in, for the standard error."""
Z = 2.0
"""A difference within ``Z`` standard errors is within noise."""
LN2 = math.log(2.0)


def bits_per_byte(nll_nats: np.ndarray) -> np.ndarray:
    """Per-target trigram NLL in nats -> bits per byte of that target."""
    return np.asarray(nll_nats, np.float64) / (3 * LN2)


@dataclass(frozen=True)
class Estimate:
    """A mean bits/byte (or a Δ of two) with its standard error and what it rests on."""

    mean: float
    se: float
    se_windows: float
    se_seeds: float
    blocks: int
    seeds: int

    def verdict(self, z: float = Z) -> str:
        """``"within noise"``, ``"lower"`` (better) or ``"higher"`` than the reference."""
        return verdict(self.mean, self.se, z)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def verdict(delta: float, se: float, z: float = Z) -> str:
    """A Δ with its SE read as ``"within noise"`` (``|Δ| <= z·SE``, or no finite SE),
    ``"lower"`` or ``"higher"``."""
    if not math.isfinite(se) or abs(delta) <= z * se:
        return "within noise"
    return "lower" if delta < 0 else "higher"


def _block_se(values: np.ndarray, blocks: int) -> tuple[float, int]:
    """``(std of block means / sqrt(k), k)`` of ``values: [N]`` cut into ``min(blocks, N)`` blocks."""
    k = min(blocks, len(values))
    if k < 2:
        return math.nan, k
    means = np.array([b.mean() for b in np.array_split(values, k)])
    return float(means.std(ddof=1) / math.sqrt(k)), k


def _check(runs: Mapping[str, np.ndarray], what: str) -> int:
    if not runs:
        raise ValueError(f"no {what} runs to compare")
    lengths = {len(v) for v in runs.values()}
    if len(lengths) != 1:
        raise ValueError(f"the {what} runs scored different targets ({sorted(lengths)})")
    return lengths.pop()


def _seed_mean(runs: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.mean(np.stack([np.asarray(v, np.float64) for v in runs.values()]), axis=0)


def _seed_se(means: list[float]) -> float:
    return float(np.std(means, ddof=1) / math.sqrt(len(means))) if len(means) > 1 else 0.0


def estimate(runs: Mapping[str, np.ndarray], blocks: int = BLOCKS) -> Estimate:
    """One arm's bits/byte from ``{seed: bits [N]}``: its mean with window and seed errors."""
    _check(runs, "arm")
    mean = _seed_mean(runs)
    se_w, k = _block_se(mean, blocks)
    se_s = _seed_se([float(np.mean(v)) for v in runs.values()])
    return Estimate(float(mean.mean()), math.hypot(se_w, se_s), se_w, se_s, k, len(runs))


def paired_delta(
    arm: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], blocks: int = BLOCKS
) -> Estimate:
    """Δ = arm − reference bits/byte from ``{seed: bits [N]}`` each, over the same N targets."""
    n = _check(arm, "arm")
    if _check(ref, "reference") != n:
        raise ValueError("the arm and its reference scored different held-out targets")
    diff = _seed_mean(arm) - _seed_mean(ref)
    se_w, k = _block_se(diff, blocks)
    shared = sorted(set(arm) & set(ref))
    if len(shared) > 1:  # paired over seeds too
        se_s = _seed_se([float(np.mean(arm[s] - ref[s])) for s in shared])
    else:
        a, r = ([float(np.mean(v)) for v in x.values()] for x in (arm, ref))
        se_s = math.hypot(_seed_se(a), _seed_se(r))
    seeds = len(shared) if len(shared) > 1 else min(len(arm), len(ref))
    return Estimate(float(diff.mean()), math.hypot(se_w, se_s), se_w, se_s, k, seeds)
