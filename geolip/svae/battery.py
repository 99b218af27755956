"""The battery: a sphere-solver PatchSVAE, the "small pot" that owns the frames (spec §3).

Each patch is encoded on its own into a frame M of V unit rows in D_b dims. A linear readout
M̂ gives the column norms s, the only place where patches talk to each other (spectral-α
cross-attention over s), and the battery decodes its own internal reconstruction from
M̂ scaled by the attended s̃.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geolip.svae.attention import SpectralAlphaStack
from geolip.svae.decoder import ResidualMLP
from geolip.svae.frames import normalize_rows


class BoundarySmooth(nn.Module):
    """``x + Conv3×3(GELU(Conv3×3(x)))`` over a stitched image, C → mid → C (spec §3.5).

    Patches are decoded independently, so seams show at patch borders; this small residual
    conv blends them. The last conv starts at zero, making the block the identity at init.
    """

    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, mid, 3, padding=1)
        self.conv2 = nn.Conv2d(mid, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        return x + self.conv2(F.gelu(self.conv1(x)))


class PatchMLP(nn.Module):
    """``Linear → GELU → depth × LN-residual block → Linear``: one patch at a time. [..., d_in]."""

    def __init__(self, d_in: int, hidden: int, d_out: int, depth: int) -> None:
        super().__init__()
        self.inp = nn.Linear(d_in, hidden)
        self.blocks = nn.Sequential(*(ResidualMLP(hidden, layer_norm=True) for _ in range(depth)))
        self.out = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(F.gelu(self.inp(x))))


class PatchBattery(nn.Module):
    """The sphere-solver PatchSVAE battery (H2 class: linear readout, no SVD), spec §3.1–3.5.

    ``encode_patches``: p → M (row-normalised frame) → M̂ = W_r vec(M) + b_r → s = column norms
    of M̂ → s̃ = cross-attention(s). ``decode_patches``: M̂ ⊙ 1 s̃ᵀ → MLP → patch. Column
    magnitudes enter twice (through M̂ and through s̃); that is faithful to the source (§17.6).
    ``smooth`` is the image-only BoundarySmooth (identity when ``smooth_mid`` = 0).
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        V, D, P = cfg.V, cfg.D_base, cfg.P
        self.V, self.D = V, D
        self.encoder = PatchMLP(P, cfg.hidden, V * D, cfg.battery_depth)
        # Orthogonal W_out spreads the V·D outputs evenly before the sphere map (load-bearing).
        nn.init.orthogonal_(self.encoder.out.weight)
        self.readout = nn.Linear(V * D, V * D)
        self.cross = SpectralAlphaStack(
            D, cfg.battery_heads, cfg.battery_n_cross, cfg.max_alpha, cfg.alpha_init
        )
        self.decoder = PatchMLP(V * D, cfg.hidden, P, cfg.battery_depth)
        self.smooth = BoundarySmooth(cfg.channels, cfg.smooth_mid) if cfg.smooth_mid else None

    def encode_patches(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """p: [B, N, P] -> dict(M, M_hat: [B, N, V, D_b]; S_orig = s, S = s̃: [B, N, D_b]).

        ``U`` aliases M_hat (the readout plays U·S's role; there is no Vt, i.e. Vt = I).
        """
        B, N, _ = p.shape
        M = normalize_rows(self.encoder(p).view(B, N, self.V, self.D))
        M_hat = self.readout(M.flatten(-2)).view(B, N, self.V, self.D)
        s = M_hat.norm(dim=-2)
        s_att, _ = self.cross(s)
        return {"M": M, "M_hat": M_hat, "U": M_hat, "S_orig": s, "S": s_att}

    def decode_patches(self, M_hat: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """M_hat: [B, N, V, D_b], S: [B, N, D_b] -> internal patches [B, N, P]."""
        return self.decoder((M_hat * S.unsqueeze(-2)).flatten(-2))

    def smooth_image(self, x: torch.Tensor) -> torch.Tensor:
        """BoundarySmooth of a stitched image (identity without one). [B, C, H, W]."""
        return x if self.smooth is None else self.smooth(x)

    def forward(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """p: [B, N, P] -> the ``encode_patches`` dict plus ``patches``: [B, N, P]."""
        enc = self.encode_patches(p)
        return {**enc, "patches": self.decode_patches(enc["M_hat"], enc["S"])}

    def alpha_values(self) -> list[torch.Tensor]:
        """α of each battery cross-attention layer: [D_b] tensors."""
        return self.cross.alphas()
