"""Procrustes alignment of frames across banks and runs (svae.md §15) [proposed].

Two batteries trained from different seeds learn the same kind of frame in different
coordinates: rows permuted, rotated in R^{D_b} and, because rows are lines, each free to flip
sign. Projective Procrustes recovers that gauge (R, π, s) so frames can be compared, and
:func:`aligned_lens` folds R into a bank's lens (E′ = E R stays orthonormal), lifting every bank
into one shared D_ℓ frame without touching the rigidity guarantee of §5. The gauge-free
orientation tensor gives Euclidean features for whitened Procrustes (§15.3–15.4, in
:mod:`geolip.geometry.procrustes`).

Convention (the spec's): ``a_i ≈ s_i · R b_{π(i)}`` for column vectors, i.e. in row form
``A ≈ signs[:, None] * (B[perm] @ R.T)``.
"""

from __future__ import annotations

import torch

from geolip.geometry.procrustes import (
    icp_null_z,
    orientation_signature,
    orientation_tensor,
    projective_icp,
)
from geolip.svae.frames import canon, normalize_rows

__all__ = [
    "aligned_lens",
    "bank_frame",
    "null_z",
    "orientation_signature",
    "orientation_tensor",
    "projective_procrustes",
]


def bank_frame(M_stem: torch.Tensor) -> torch.Tensor:
    """A bank's frame F: [V, D] from stem frames M_stem: [..., V, D] of a calibration set.

    Row v of F is canon(normalize(mean over the calibration set of row v)), the source's
    ``_codebook_rows`` rule. Rows are averaged as stored (not canonicalised first), so a row
    whose sign flips across inputs averages toward 0 and lands wherever its residue points.
    """
    if M_stem.ndim < 2:
        raise ValueError(f"bank_frame needs [..., V, D], got {tuple(M_stem.shape)}")
    rows = M_stem.detach().reshape(-1, *M_stem.shape[-2:]).mean(dim=0)
    return canon(normalize_rows(rows))


def projective_procrustes(
    A: torch.Tensor, B: torch.Tensor, max_iter: int = 50, restarts: int = 4, seed: int = 0
) -> dict:
    """Align frame B onto frame A up to rotation, row order and row signs (projective ICP).

    A, B: [V, D]. Maximises Σ_i |⟨a_i, R b_π(i)⟩| by alternating Hungarian matching on |cos|,
    sign choice and orthogonal Procrustes (fp64 SVD) until the matching stops changing, from
    several starts (see :func:`geolip.geometry.procrustes.projective_icp`). Returns
    ``R`` [D, D] orthogonal, ``perm`` [V] long, ``signs`` [V] ±1 (a_i ≈ s_i R b_perm[i]),
    ``residual`` = mean_i acos|⟨a_i, R b_π(i)⟩| (rad), ``distance`` = ‖A − S B_π Rᵀ‖_F/√V and
    ``iters``.
    """
    # geometry's ICP aligns rows X @ R' ≈ Y, so with X = B, Y = A its R' is the spec's Rᵀ.
    res = projective_icp(B, A, max_iter=max_iter, restarts=restarts, seed=seed)
    return {
        "R": res.R.T,
        "perm": res.perm,
        "signs": res.signs,
        "residual": res.residual,
        "distance": res.distance,
        "iters": res.iters,
    }


def null_z(A: torch.Tensor, B: torch.Tensor, n: int = 100, seed: int = 0, **icp_kwargs) -> float:
    """How much better B aligns onto A than ``n`` uniformly random frames do, in null σ.

    z = (mean null residual − residual(B → A)) / std(null residuals); positive = better than
    chance. A, B: [V, D]. Extra keywords go to the ICP (e.g. ``restarts``).
    """
    return -icp_null_z(B, A, n_null=n, seed=seed, **icp_kwargs)


def aligned_lens(E: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Fold a bank's alignment into a lens: E′ = E R. E: [D_ℓ, D_b], R: [D_b, D_b] -> [D_ℓ, D_b].

    With a ≈ s R b, lifting bank B's rows through E_A R equals lifting their aligned rows through
    E_A; E′ᵀE′ = Rᵀ R = I, so the lift stays isometric.
    """
    if E.shape[-1] != R.shape[0] or R.shape[0] != R.shape[1]:
        raise ValueError(
            f"need E: [D_l, D_b] and R: [D_b, D_b], got {tuple(E.shape)}, {tuple(R.shape)}"
        )
    return E @ R.to(E.dtype)
