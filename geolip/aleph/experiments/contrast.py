"""The controller contrast (spec §10): how much does a trained model *depend* on its codebook?

Each ablation acts on a deep copy of the model in eval mode and rewrites the codebook table
``A_raw: [K, D]`` alone — every projection that addresses on it stays fixed — then scores the copy
on the identical pre-materialised windows as the base model. ``permute`` and ``signflip`` are exact
symmetries of every index-contracted consumer (§1.4 S1/S2), so a non-zero Δ proves an index-bound
path (the kernel head's per-axis emission keys); ``randomize`` and ``rotate`` change the geometry
and so also probe index-free routing. The scope localises the dependence: ``routing`` gives the bank
head an unablated private copy, ``head`` ablates only the head's copy and leaves the hubs alone.
:func:`joint_rotate` is the O(D) gauge symmetry S3 (a control that must give Δ = 0).
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from geolip.aleph.bpb import Progress, bpb_batches
from geolip.aleph.experiments.names import OPS, SCOPES
from geolip.geometry.sphere import rownorm

Transform = Callable[[torch.Tensor], torch.Tensor]


class AblationError(ValueError):
    """An unknown ablation op or scope, or an invalid rotation; the message lists valid choices."""


def haar_orthogonal(D: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-random matrix in O(D): [D, D] float64 (QR of a Gaussian with the sign fix)."""
    q, r = torch.linalg.qr(torch.randn(D, D, generator=generator, dtype=torch.float64))
    # Without the sign fix QR's output is not Haar-distributed (it is biased by the R diagonal).
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def codebook_transform(op: str, K: int, D: int, seed: int) -> Transform:
    """The seeded map ``A_raw: [K, D] -> [K, D]`` for one ablation op (drawn once, reused for every
    codebook so that q, k and all layers see the same permutation — spec §10.2 (iii))."""
    if op not in OPS:
        raise AblationError(f"unknown ablation op {op!r}; valid ops: {list(OPS)}")
    gen = torch.Generator().manual_seed(seed)
    if op == "permute":
        perm = torch.randperm(K, generator=gen)
        return lambda A: A[perm]
    if op == "randomize":
        fresh = rownorm(torch.randn(K, D, generator=gen))
        return lambda A: fresh.to(A)
    if op == "rotate":
        R = haar_orthogonal(D, gen)
        return lambda A: A @ R.to(A)
    signs = torch.ones(K)
    signs[torch.randperm(K, generator=gen)[: K // 2]] = -1.0
    return lambda A: A * signs.to(A).unsqueeze(-1)


@torch.no_grad()
def _apply(book: nn.Module, fn: Transform) -> None:
    # copy_ works for both a trainable Parameter and a frozen-arm buffer, and keeps dtype/device.
    book.A_raw.copy_(fn(book.A_raw.detach().clone()))


def ablate(model: nn.Module, op: str, seed: int = 0, scope: str = "all") -> nn.Module:
    """An ablated deep copy of ``model`` in eval mode; the original is untouched.

    scope ``all``: every codebook (hubs and bank head); ``routing``: the hubs' codebooks only (the
    head keeps an unablated private copy via ``head_codebook_override``); ``head``: only the head's
    codebook (an ablated override), hubs untouched. For a byte head, ``head`` changes nothing.
    """
    if scope not in SCOPES:
        raise AblationError(f"unknown ablation scope {scope!r}; valid scopes: {list(SCOPES)}")
    K, D = model.cfg.K, model.cfg.D
    fn = codebook_transform(op, K, D, seed)
    out = copy.deepcopy(model).eval()
    if scope == "head":
        private = copy.deepcopy(out.head_codebook())
        _apply(private, fn)
        out.head_codebook_override = private
        return out
    if scope == "routing" and out.head_codebook_override is None:
        out.head_codebook_override = copy.deepcopy(out.head_codebook())
    for book in out.codebooks:
        _apply(book, fn)
    if scope == "all" and out.head_codebook_override is not None:
        _apply(out.head_codebook_override, fn)
    return out


def permute(model: nn.Module, seed: int = 0, scope: str = "all") -> nn.Module:
    """``A_raw ← A_raw[π]`` with a seeded uniform permutation π (exact symmetry S1 if index-free)."""
    return ablate(model, "permute", seed, scope)


def randomize(model: nn.Module, seed: int = 0, scope: str = "all") -> nn.Module:
    """``A_raw ← rownorm(N(0, I)_{K×D})``, seeded: a fresh random frame."""
    return ablate(model, "randomize", seed, scope)


def rotate(model: nn.Module, seed: int = 0, scope: str = "all") -> nn.Module:
    """``A_raw ← A_raw R`` with R Haar in O(D), W_q/W_k held fixed (a geometric ablation, not S3)."""
    return ablate(model, "rotate", seed, scope)


def signflip(model: nn.Module, seed: int = 0, scope: str = "all") -> nn.Module:
    """Flip the sign of a seeded random half of the rows (exact symmetry S2 if index-free)."""
    return ablate(model, "signflip", seed, scope)


@torch.no_grad()
def _rotate_blocks(linear: nn.Linear, R: torch.Tensor) -> None:
    """Left-multiply every D-row block of ``linear.weight: [n·D, d_in]`` by Rᵀ.

    A block W_b produces a D-dim direction x = W_b h that is addressed on the codebook; with
    A ← A R, the cosines ``x̂ Aᵀ`` are unchanged iff x ← Rᵀ x, i.e. W_b ← Rᵀ W_b.
    """
    D = R.shape[0]
    w = linear.weight
    blocks = w.view(-1, D, w.shape[-1])
    w.copy_((R.T.to(w).unsqueeze(0) @ blocks).view_as(w))


def _addressing_projections(model: nn.Module) -> list[nn.Linear]:
    """Every Linear whose output is a D-dim direction addressed on the codebook."""
    projs = [p for b in model.blocks for p in (b.hub.W_q, b.hub.W_k)]
    for name in ("head", "aux_kernel"):
        head = getattr(model, name, None)
        if head is None:
            continue
        if hasattr(head, "W_pi"):
            projs.append(head.W_pi)
        if hasattr(head, "P_a"):
            projs.append(head.P_a)
            if head.mode == "through":
                projs.append(head.W_c)
    return projs


def joint_rotate(model: nn.Module, R: torch.Tensor) -> nn.Module:
    """The O(D) gauge symmetry S3 on a deep copy: ``A ← A R`` on every codebook (and a head
    override) with every addressing projection rotated by Rᵀ per D-block, so every cosine u — and
    hence every output — is unchanged. R: [D, D] orthogonal. apmix-``free``'s ``V_c`` emits over
    axis indices, which a rotation does not move, so it is left alone.
    """
    D = model.cfg.D
    if R.shape != (D, D):
        raise AblationError(f"joint_rotate needs R of shape [{D}, {D}], got {tuple(R.shape)}")
    R64 = R.double()
    err = (R64.T @ R64 - torch.eye(D, dtype=torch.float64)).abs().max().item()
    if err > 1e-4:
        raise AblationError(f"joint_rotate needs an orthogonal R (|RᵀR − I| = {err:.2e})")
    out = copy.deepcopy(model)
    books = list(out.codebooks)
    if out.head_codebook_override is not None:
        books.append(out.head_codebook_override)
    for book in books:
        _apply(book, lambda A: A @ R64.to(A))
    for proj in _addressing_projections(out):
        _rotate_blocks(proj, R64)
    return out


@dataclass(frozen=True)
class ContrastRow:
    """One ablation op: Δbpb per seed, their mean and sample std (0 with a single seed)."""

    op: str
    deltas: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.deltas)

    @property
    def std(self) -> float:
        return statistics.stdev(self.deltas) if len(self.deltas) > 1 else 0.0


@dataclass(frozen=True)
class ContrastReport:
    """A controller contrast: the base bpb and, per op, ``Δbpb = bpb_ablated − bpb_base`` on the
    identical fixed windows, over seeds."""

    base_bpb: float
    scope: str
    seeds: tuple[int, ...]
    results: tuple[ContrastRow, ...]

    def delta(self, op: str) -> float:
        """Mean Δbpb of ``op``."""
        for row in self.results:
            if row.op == op:
                return row.mean
        raise AblationError(f"op {op!r} not in this report; it has {[r.op for r in self.results]}")

    def rows(self) -> list[dict]:
        return [
            {
                "op": r.op,
                "scope": self.scope,
                "base_bpb": self.base_bpb,
                "delta_bpb_mean": r.mean,
                "delta_bpb_std": r.std,
                "n_seeds": len(r.deltas),
                "deltas": list(r.deltas),
            }
            for r in self.results
        ]

    def as_markdown(self) -> str:
        lines = [
            f"base bpb {self.base_bpb:.4f} (scope {self.scope}, seeds {list(self.seeds)})",
            "",
            "| op | Δbpb mean | Δbpb std | seeds |",
            "|---|---:|---:|---:|",
        ]
        for r in self.results:
            lines.append(f"| {r.op} | {r.mean:+.4f} | {r.std:.4f} | {len(r.deltas)} |")
        return "\n".join(lines)


def controller_contrast(
    model: nn.Module,
    batches: list[torch.Tensor],
    ops: Sequence[str] = ("permute", "randomize", "rotate"),
    seeds: Sequence[int] = (0, 1, 2),
    scope: str = "all",
    progress: Progress | None = None,
) -> ContrastReport:
    """Score ``model`` and every (op, seed) ablation on the same fixed windows ``[B, T+1, 3]``.

    The batches must be pre-materialised (``geolip.aleph.data.fixed_eval_batches``): resampling them
    between base and ablation would add noise the size of the index-free signal (§10.2 (iv)).
    The model's train/eval mode is restored afterwards. ``progress`` gets each scored batch's
    window count: ``(1 + len(ops) * len(seeds))`` times the windows in all.
    """
    for op in ops:
        if op not in OPS:
            raise AblationError(f"unknown ablation op {op!r}; valid ops: {list(OPS)}")
    if scope not in SCOPES:
        raise AblationError(f"unknown ablation scope {scope!r}; valid scopes: {list(SCOPES)}")
    base = bpb_batches(model, batches, progress).bpb  # restores the model's train/eval mode
    results = []
    for op in ops:
        deltas = tuple(
            bpb_batches(ablate(model, op, s, scope), batches, progress).bpb - base for s in seeds
        )
        results.append(ContrastRow(op, deltas))
    return ContrastReport(base, scope, tuple(seeds), tuple(results))


def dependence_ratio(closed: ContrastReport, open_: ContrastReport, op: str = "permute") -> float:
    """``Δ_closed / Δ_open`` for one op (the seed reports ~250× kernel vs pmix); inf if Δ_open = 0."""
    d_open = open_.delta(op)
    return math.inf if d_open == 0 else closed.delta(op) / d_open
