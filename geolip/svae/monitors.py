"""Read-only monitors of the stem frame (svae.md §11–§12): they never enter a backward pass.

Every function here detaches its input and runs under ``torch.no_grad()``, so calling a monitor
cannot build a graph, touch a parameter's ``.grad`` or pull the battery toward what is measured
(the historical CV "loss" was gradient-free for the same reason, §17.7).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geolip.svae.frames import barrier, canon, deviation, envelope, normalize_rows

# |proj| is clamped just below 1 as in the source, so a row lying exactly on an axis cannot
# saturate the softmax any harder than a near-exact one.
MARGIN_CLAMP = 1.0 - 1e-6


def _addresses(M_stem: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed projections and margins of canonicalised rows. M_stem: [..., D]; codebook: [K, D]
    -> (proj: [..., K], margin: [..., K] = clamp(|proj|, 0, 1−1e−6))."""
    a = canon(normalize_rows(M_stem.detach()))
    proj = a @ codebook.to(a.dtype).T
    return proj, proj.abs().clamp(0.0, MARGIN_CLAMP)


def random_codebook(D: int, K: int, seed: int) -> torch.Tensor:
    """The fixed assessor axes: canon(normalize(Gaussian [K, D])) from ``Generator(seed)``."""
    gen = torch.Generator().manual_seed(seed)
    return canon(normalize_rows(torch.randn(K, D, generator=gen)))


class AlephAssessor(nn.Module):
    """The aleph assessor: a read-only *signed address* of every stem row (svae.md §12.1).

    Cosine saturates on a sphere this small (rows of S³), so the assessor reads a row by address
    instead of angle: which of K fixed axes it lies closest to as a line (``axis``, by |cos|), on
    which side (``sign``), how decisively (``margin``, ``assign`` = softmax(margin/τ)). Because rows
    are canonicalised first, the address of v and −v is the same; ``code = (axis+1)·sign`` packs it
    into one integer in ±[1, K]. The codebook is a buffer drawn from ``Generator(seed + 7)``: it
    never trains and is saved with the model.
    """

    def __init__(
        self,
        D: int,
        K: int = 64,
        tau: float = 0.1,
        seed: int = 0,
        codebook: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"AlephAssessor needs tau > 0, got {tau}")
        if codebook is None:
            codebook = random_codebook(D, K, seed + 7)
        if codebook.shape != (K, D):
            raise ValueError(f"codebook must be [K={K}, D={D}], got {tuple(codebook.shape)}")
        self.register_buffer("codebook", codebook.clone())
        self.tau = tau

    @torch.no_grad()
    def forward(self, M_stem: torch.Tensor) -> dict[str, torch.Tensor]:
        """M_stem: [..., V, D] (detached here) -> dict of per-row read-outs.

        ``axis``: [..., V] long in [0, K); ``sign``: [..., V] ±1.0 (a zero projection counts as
        +1, so ``code`` is never 0); ``margin`` and ``assign``: [..., V, K]; ``code``: [..., V]
        long in ±[1, K]; ``codebook``: [K, D].
        """
        proj, margin = _addresses(M_stem, self.codebook)
        axis = margin.argmax(dim=-1)
        lead = proj.gather(-1, axis.unsqueeze(-1)).squeeze(-1)
        sign = torch.where(lead < 0, -1.0, 1.0).to(proj.dtype)
        return {
            "axis": axis,
            "sign": sign,
            "margin": margin,
            "assign": F.softmax(margin / self.tau, dim=-1),
            "code": (axis + 1) * sign.long(),
            "codebook": self.codebook,
        }


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(p, p).sum(dim=-1)


@torch.no_grad()
def cross_contrast(M_stem: torch.Tensor, codebook: torch.Tensor, tau: float) -> torch.Tensor:
    """Cross-contrast monitor (§12.2): mean row entropy minus entropy of the mean row.

    M_stem: [..., V, D]; codebook: [K, D] -> 0-dim float tensor in [−ln K, 0] (≤ 0 by concavity of
    H; the spec's wider bound is [−ln K, ln K]). More negative: rows commit to single axes while
    the batch as a whole spreads over many. 0 when every row has the same assignment.
    """
    _, margin = _addresses(M_stem, codebook)
    p = F.softmax(margin / tau, dim=-1).reshape(-1, codebook.shape[0])
    return _entropy(p).mean() - _entropy(p.mean(dim=0))


@torch.no_grad()
def rigidity_monitor(M_stem: torch.Tensor, D_base: int, margin: float = 0.25) -> dict:
    """Rigidity read-out of stem frames (§10.3, §11.3–11.4). M_stem: [B, N, V, D_base].

    Returns the envelope dict (``frame_deviation``, ``frame_abs_dev_mean``, ``frac_in_envelope``,
    ``in_envelope``, ``dev_critical``) plus ``barrier`` at the monitor margin (0.25), as floats.
    """
    M = M_stem.detach()
    out = envelope(deviation(M, D_base), D_base)
    out["barrier"] = float(barrier(M, D_base, margin))
    return out
