"""The SVAE's held-out frame deviation is measured against ū(D_b), the frames' intrinsic width
(svae.md §5.4, §11.2), recomputed here by hand with ū(4) in closed form."""

from __future__ import annotations

import itertools
import math

import torch

from geolip.svae.adapters import structured_images
from geolip.svae.config import tiny_test
from geolip.svae.model import SVAECompanion
from geolip.svae.train import evaluate

# ū(4) = E[acos|⟨x, y⟩|] on S³: the |cos| density is ∝ √(1 − t²), so with t = cos θ,
# ū = ∫θ sin²θ dθ / ∫sin²θ dθ over [0, π/2] = (π²/16 + 1/4)/(π/4) = π/4 + 1/π.
U_BAR_4 = math.pi / 4 + 1 / math.pi


def _mean_angle(frame: torch.Tensor) -> float:
    """Mean projective angle over row pairs of one frame [V, D], pair by pair."""
    rows = frame.double() / frame.double().norm(dim=-1, keepdim=True)
    pairs = itertools.combinations(range(len(rows)), 2)
    angles = [math.acos(min(abs(float(rows[i] @ rows[j])), 1.0)) for i, j in pairs]
    return sum(angles) / len(angles)


@torch.no_grad()
def test_held_out_frame_deviation_is_against_the_battery_width():
    torch.manual_seed(0)
    cfg = tiny_test()
    assert cfg.D_base == 4 and cfg.D_lens > cfg.D_base  # a lens that lifts: the two differ
    model = SVAECompanion(cfg).eval()
    x = structured_images(6, H=cfg.img_size, W=cfg.img_size, seed=1)
    frames = model(x)["M_stem"]  # [B, N, V, D_b]
    expect = sum(_mean_angle(f) for f in frames.reshape(-1, cfg.V, cfg.D_base)) / (
        frames.shape[0] * frames.shape[1]
    )
    got = evaluate(model, x, x.mean(0))["frame_deviation"]
    assert abs(got - (expect - U_BAR_4)) < 1e-5
