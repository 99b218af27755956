"""Mechanism A vs Mechanism B: does the shell's attention do anything? (svae.md §14) [proposed]

Each spectral-α layer may scale mode j of the spectrum by at most (1 ± α_j), and α starts at
α(0) = 0.2·σ(−2) ≈ 0.0238. *Mechanism A*: on data whose patches depend on each other, training
pushes α up ("engages") and switching the attention off costs reconstruction. *Mechanism B*: on
independent patches every patch is solved alone, α stays flat and switching it off costs
nothing. The verdict combines Δα = α(final) − α(0) with the ablation gain g = L_ext(α forced to
0) − L_ext(trained); relative modulation and attention entropy describe how it engaged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

ALPHA_ENGAGED = 0.005
"""Δα at or above which α counts as engaged (Mechanism A)."""
ALPHA_FLAT = 0.002
"""|Δα| at or below which α counts as flat (Mechanism B)."""
GAIN_SIGMAS = 2.0
"""With seed spread given, A also needs g > GAIN_SIGMAS · std(g) over seeds."""
NEGLIGIBLE_GAIN_REL = 0.01
"""|g| ≤ NEGLIGIBLE_GAIN_REL · MSE(trained) counts as negligible (Mechanism B) [proposed]."""


def alpha_init(max_alpha: float = 0.2, logit: float = -2.0) -> float:
    """α(0) = max_alpha · σ(logit): 0.0238406 at the defaults."""
    return max_alpha / (1.0 + math.exp(-logit))


def alpha_delta(trajectory, alpha0: float | None = None) -> float:
    """Δα = mean α at the last step − α(0). trajectory: [T] mean_alpha per epoch, or [T, ...]
    (per layer / per mode, averaged at the last step); alpha0 defaults to :func:`alpha_init`."""
    t = torch.as_tensor(trajectory, dtype=torch.float64)
    if t.ndim == 0 or t.shape[0] == 0:
        raise ValueError("alpha_delta needs a non-empty trajectory [T, ...]")
    return float(t[-1].mean()) - (alpha_init() if alpha0 is None else alpha0)


def classify_mechanism(
    alpha_delta: float, gain: float, gain_std: float | None = None, *, mse_trained: float
) -> str:
    """'A', 'B' or 'indeterminate' from Δα and the ablation gain g (§14).

    A: Δα ≥ 0.005 and g > 0, and g > 2·gain_std when the spread over seeds is given.
    B: |Δα| ≤ 0.002 and |g| ≤ 0.01·mse_trained (negligible relative to the trained loss, so the
    rule is the same for images with MSE ~1e−3 and standardised features with MSE ~0.3).
    Anything else (e.g. Δα = +0.003, or α engaged without a gain) is 'indeterminate'.
    """
    if mse_trained < 0 or (gain_std is not None and gain_std < 0):
        raise ValueError(f"mse_trained and gain_std must be >= 0, got {mse_trained}, {gain_std}")
    significant = gain > 0 and (gain_std is None or gain > GAIN_SIGMAS * gain_std)
    if alpha_delta >= ALPHA_ENGAGED and significant:
        return "A"
    if abs(alpha_delta) <= ALPHA_FLAT and abs(gain) <= NEGLIGIBLE_GAIN_REL * mse_trained:
        return "B"
    return "indeterminate"


def mechanism_verdict(
    alpha_trajectory, gains: Sequence[float], *, mse_trained: float, alpha0: float | None = None
) -> dict:
    """The §14 verdict from an α trajectory and the ablation gain of each seed.

    gains: one g per seed; with ≥ 2 seeds their sample std enters the 2σ rule. Returns
    ``alpha_delta``, ``ablation_gain`` (mean), ``gain_std`` (None for one seed), ``mechanism``.
    """
    g = torch.as_tensor(list(gains), dtype=torch.float64)
    if g.numel() == 0:
        raise ValueError("mechanism_verdict needs at least one ablation gain")
    gain_std = float(g.std()) if g.numel() > 1 else None
    d = alpha_delta(alpha_trajectory, alpha0)
    mech = classify_mechanism(d, float(g.mean()), gain_std, mse_trained=mse_trained)
    return {
        "alpha_delta": d,
        "ablation_gain": float(g.mean()),
        "gain_std": gain_std,
        "mechanism": mech,
    }


def relative_modulation(S_att: torch.Tensor, omega: torch.Tensor) -> float:
    """r = mean|S_att − ω| / mean ω: how far attention moved the spectrum. [B, N, D] each."""
    if S_att.shape != omega.shape:
        raise ValueError(f"shapes differ: {tuple(S_att.shape)} vs {tuple(omega.shape)}")
    w = omega.detach().double()
    return float((S_att.detach().double() - w).abs().mean() / w.mean().clamp_min(1e-12))


def attention_entropy_ratio(attn: torch.Tensor) -> float:
    """Mean row entropy of attention weights over log N_keys: 1 = uniform, → 0 = one-hot.

    attn: [..., N_q, N_k] rows on the simplex (e.g. [B, heads, N, N]); needs N_k ≥ 2.
    """
    if attn.ndim < 2 or attn.shape[-1] < 2:
        raise ValueError(f"attention_entropy_ratio needs [..., N_q, N_k >= 2], got {attn.shape}")
    p = attn.detach().double()
    h = -torch.special.xlogy(p, p).sum(dim=-1)
    return float(h.mean() / math.log(attn.shape[-1]))
