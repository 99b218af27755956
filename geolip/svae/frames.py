"""Frames: matrices whose rows are unit vectors, the sign gauge of their rows (spec §1, §3.7), and
the rigidity read-outs built on their projective angles (§11).

A frame's rows are read as *lines* (v ≡ −v), so every statistic here uses |cos| only. Rigidity
asks whether the pairwise line angles of a frame look like those of uniformly random lines in its
*intrinsic* dimension: ``deviation`` compares the mean angle with the uniform baseline ū(D), the
envelope and barrier turn that into a verdict and a hinge, the statute classes name the regime,
and the CV probes (angle CV, ω CV, pentachoron CV) are further shape read-outs.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from geolip.geometry.gauge import mu_D

CANON_EPS = 1e-6


def normalize_rows(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``x / max(‖x‖, eps)`` over the last dim. [..., D] -> [..., D]."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def canon(v: torch.Tensor, eps: float = CANON_EPS) -> torch.Tensor:
    """One representative of ``{v, −v}`` per row (spec §3.7). [..., D] -> [..., D].

    The first coordinate with ``|v_i| > eps`` is made positive (no flip when there is none).
    """
    big = v.abs() > eps
    # Index of the first coordinate above threshold (0 when none): argmax of a 0/1 mask.
    first = big.to(torch.int8).argmax(dim=-1, keepdim=True)
    lead = v.gather(-1, first)
    sign = torch.where(lead < 0, -1.0, 1.0).to(v.dtype)
    return v * sign


# The clamp keeps acos finite and differentiable at |cos| = 1 (a row paired with itself or its
# antipode); 1 − 1e−7 is the source's value [svae.md §11.2].
ACOS_CLAMP = 1.0 - 1e-7
DEV_CRITICAL_COEFF = 0.02
STATUTE_BAND = 0.05
CV_ATTRACTOR_BAND = (0.20, 0.23)


def projective_angles(X: torch.Tensor) -> torch.Tensor:
    """Pairwise projective angles ``acos(min(|x̂_i·x̂_j|, 1−1e−7))`` over row pairs i < j.

    X: [..., V, D] (any row norms) -> [..., V(V−1)/2] in [0, π/2], row-major pair order. Invariant
    to row signs, row norms and rotations of the D coordinates; differentiable.
    """
    V = X.shape[-2]
    U = normalize_rows(X)
    G = U @ U.transpose(-1, -2)
    iu = torch.triu_indices(V, V, offset=1, device=X.device)
    return torch.acos(G[..., iu[0], iu[1]].abs().clamp_max(ACOS_CLAMP))


@functools.cache
def uniform_baseline(D: int, n: int = 4096, seed: int = 0) -> float:
    """Monte Carlo ū(D) = E[acos|⟨x,y⟩|] for x, y uniform on S^{D−1} (svae.md §11.1), cached.

    ``n`` Gaussian points from ``torch.Generator(seed)``, normalised, mean angle over the
    n(n−1)/2 pairs. The source also canonicalises the points first; |cos| cannot see that, so it
    is skipped. Rows are processed in blocks so the n×n matrix never exists at once.
    """
    if D < 1 or n < 2:
        raise ValueError(f"uniform_baseline needs D >= 1 and n >= 2, got D={D}, n={n}")
    gen = torch.Generator().manual_seed(seed)
    U = normalize_rows(torch.randn(n, D, generator=gen, dtype=torch.float64))
    total = 0.0
    for start in range(0, n, 512):
        c = (U[start : start + 512] @ U.T).abs().clamp_max(1.0)
        rows = torch.arange(start, min(start + 512, n))
        c[rows - start, rows] = 1.0  # the diagonal contributes acos(1) = 0
        total += float(torch.acos(c).sum())
    # Σ over ordered pairs i ≠ j counts every unordered pair twice.
    return total / (n * (n - 1))


def uniform_baseline_exact(D: int) -> float:
    """Exact ū(D): the mean of acos(t) under the |cos| density ∝ (1−t²)^{(D−3)/2} on [0, 1].

    D = 4 gives π/4 + 1/π. Delegates to the statute gauge's quadrature (the same integral in the
    angle variable, where it has no endpoint singularity).
    """
    return mu_D(D)


@functools.cache
def uniform_median_exact(D: int) -> float:
    """Median projective angle of uniform lines in R^D (rad): the p50 reference of §11.5.

    The angle θ has density ∝ sin^{D−2}θ on [0, π/2]; its CDF is integrated on a fine grid and
    inverted by interpolation (error ≪ 1e−6).
    """
    if D < 1:
        raise ValueError(f"uniform_median_exact needs D >= 1, got {D}")
    if D == 1:
        return 0.0
    theta = np.linspace(0.0, math.pi / 2, 200_001)
    with np.errstate(divide="ignore"):
        log_f = (D - 2) * np.log(np.sin(theta)) if D > 2 else np.zeros_like(theta)
    f = np.exp(log_f - log_f.max())
    cdf = np.concatenate([[0.0], np.cumsum((f[1:] + f[:-1]) / 2)])
    return float(np.interp(0.5, cdf / cdf[-1], theta))


def _baseline(D: int, baseline: str) -> float:
    if baseline == "exact":
        return uniform_baseline_exact(D)
    if baseline == "mc":
        return uniform_baseline(D)
    raise ValueError(f"baseline must be 'exact' or 'mc', got {baseline!r}")


def deviation(X: torch.Tensor, D_intrinsic: int, baseline: str = "exact") -> torch.Tensor:
    """Intrinsic deviation (§11.2): mean projective angle of each frame minus ū(D_intrinsic).

    X: [..., V, D'] -> [...]. For stem *and* lens frames pass D_intrinsic = D_base: the lens keeps
    every angle, so measuring a lifted frame against ū(D_lens) always reads as clumped (§5.4).
    ``baseline``: 'exact' (quadrature, default) or 'mc' (the source's cached Monte Carlo value;
    the two agree within ~1e−4).
    """
    return projective_angles(X).mean(dim=-1) - _baseline(D_intrinsic, baseline)


def dev_critical(D: int) -> float:
    """Envelope half-width 0.02·√D (empirical fit: D=4 → 0.040, D=16 → 0.080)."""
    return DEV_CRITICAL_COEFF * math.sqrt(D)


def envelope(devs: torch.Tensor, D: int) -> dict:
    """Envelope read-out of per-frame deviations (§11.3). devs: [B, N] (or any shape, ≥ 1 frame).

    Returns python scalars: ``frame_deviation`` (mean signed dev), ``frame_abs_dev_mean``,
    ``frac_in_envelope`` (share of frames with |dev| < crit), ``in_envelope`` (the source's check
    on frame [0, 0] only) and ``dev_critical``.
    """
    d = devs.detach().reshape(-1).double()
    if d.numel() == 0:
        raise ValueError("envelope needs at least one frame deviation")
    crit = dev_critical(D)
    return {
        "frame_deviation": float(d.mean()),
        "frame_abs_dev_mean": float(d.abs().mean()),
        "frac_in_envelope": float((d.abs() < crit).double().mean()),
        "in_envelope": bool(d[0].abs() < crit),
        "dev_critical": crit,
    }


def barrier_from_dev(dev: torch.Tensor, D: int, margin: float = 0.5) -> torch.Tensor:
    """mean_f relu(|dev_f| − margin·crit(D))²: zero inside the margin, quadratic outside. -> []."""
    return torch.relu(dev.abs() - margin * dev_critical(D)).pow(2).mean()


def barrier(M: torch.Tensor, D: int, margin: float = 0.5, baseline: str = "exact") -> torch.Tensor:
    """Rigidity hinge (§11.4) over every frame of M: [..., V, D'] -> scalar tensor.

    Differentiable, so it can serve as the optional battery penalty (margin 0.7, §10.1); the
    companion only monitors it (margin 0.25) through ``monitors.rigidity_monitor``.
    """
    return barrier_from_dev(deviation(M, D, baseline), D, margin)


def statute_class(dev: float, D: int) -> str:
    """Read-only statute class of a frame deviation (§11.5).

    'uniform' (|dev| < 0.05 and < crit), 'polytope-R1' (dev > 0, |dev| < crit), 'polytope-R2'
    (dev > 0, |dev| ≥ crit: valid but degenerate topology), else 'sub-uniform'. At D = 4, crit =
    0.04 < 0.05 so 'polytope-R1' is empty (§17.10).
    """
    dev = float(dev)
    crit = dev_critical(D)
    if abs(dev) < STATUTE_BAND and abs(dev) < crit:
        return "uniform"
    if dev > 0:
        return "polytope-R1" if abs(dev) < crit else "polytope-R2"
    return "sub-uniform"


def p50_offset(X: torch.Tensor, D_intrinsic: int) -> torch.Tensor:
    """Median projective angle minus the uniform median (rad). X: [..., V, D'] -> [...].

    Compared with the uniform *median*, not the mean: the angle law is skewed, and median − mean
    would otherwise pose as a training signal.
    """
    return projective_angles(X).median(dim=-1).values - uniform_median_exact(D_intrinsic)


def angle_cv(X: torch.Tensor) -> torch.Tensor:
    """std/mean (population std) of the pairwise projective angles. X: [..., V, D] -> [...].

    The source's attractor band is ``CV_ATTRACTOR_BAND`` = 0.20–0.23.
    """
    a = projective_angles(X)
    return a.std(dim=-1, correction=0) / a.mean(dim=-1).clamp_min(1e-8)


def omega_cv(omega: torch.Tensor) -> float:
    """Column-norm CV canary: std/mean over every entry of ω: [B, N, D_ℓ] (§11.6)."""
    w = omega.detach().double().reshape(-1)
    return float(w.std() / w.mean().clamp_min(1e-12))


def pentachoron_cv(X: torch.Tensor, n: int = 200, seed: int = 0) -> float:
    """CV of the volumes of ``n`` random 5-row simplices of one frame X: [V, D] (§11.6).

    Volumes come from Cayley–Menger determinants in fp64: vol² = −det(CM)/(2⁴·(4!)²).
    Numerically flat simplices (vol² ≤ 1e−20) are dropped; with fewer than 10 left, or D < 4
    (five points in R³ span no 4-volume, only rounding noise above the threshold), the CV is
    undefined and NaN is returned.
    """
    if X.ndim != 2 or X.shape[0] < 5:
        raise ValueError(f"pentachoron_cv needs one frame [V >= 5, D], got {tuple(X.shape)}")
    if X.shape[1] < 4:
        return float("nan")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.rand(n, X.shape[0], generator=gen).argsort(dim=1)[:, :5]
    pts = X.detach().double().cpu()[idx]  # [n, 5, D]
    sq = (pts * pts).sum(-1)
    d2 = (sq[:, :, None] + sq[:, None, :] - 2 * pts @ pts.transpose(1, 2)).clamp_min(0.0)
    cm = torch.ones(n, 6, 6, dtype=torch.float64)
    cm[:, 0, 0] = 0.0
    cm[:, 1:, 1:] = d2
    vol2 = -torch.linalg.det(cm) / (2.0**4 * math.factorial(4) ** 2)
    vols = vol2[vol2 > 1e-20].sqrt()
    if vols.numel() < 10:
        return float("nan")
    return float(vols.std() / vols.mean())


def erank(s: torch.Tensor) -> torch.Tensor:
    """Effective rank exp(−Σ p_i log p_i), p = s/Σs, over the last dim. s: [..., D] ≥ 0 -> [...]."""
    p = s / s.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    # 0·log 0 = 0: xlogy handles the empty modes without NaNs.
    return torch.exp(-torch.special.xlogy(p, p).sum(dim=-1))
