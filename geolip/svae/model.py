"""SVAECompanion: battery → detached stem → lens → omega → spectral-α shell → decoder (spec §9).

Two reconstructions share one forward and nothing else: the battery's internal recon trains the
battery (L_int), the shell's external recon trains the shell (L_ext). The stem boundary is a
``detach``, so the graphs are disjoint and the battery's frames move only under its own MSE.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from geolip.svae.attention import SpectralAlphaStack, omega
from geolip.svae.battery import PatchBattery
from geolip.svae.config import GeoConfig
from geolip.svae.decoder import GeoDecoder
from geolip.svae.lens import Lens


class SVAECompanion(nn.Module):
    """The SVAE transformer companion (spec ``svae.md``).

    A PatchSVAE battery turns every patch (or feature token) into a rigid frame of V unit rows
    in D_b dims. The shell never trains that frame: it reads the detached stem through a fixed
    isometric lens into D_ℓ dims, takes the column-norm spectrum ω, lets patches modulate each
    other's spectra within ±α (spectral-α attention), and decodes a second, external
    reconstruction. A read-only aleph assessor reports which codebook axis each row commits to.

    Weights are drawn from ``cfg.seed`` inside a forked RNG, so the same config gives the same
    model without touching the caller's global RNG.
    """

    def __init__(self, cfg: GeoConfig) -> None:
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.battery = PatchBattery(cfg)
            self.lens = Lens(cfg.D_lens, cfg.D_base, cfg.seed, cfg.lens_sign)
            self.stack = SpectralAlphaStack(
                cfg.D_lens,
                cfg.n_heads,
                cfg.n_layers if cfg.use_spectral else 0,
                cfg.max_alpha,
                cfg.alpha_init,
            )
            self.decoder = GeoDecoder(cfg.V, cfg.D_lens, cfg.shell_hidden, cfg.P, cfg.shell_depth)
        # Parked: a growth stencil would register modules here and get its own optimizer.
        self.growth = nn.ModuleDict()
        self.aleph = None
        if cfg.monitors:
            from geolip.svae.monitors import AlephAssessor

            self.aleph = AlephAssessor(
                D=cfg.D_base, K=cfg.codebook_K, tau=cfg.cc_temp, seed=cfg.seed
            )
            # The source keeps the codebook on the model too (cross-contrast reads it there).
            self.register_buffer("codebook", self.aleph.codebook.clone())
        self._spectral_override: bool | None = None

    def forward_shell(
        self, M_stem: torch.Tensor, use_spectral: bool | None = None, return_attn: bool = False
    ) -> dict:
        """The shell alone. M_stem: [B, N, V, D_b] (unit rows, detached) -> dict with
        M_lens [B, N, V, D_ℓ], omega and S_att [B, N, D_ℓ], external_patches [B, N, P],
        mean_alpha (detached scalar: the α actually applied, 0 with spectral off) and
        attn (per-layer [B, h, N, N] when ``return_attn``, else [])."""
        if use_spectral is None:
            use_spectral = self._spectral_override is not False
        M_lens = self.lens(M_stem)
        w = omega(M_lens)
        if use_spectral:
            S_att, attn = self.stack(w, return_attn)
            mean_alpha = self.stack.mean_alpha()
        else:
            S_att, attn, mean_alpha = w, [], torch.zeros((), device=w.device)
        return {
            "M_lens": M_lens,
            "omega": w,
            "S_att": S_att,
            "external_patches": self.decoder(M_lens, S_att),
            "mean_alpha": mean_alpha,
            "attn": attn,
        }

    def forward_patches(
        self, p: torch.Tensor, use_spectral: bool | None = None, return_attn: bool = False
    ) -> dict:
        """p: [B, N, P] -> dict (spec §9).

        internal_patches, external_patches: [B, N, P] (also as internal_recon, external_recon
        for the feature path); M: [B, N, V, D_b] with grad; M_stem: detached M; M_lens;
        omega, S_att: [B, N, D_ℓ]; mean_alpha: detached scalar; aleph: dict or None;
        battery: dict(M_hat, S_orig = s, S = s̃); attn: list. ``use_spectral=False`` forces α
        off with the same decoder (the ablation of §14.3); None follows :meth:`spectral_off`.
        """
        if p.ndim != 3 or p.shape[-1] != self.cfg.P:
            raise ValueError(f"patches must be [B, N, {self.cfg.P}], got {tuple(p.shape)}")
        bat = self.battery(p)
        M_stem = bat["M"].detach()
        shell = self.forward_shell(M_stem, use_spectral, return_attn)
        out = {
            "internal_patches": bat["patches"],
            "M": bat["M"],
            "M_stem": M_stem,
            "battery": {k: bat[k] for k in ("M_hat", "S_orig", "S")},
            "aleph": self.assess(M_stem),
            **shell,
        }
        out["internal_recon"] = bat["patches"]
        out["external_recon"] = shell["external_patches"]
        return out

    def forward(
        self, images: torch.Tensor, use_spectral: bool | None = None, return_attn: bool = False
    ) -> dict:
        """images: [B, C, H, W] (H, W divisible by ps; any size) -> the ``forward_patches`` dict
        with internal_recon = BoundarySmooth(stitch(internal_patches)) and external_recon =
        stitch(external_patches), both [B, C, H, W]. A patchwork [B, N, P] (feature tokens) goes
        straight to :meth:`forward_patches`, so one call serves both inputs (and DDP)."""
        from geolip.svae.adapters import extract_patches, stitch_patches

        if images.ndim == 3:
            return self.forward_patches(images, use_spectral, return_attn)
        cfg = self.cfg
        B, C, H, W = images.shape
        if cfg.channels != C or H % cfg.ps or W % cfg.ps or C * cfg.ps**2 != cfg.P:
            raise ValueError(
                f"images must be [B, {cfg.channels}, H, W] with H, W divisible by ps={cfg.ps} "
                f"and C·ps² = P = {cfg.P}, got {tuple(images.shape)}"
            )
        out = self.forward_patches(extract_patches(images, cfg.ps), use_spectral, return_attn)
        internal = stitch_patches(out["internal_patches"], C, H, W, cfg.ps)
        out["internal_recon"] = self.battery.smooth_image(internal)
        out["external_recon"] = stitch_patches(out["external_patches"], C, H, W, cfg.ps)
        return out

    @torch.no_grad()
    def assess(self, M_stem: torch.Tensor) -> dict | None:
        """The read-only aleph assessment of the stem rows (never in a backward pass)."""
        return None if self.aleph is None else self.aleph(M_stem.detach())

    @contextlib.contextmanager
    def spectral_off(self) -> Iterator[None]:
        """Within the block, forwards decode from S_att = ω (α forced to 0), same weights."""
        previous, self._spectral_override = self._spectral_override, False
        try:
            yield
        finally:
            self._spectral_override = previous

    def battery_parameters(self) -> list[nn.Parameter]:
        """Everything L_int trains: encoder, readout, cross-attention, decoder, smoothing."""
        return list(self.battery.parameters())

    def shell_parameters(self) -> list[nn.Parameter]:
        """Everything L_ext trains: the spectral-α stack and the GeoDecoder (the lens has none)."""
        return list(self.stack.parameters()) + list(self.decoder.parameters())

    def growth_parameters(self) -> list[nn.Parameter]:
        """Parameters of registered growth stencils (none yet: the group is parked)."""
        return list(self.growth.parameters())

    def growth_loss(self, out: dict) -> torch.Tensor | None:
        """None while no growth stencil is registered (spec §9)."""
        if len(self.growth):
            raise NotImplementedError("growth stencils are parked; none is defined yet")
        return None

    def alpha_values(self) -> list[torch.Tensor]:
        """α of each shell layer, detached: [D_ℓ] tensors ([] when use_spectral=False)."""
        return [a.detach() for a in self.stack.alphas()]

    def param_counts(self) -> dict[str, int]:
        """Parameter counts per group, to verify a checkpoint against its config."""
        counts = {
            "battery": sum(p.numel() for p in self.battery_parameters()),
            "shell": sum(p.numel() for p in self.shell_parameters()),
            "growth": sum(p.numel() for p in self.growth_parameters()),
        }
        counts["total"] = sum(counts.values())
        return counts
