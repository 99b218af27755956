"""Typed, frozen configuration of AlephLM: the backbone, its codebook treatment, its head, training.

``AlephConfig`` keeps the backbone's dimensions flat and groups what belongs to one component:
``codebook`` (init, sharing and the preservation arm of spec §11) and ``head`` (the bank head, its
mixture with the byte tail, and each head kind's own knobs). ``--set`` reaches any field by its
path: ``model.tau=0.2``, ``model.head.kind=apmix``, ``model.head.pmix.d_pointer=32``,
``model.codebook.preservation=spread``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from geolip.config import ConfigError, build, check, config_hash

HEADS = ("byte", "kernel", "pmix", "apmix")
MIXTURES = ("blend", "switch")
APMIX_MODES = ("through", "free")
CODEBOOK_INITS = ("random", "fibonacci", "spread", "frozen_random")
CODEBOOK_SHARING = ("all", "layer")
PRESERVATION = ("free", "div", "frozen", "slowlane", "spread", "frozen_random")
ATTN_IMPLS = ("chunk", "chunk_loop", "cumsum", "recurrent", "fla")
ATTNS = ("aleph", "softmax")


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    check(value in allowed, f"model.{name} must be one of {allowed}, got {value!r}")


@dataclass(frozen=True)
class CodebookConfig:
    """The aleph codebook's start and its treatment during training (``model.codebook.*``)."""

    init: str = "random"
    """random (randn, unnormalised) | fibonacci (S³ only) | spread | frozen_random."""
    sharing: str = "all"
    """all: one codebook for every layer, head and the bank head; layer: one per layer."""
    seed: int = 0
    """Seed of the frozen-random control codebook."""
    preservation: str = "free"
    """Codebook arm: free | div | frozen | slowlane | spread | frozen_random (spec §11)."""
    div_weight: float = 0.01
    """λ of the diversity loss when preservation == 'div'."""
    slowlane_mult: float = 0.1
    """Learning-rate multiplier of the codebook param group when preservation == 'slowlane'."""

    def __post_init__(self) -> None:
        _one_of("codebook.init", self.init, CODEBOOK_INITS)
        _one_of("codebook.sharing", self.sharing, CODEBOOK_SHARING)
        _one_of("codebook.preservation", self.preservation, PRESERVATION)


@dataclass(frozen=True)
class KernelHeadConfig:
    """The π·κ kernel head (``model.head.kernel.*``)."""

    tau_init: float = 1.0
    """Initial τ_κ (learnable, log-parametrised)."""


@dataclass(frozen=True)
class PmixHeadConfig:
    """The pointer mixture on its own learned sphere (``model.head.pmix.*``)."""

    d_pointer: int = 64
    """Sphere dimension d_p of the pointers."""
    scale_init: float = 10.0
    scale_max: float = 100.0


@dataclass(frozen=True)
class ApmixHeadConfig:
    """The pointer mixture in the address's Hellinger embedding (``model.head.apmix.*``)."""

    mode: str = "through"
    """through (candidates φ(W_c ψ) via the codebook, index-free) | free (index-bound)."""
    scale_init: float = 20.0
    scale_max: float = 200.0

    def __post_init__(self) -> None:
        _one_of("head.apmix.mode", self.mode, APMIX_MODES)


@dataclass(frozen=True)
class HeadConfig:
    """The output head (``model.head.*``): ``kind`` picks it; the bank fields serve every bank
    head; ``kernel`` / ``pmix`` / ``apmix`` hold each kind's own knobs."""

    kind: str = "byte"
    """byte | kernel | pmix | apmix."""
    mixture: str = "blend"
    """Gate × bank + byte-tail combination: blend (default) | switch."""
    n_pointers: int = 4
    """J, pointers of pmix and apmix (the card's pmix8 is J = 8)."""
    d_cand: int = 128
    """Width d_c of the candidate (bank trigram) features ψ."""
    use_prior: bool = True
    """Add the bank's log prior ρ to every candidate logit."""
    bank_tile: int = 8192
    """Candidates per tile in the streamed bank log-sum-exp (memory, not maths)."""
    kernel: KernelHeadConfig = field(default_factory=KernelHeadConfig)
    pmix: PmixHeadConfig = field(default_factory=PmixHeadConfig)
    apmix: ApmixHeadConfig = field(default_factory=ApmixHeadConfig)

    def __post_init__(self) -> None:
        _one_of("head.kind", self.kind, HEADS)
        _one_of("head.mixture", self.mixture, MIXTURES)
        check(self.n_pointers > 0, "model.head.n_pointers must be > 0")


@dataclass(frozen=True)
class AlephConfig:
    """The AlephLM architecture, its codebook treatment and its head."""

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
    attn: str = "aleph"
    """The hubs' attention: aleph (routed through the codebook) | softmax (the twin: causal
    SDPA at the same widths, geolip.aleph.softmax_hub; only a bank head reads the codebook)."""
    attn_impl: str = "chunk"
    """Hub implementation: chunk | chunk_loop | cumsum | recurrent (all exact) | fla
    (fla-core's Triton kernel on CUDA once it passed its parity check; chunk elsewhere)."""
    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    kernel_aux_weight: float = 0.0
    """λ_k of the side kernel head (the hemisphere dial); 0 = off."""
    write_aux_weight: float = 0.0
    """λ_w of the write-head auxiliary; 0 = off."""

    def __post_init__(self) -> None:
        check(
            self.d_model > 0 and self.n_layers > 0, "model.d_model and model.n_layers must be > 0"
        )
        check(
            self.d_model % self.n_heads == 0,
            f"model.d_model={self.d_model} must be divisible by model.n_heads={self.n_heads}",
        )
        check(self.seq_trigrams > 0 and self.n_segments > 0, "model.seq_trigrams/n_segments > 0")
        check(self.K > 0 and self.D > 0, "model.K and model.D must be > 0")
        check(self.tau > 0, f"model.tau must be > 0, got {self.tau}")
        check(self.chunk > 0, f"model.chunk must be > 0, got {self.chunk}")
        _one_of("attn_impl", self.attn_impl, ATTN_IMPLS)
        _one_of("attn", self.attn, ATTNS)
        if self.attn == "softmax":  # these read the hubs' key addresses, which softmax has not
            check(
                self.codebook.preservation != "div" and self.write_aux_weight == 0,
                "model.attn=softmax has no key addresses: it cannot take "
                "codebook.preservation='div' or write_aux_weight > 0",
            )
        check(
            self.codebook.init != "fibonacci" or self.D == 4,
            "model.codebook.init='fibonacci' needs model.D=4 (super-Fibonacci points live on S³)",
        )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def reads_codebook(self) -> bool:
        """Whether anything reads the codebook: aleph hubs, a kernel/apmix head or kernel-aux."""
        return (
            self.attn == "aleph"
            or self.head.kind in ("kernel", "apmix")
            or self.kernel_aux_weight > 0
        )

    @property
    def uses_bank(self) -> bool:
        """Whether the model needs a bank (any bank head, or the kernel-aux side head)."""
        return self.head.kind != "byte" or self.kernel_aux_weight > 0

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
    compile: bool = False
    """torch.compile the training forward/backward, used only after it reproduces eager mode on
    the first batch (else eager, with the reason). [proposed] off: compiling costs about a
    minute on 2 CPU cores for ~1.3x per step, worth it only for long runs."""

    def __post_init__(self) -> None:
        check(self.steps >= 1, f"train.steps must be >= 1, got {self.steps}")
        check(self.batch_size > 0, f"train.batch_size must be > 0, got {self.batch_size}")
        check(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        check(self.accum >= 1, f"train.accum must be >= 1, got {self.accum}")
        check(self.amp in ("auto", "off", "bf16", "fp16"), f"train.amp invalid: {self.amp!r}")
        check(
            isinstance(self.compile, bool),
            f"train.compile must be true or false, got {self.compile!r}",
        )
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
        """The config of ``to_dict`` (or of a checkpoint written before the model's fields were
        grouped: its flat keys are moved to their groups)."""
        return cls(
            model=build(AlephConfig, _grouped(d.get("model", {})), "model"),
            train=build(TrainConfig, d.get("train", {}), "train"),
            preset=d.get("preset", "custom"),
        )

    def hash(self) -> str:
        return config_hash(self)

    @property
    def head(self) -> str:
        """The head kind (``model.head.kind``): what run names and tags call the head."""
        return self.model.head.kind


# Flat model keys of configs saved before the head and codebook fields were grouped.
LEGACY_KEYS = {
    "codebook_init": "codebook.init",
    "codebook_sharing": "codebook.sharing",
    "codebook_seed": "codebook.seed",
    "preservation": "codebook.preservation",
    "div_weight": "codebook.div_weight",
    "slowlane_mult": "codebook.slowlane_mult",
    "head": "head.kind",
    "mixture": "head.mixture",
    "n_pointers": "head.n_pointers",
    "d_cand": "head.d_cand",
    "use_prior": "head.use_prior",
    "bank_tile": "head.bank_tile",
    "kernel_tau_init": "head.kernel.tau_init",
    "d_pointer": "head.pmix.d_pointer",
    "pmix_scale_init": "head.pmix.scale_init",
    "pmix_scale_max": "head.pmix.scale_max",
    "apmix_mode": "head.apmix.mode",
    "apmix_scale_init": "head.apmix.scale_init",
    "apmix_scale_max": "head.apmix.scale_max",
}


def _grouped(model: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(model.get("head", {}), str):
        return model
    out: dict[str, Any] = {}
    for key, value in model.items():
        node, *path = LEGACY_KEYS.get(key, key).split(".")
        if not path:
            out[node] = value
            continue
        group = out.setdefault(node, {})
        for name in path[:-1]:
            group = group.setdefault(name, {})
        group[path[-1]] = value
    return out
