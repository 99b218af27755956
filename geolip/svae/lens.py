"""The fixed isometric lens D_b → D_ℓ (spec §5)."""

from __future__ import annotations

import torch
from torch import nn

from geolip.svae.frames import canon, normalize_rows


def isometric_basis(
    D_lens: int, D_base: int, seed: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """E: [D_ℓ, D_b] with orthonormal columns (EᵀE = I), the reduced QR of a seeded Gaussian.

    The Gaussian is drawn in fp32 (so the draw is the same for every ``dtype``) and factorised
    in ``dtype``: fp64 gives max|EᵀE − I| ~ 1e-16.
    """
    if D_lens < D_base:
        raise ValueError(f"an isometric lift needs D_lens >= D_base, got {D_lens} < {D_base}")
    gen = torch.Generator().manual_seed(seed)
    gauss = torch.randn(D_lens, D_base, generator=gen)
    q, _ = torch.linalg.qr(gauss.to(dtype), mode="reduced")
    return q


class Lens(nn.Module):
    """Lift each battery row from S^{D_b−1} onto a great D_b-subsphere of S^{D_ℓ−1}.

    ``E`` is a fixed buffer (no parameters, never trained, saved in the state dict) with
    orthonormal columns, so ``m ↦ E m`` preserves every inner product: pairwise projective
    angles, hence any |cos|-based rigidity statistic, are the same before and after the lift —
    measured against the *intrinsic* baseline ū(D_b), not ū(D_ℓ). What the lift adds is room:
    the decoder reads D_ℓ columns whose norms (ω) mix the D_b(D_b+1)/2 Gram entries. In
    'canon' mode each lifted row is replaced by its sign representative, which hides the
    row's sign from the decoder but changes no |cos| and no ω.
    """

    def __init__(self, D_lens: int, D_base: int, seed: int, sign: str = "signed") -> None:
        super().__init__()
        if sign not in ("signed", "canon"):
            raise ValueError(f"lens sign must be 'signed' or 'canon', got {sign!r}")
        self.sign = sign
        self.register_buffer("E", isometric_basis(D_lens, D_base, seed).float())

    def forward(self, M_stem: torch.Tensor) -> torch.Tensor:
        """M_stem: [B, N, V, D_b] (unit rows) -> M_lens: [B, N, V, D_ℓ] (unit rows)."""
        # ‖E m‖ = ‖m‖, so the renormalisation only removes fp rounding of the row norms.
        lifted = normalize_rows(M_stem @ self.E.to(M_stem.dtype).T)
        return canon(lifted) if self.sign == "canon" else lifted

    def isometry_error(self) -> float:
        """max|EᵀE − I| of the stored buffer (gate: < 1e-4)."""
        eye = torch.eye(self.E.shape[1], dtype=self.E.dtype, device=self.E.device)
        return (self.E.T @ self.E - eye).abs().max().item()
