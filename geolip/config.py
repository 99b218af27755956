"""Typed, frozen configuration for AlephLM: model, training, named presets and the config hash.

A run is named by ``config_hash`` (sha256 of canonical JSON, 10 hex): the same config gives the
same name for runs, checkpoints and banks. Variants derive from presets with
:func:`dataclasses.replace` or, from the command line, with ``--set model.head=pmix``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

HEADS = ("byte", "kernel", "pmix", "apmix")
MIXTURES = ("blend", "switch")
APMIX_MODES = ("through", "free")
CODEBOOK_INITS = ("random", "fibonacci", "spread", "frozen_random")
CODEBOOK_SHARING = ("all", "layer")
PRESERVATION = ("free", "div", "frozen", "slowlane", "spread", "frozen_random")
ATTN_IMPLS = ("chunk", "chunk_loop", "cumsum", "recurrent")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and what was expected."""


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


@dataclass(frozen=True)
class AlephConfig:
    """The AlephLM architecture, its head and its codebook treatment."""

    d_model: int = 384
    """Model width d."""
    n_layers: int = 4
    """Number of aleph-routed pre-LN blocks L."""
    n_heads: int = 6
    """Hub heads H; head width d_h = d/H."""
    seq_trigrams: int = 256
    """Positions per segment T (trigrams); the learned position table has T rows."""
    n_segments: int = 1
    """Streamed segments per sample (TBPTT-1); positions restart in every segment."""
    mlp_mult: int = 4
    """MLP hidden width = mlp_mult·d."""
    K: int = 64
    """Codebook axes (2K oriented half-axes)."""
    D: int = 4
    """Address dimension."""
    tau: float = 0.1
    """Address temperature τ."""
    chunk: int = 128
    """Causal scan chunk C."""
    attn_impl: str = "chunk"
    """Hub implementation: chunk | chunk_loop | cumsum | recurrent (all exact)."""
    codebook_init: str = "random"
    """random (randn, unnormalised) | fibonacci (S³ only) | spread | frozen_random."""
    codebook_sharing: str = "all"
    """all: one codebook for every layer, head and the bank head; layer: one per layer."""
    codebook_seed: int = 0
    """Seed of the frozen-random control codebook."""
    preservation: str = "free"
    """Codebook arm: free | div | frozen | slowlane | spread | frozen_random (spec §11)."""
    div_weight: float = 0.01
    """λ of the diversity loss when preservation == 'div'."""
    slowlane_mult: float = 0.1
    """Learning-rate multiplier of the codebook param group when preservation == 'slowlane'."""
    head: str = "byte"
    """Output head: byte | kernel | pmix | apmix."""
    mixture: str = "blend"
    """Gate × bank + byte-tail combination: blend (default) | switch."""
    n_pointers: int = 4
    """J, pointers in pmix/apmix (pmix8 = 8)."""
    d_cand: int = 128
    """Width d_c of the candidate (bank trigram) features ψ."""
    d_pointer: int = 64
    """Sphere dimension d_p of the pmix pointers."""
    apmix_mode: str = "through"
    """apmix candidates: through (φ(W_c ψ) via the codebook, index-free) | free (index-bound)."""
    use_prior: bool = True
    """Add the bank's log prior ρ to every candidate logit."""
    kernel_tau_init: float = 1.0
    """Initial τ_κ of the kernel head (learnable, log-parametrised)."""
    pmix_scale_init: float = 10.0
    pmix_scale_max: float = 100.0
    apmix_scale_init: float = 20.0
    apmix_scale_max: float = 200.0
    bank_tile: int = 8192
    """Candidates per tile in the streamed bank log-sum-exp (memory, not maths)."""
    kernel_aux_weight: float = 0.0
    """λ_k of the side kernel head (the hemisphere dial); 0 = off."""
    write_aux_weight: float = 0.0
    """λ_w of the write-head auxiliary; 0 = off."""

    def __post_init__(self) -> None:
        _check(
            self.d_model > 0 and self.n_layers > 0, "model.d_model and model.n_layers must be > 0"
        )
        _check(
            self.d_model % self.n_heads == 0,
            f"model.d_model={self.d_model} must be divisible by model.n_heads={self.n_heads}",
        )
        _check(self.seq_trigrams > 0 and self.n_segments > 0, "model.seq_trigrams/n_segments > 0")
        _check(self.K > 0 and self.D > 0, "model.K and model.D must be > 0")
        _check(self.tau > 0, f"model.tau must be > 0, got {self.tau}")
        _check(self.chunk > 0, f"model.chunk must be > 0, got {self.chunk}")
        for name, allowed in (
            ("head", HEADS),
            ("mixture", MIXTURES),
            ("apmix_mode", APMIX_MODES),
            ("codebook_init", CODEBOOK_INITS),
            ("codebook_sharing", CODEBOOK_SHARING),
            ("preservation", PRESERVATION),
            ("attn_impl", ATTN_IMPLS),
        ):
            value = getattr(self, name)
            _check(value in allowed, f"model.{name} must be one of {allowed}, got {value!r}")
        _check(self.n_pointers > 0, "model.n_pointers must be > 0")
        _check(
            self.codebook_init != "fibonacci" or self.D == 4,
            "model.codebook_init='fibonacci' needs model.D=4 (super-Fibonacci points live on S³)",
        )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def uses_bank(self) -> bool:
        """Whether the model needs a bank (any bank head, or the kernel-aux side head)."""
        return self.head != "byte" or self.kernel_aux_weight > 0

    @property
    def state_floats(self) -> int:
        """Recurrent state per batch row: L·(2K·d + 2K·H) floats, independent of context length."""
        return self.n_layers * (2 * self.K * self.d_model + 2 * self.K * self.n_heads)


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation of one run (spec §3.5, §7.3)."""

    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-4
    lr_final_frac: float = 0.1
    """Cosine decay to this fraction of lr over the run."""
    warmup_steps: int = 0
    grad_clip: str = "task"
    """task: clip norm max(mean task loss, 1) (spec); a number as a string: a fixed norm."""
    accum: int = 1
    """Gradient accumulation micro-batches per step."""
    seed: int = 0
    bank_size: int = 8192
    """Default N when a bank is built from the training split."""
    eval_windows: int = 16
    """Fixed, pre-materialised held-out windows per evaluation."""
    log_every: int = 50
    amp: str = "auto"
    """auto: bf16 autocast on CUDA, off on CPU | off | bf16 | fp16."""

    def __post_init__(self) -> None:
        _check(self.steps >= 0, f"train.steps must be >= 0, got {self.steps}")
        _check(self.batch_size > 0, f"train.batch_size must be > 0, got {self.batch_size}")
        _check(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        _check(self.accum >= 1, f"train.accum must be >= 1, got {self.accum}")
        _check(self.amp in ("auto", "off", "bf16", "fp16"), f"train.amp invalid: {self.amp!r}")
        if self.grad_clip != "task":
            try:
                float(self.grad_clip)
            except ValueError as exc:
                raise ConfigError(
                    f"train.grad_clip must be 'task' or a number, got {self.grad_clip!r}"
                ) from exc


@dataclass(frozen=True)
class AlephRunConfig:
    """A whole run: a named preset's model and training configs."""

    model: AlephConfig = field(default_factory=AlephConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "custom"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlephRunConfig:
        return cls(
            model=_build(AlephConfig, d.get("model", {}), "model"),
            train=_build(TrainConfig, d.get("train", {}), "train"),
            preset=d.get("preset", "custom"),
        )

    def hash(self) -> str:
        return config_hash(self)


def _build(cls, values: dict[str, Any], prefix: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    _check(not unknown, f"unknown {prefix} config keys {unknown}; known: {sorted(known)}")
    return cls(**values)


def config_hash(obj: Any, length: int = 10) -> str:
    """sha256 of the canonical JSON of a dataclass (or dict): a stable short name."""
    data = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _parse_value(raw: str, current: Any) -> Any:
    if isinstance(current, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"expected a boolean, got {raw!r}")
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, float):
        return float(raw)
    return raw


def apply_overrides(cfg: AlephRunConfig, overrides: list[str]) -> AlephRunConfig:
    """Apply ``section.key=value`` strings (``--set``); errors name the offending key."""
    sections = apply_section_overrides({"model": cfg.model, "train": cfg.train}, overrides)
    return dataclasses.replace(cfg, **sections)


def apply_section_overrides(sections: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``--set section.key=value`` over named frozen dataclasses (e.g. ``{"model": ...,
    "train": ...}``); returns the replaced ones. Values parse by the field's current type;
    errors name the offending item and key."""
    sections = dict(sections)
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        _check(bool(sep and dot), f"--set expects section.key=value, got {item!r}")
        _check(section in sections, f"--set section must be one of {list(sections)}: {item!r}")
        sub = sections[section]
        _check(
            hasattr(sub, name),
            f"--set {item!r}: unknown key {key!r}; known: {[f.name for f in fields(sub)]}",
        )
        try:
            value = _parse_value(raw.strip(), getattr(sub, name))
        except ValueError as exc:
            raise ConfigError(f"--set {key}: {exc}") from exc
        sections[section] = dataclasses.replace(sub, **{name: value})
    return sections
