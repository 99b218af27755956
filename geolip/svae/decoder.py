"""Per-patch MLPs: the residual block shared by battery and shell, and the shell's GeoDecoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualMLP(nn.Module):
    """``h + W₂ GELU(W₁ f(h) + b₁) + b₂`` with f = LN (battery) or identity (shell). [..., H]."""

    def __init__(self, width: int, layer_norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width) if layer_norm else nn.Identity()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(F.gelu(self.fc1(self.norm(h))))


class GeoDecoder(nn.Module):
    """Decode a patch from its lensed frame scaled by its attended spectrum (spec §8).

    Column j of the lensed frame ``M_lens`` is scaled by ``S_att[j]`` (mirroring U·S of an SVD),
    flattened, and mapped through a GELU MLP with ``depth`` residual blocks and no LN to the
    patch's P values. Each patch is decoded on its own; cross-patch information arrives only
    through S_att.
    """

    def __init__(self, V: int, D: int, hidden: int, P: int, depth: int) -> None:
        super().__init__()
        self.inp = nn.Linear(V * D, hidden)
        self.blocks = nn.Sequential(*(ResidualMLP(hidden, layer_norm=False) for _ in range(depth)))
        self.out = nn.Linear(hidden, P)

    def forward(self, M_lens: torch.Tensor, S_att: torch.Tensor) -> torch.Tensor:
        """M_lens: [B, N, V, D], S_att: [B, N, D] -> patches [B, N, P]."""
        M_dec = M_lens * S_att.unsqueeze(-2)
        h = F.gelu(self.inp(M_dec.flatten(-2)))
        return self.out(self.blocks(h))
