"""Typed, frozen configuration of the SVAE companion (spec ``svae.md`` §1.1) and its presets.

Defaults are the "recommended for our build" column: a 3×16×16 image cut into 2×2 patches
(P = 12, N = 64), frames of V = 32 rows on S³, a D_ℓ = 16 lens and a two-layer shell. A run is
named by :meth:`GeoConfig.config_hash`; variants derive from a preset with
:func:`dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from geolip.config import ConfigError, build, check
from geolip.config import config_hash as _config_hash

LENS_SIGNS = ("signed", "canon")


class GeoConfigError(ConfigError):
    """A GeoConfig value is invalid; the message names the field and what was expected."""


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise GeoConfigError(msg)


@dataclass(frozen=True)
class GeoConfig:
    """The SVAE companion: battery (PatchSVAE), lens, spectral-α shell and monitors."""

    img_size: int = 16
    """Image side H = W for the image path (must be divisible by ps)."""
    channels: int = 3
    """Image channels C (3 = byte trigrams per pixel)."""
    ps: int = 2
    """Patch side; an image patch has P = C·ps² values."""
    patch_dim: int | None = None
    """P for feature tokens; None derives P = C·ps² from the image fields."""
    n_patches: int | None = None
    """Tokens per sample N for feature inputs (informational: no weight depends on N); None
    derives N = (img_size/ps)²."""
    V: int = 32
    """Rows per frame."""
    D_base: int = 4
    """Battery frame width D_b: rows live on S^{D_b−1}."""
    hidden: int = 64
    """Battery encoder/decoder width."""
    D_lens: int = 16
    """Lens width D_ℓ ≥ D_b: the fixed isometric lift's target dimension."""
    n_heads: int = 4
    """Shell attention heads; must divide D_lens."""
    n_layers: int = 2
    """Spectral-α layers in the shell."""
    shell_hidden: int = 128
    """GeoDecoder width H."""
    max_alpha: float = 0.2
    """α_max: each layer may scale a mode by at most (1 ± α_max); ≤ 1 so it never flips sign."""
    alpha_init: float = -2.0
    """Initial logit λ of every α (α(0) = α_max·σ(λ) = 0.0238 at the defaults)."""
    use_spectral: bool = True
    """False is the 'no attention' ablation: the shell decodes from S_att = ω (no layers built)."""
    lens_sign: str = "signed"
    """signed: the decoder sees each row's sign | canon: rows canonicalised (the ablation)."""
    codebook_K: int = 64
    """Axes of the read-only aleph assessor's codebook."""
    cc_temp: float = 0.10
    """Temperature τ of the aleph assignment and the cross-contrast monitor."""
    seed: int = 0
    """Seeds the lens E (Generator(seed)), the codebook (seed+7) and the initial weights."""
    battery_depth: int = 1
    """LN-residual blocks in the battery encoder and in its decoder."""
    battery_n_cross: int = 1
    """Spectral-α cross-attention layers over the battery's column norms s."""
    smooth_mid: int = 8
    """BoundarySmooth hidden channels (8 or 16 must match a checkpoint); 0 = no smoothing."""
    shell_depth: int = 1
    """Residual blocks (no LN) in the GeoDecoder."""
    monitors: bool = True
    """Build the read-only aleph assessor and run it in every forward."""

    def __post_init__(self) -> None:
        for name in ("img_size", "channels", "ps", "V", "D_base", "hidden", "D_lens", "n_heads"):
            _check(getattr(self, name) > 0, f"geo.{name} must be > 0, got {getattr(self, name)}")
        for name in ("shell_hidden", "codebook_K"):
            _check(getattr(self, name) > 0, f"geo.{name} must be > 0, got {getattr(self, name)}")
        for name in ("n_layers", "battery_depth", "battery_n_cross", "smooth_mid", "shell_depth"):
            _check(getattr(self, name) >= 0, f"geo.{name} must be >= 0, got {getattr(self, name)}")
        _check(
            self.img_size % self.ps == 0,
            f"geo.img_size={self.img_size} must be divisible by geo.ps={self.ps}",
        )
        _check(
            self.patch_dim is None or self.patch_dim > 0,
            f"geo.patch_dim must be None or > 0, got {self.patch_dim}",
        )
        _check(
            self.n_patches is None or self.n_patches > 0,
            f"geo.n_patches must be None or > 0, got {self.n_patches}",
        )
        _check(
            self.D_lens >= self.D_base,
            f"geo.D_lens={self.D_lens} must be >= geo.D_base={self.D_base} (an isometric lift "
            "cannot lower the dimension)",
        )
        _check(
            self.D_lens % self.n_heads == 0,
            f"geo.n_heads={self.n_heads} must divide geo.D_lens={self.D_lens}",
        )
        _check(
            self.battery_n_cross == 0 or self.D_base % self.battery_heads == 0,
            f"geo.D_base={self.D_base} must be divisible by the battery's "
            f"{self.battery_heads} cross-attention heads (or set geo.battery_n_cross=0)",
        )
        _check(
            0 < self.max_alpha <= 1,
            f"geo.max_alpha must be in (0, 1] so a mode never flips sign, got {self.max_alpha}",
        )
        _check(self.cc_temp > 0, f"geo.cc_temp must be > 0, got {self.cc_temp}")
        _check(
            self.lens_sign in LENS_SIGNS,
            f"geo.lens_sign must be one of {LENS_SIGNS}, got {self.lens_sign!r}",
        )

    @property
    def P(self) -> int:
        """Values per patch or feature token."""
        return self.patch_dim if self.patch_dim is not None else self.channels * self.ps**2

    @property
    def N(self) -> int:
        """Patches (tokens) per sample."""
        return self.n_patches if self.n_patches is not None else (self.img_size // self.ps) ** 2

    @property
    def battery_heads(self) -> int:
        """Heads of the battery cross-attention: 2 when D_b ≤ 8, else 4 (the source's auto rule)."""
        return 2 if self.D_base <= 8 else 4

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeoConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error that names them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        _check(not unknown, f"unknown geo config keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    def config_hash(self) -> str:
        """10 hex of sha256 over the canonical JSON: names runs and checkpoints."""
        return _config_hash(self)


def image16() -> GeoConfig:
    """The default build: 3×16×16 images (byte trigrams), 2×2 patches, D_b 4 → D_ℓ 16."""
    return GeoConfig()


def features(patch_dim: int, n_patches: int | None = None) -> GeoConfig:
    """Feature tokens (spec §10.4, e.g. BERT patchwork P=12, N=64): D_ℓ 64, 4 heads, H 256.

    No BoundarySmooth: tokens have no spatial neighbours to smooth across.
    """
    return GeoConfig(
        patch_dim=patch_dim,
        n_patches=n_patches,
        D_lens=64,
        n_heads=4,
        shell_hidden=256,
        smooth_mid=0,
    )


def tiny_test() -> GeoConfig:
    """A few-thousand-parameter model for unit tests (8×8 images, N = 16, V = 8, D_ℓ = 8)."""
    return GeoConfig(
        img_size=8,
        V=8,
        hidden=16,
        D_lens=8,
        n_heads=2,
        shell_hidden=16,
        codebook_K=8,
        smooth_mid=4,
    )


@dataclass(frozen=True)
class SVAETrainConfig:
    """The optimisation of one SVAE run (two Adams, spec §10.2)."""

    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    grad_clip: float = 1.0
    schedule: str = "onecycle"
    """onecycle (the source's default) | cosine | none."""
    eval_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in ("onecycle", "cosine", "none"):
            raise ConfigError(
                f"train.schedule must be onecycle, cosine or none, got {self.schedule!r}"
            )
        check(self.steps >= 1, f"train.steps must be >= 1, got {self.steps}")
        check(self.batch_size >= 1, f"train.batch_size must be >= 1, got {self.batch_size}")
        check(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        check(self.eval_every >= 1, f"train.eval_every must be >= 1, got {self.eval_every}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SVAERunConfig:
    """A whole SVAE run: the companion's ``model`` and its ``train`` config (``--set`` reaches
    both: ``model.V=16``, ``train.steps=300``)."""

    model: GeoConfig = field(default_factory=GeoConfig)
    train: SVAETrainConfig = field(default_factory=SVAETrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SVAERunConfig:
        return cls(
            model=GeoConfig.from_dict(d.get("model", {})),
            train=build(SVAETrainConfig, d.get("train", {}), "train"),
        )


PRESETS = {"image16": image16, "tiny_test": tiny_test}
"""Named presets that take no arguments (``features`` needs the token width)."""
