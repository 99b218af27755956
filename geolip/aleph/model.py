"""AlephLM: a byte-level trigram language model routed through an aleph codebook."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from geolip.aleph.bank import TrigramBank
from geolip.aleph.codebook import AlephCodebook, build_codebook
from geolip.aleph.config import AlephConfig
from geolip.aleph.heads import BankContext, CandidateFeatures, KernelHead, build_head
from geolip.aleph.hub import Block
from geolip.aleph.losses import diversity_loss, write_head_loss
from geolip.aleph.output import ByteTail, mixture_nll, switch_log_outside, tail_log_prob
from geolip.aleph.softmax_hub import KVState
from geolip.numerics import at_least_fp32
from geolip.ops.aleph_attention import AttentionState

State = list[AttentionState | KVState]  # per layer: the aleph hub's (M, z) or the twin's cache


@dataclass
class LMOutput:
    """``loss`` (scalar to backprop), ``nll: [B, T]`` main trigram NLL in nats, scalar ``metrics``
    (detached), and the carried hub ``state``."""

    loss: torch.Tensor
    nll: torch.Tensor
    state: State
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


class TrigramEmbedding(nn.Module):
    """``x_t = E₁[b₁] + E₂[b₂] + E₃[b₃] + P[t]`` with positions restarting in every segment."""

    def __init__(self, d_model: int, n_pos: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(256, d_model) for _ in range(3))
        self.pos = nn.Parameter(torch.randn(n_pos, d_model) * 0.02)

    def forward(self, ids: torch.Tensor, pos0: int = 0) -> torch.Tensor:
        """ids: [B, T, 3] bytes -> [B, T, d]."""
        T = ids.shape[1]
        if pos0 < 0 or pos0 + T > self.pos.shape[0]:
            raise ValueError(
                f"positions {pos0}..{pos0 + T - 1} exceed the position table of "
                f"{self.pos.shape[0]} trigrams; stream longer inputs in segments"
            )
        ids = ids.long()
        x = sum(t(ids[..., i]) for i, t in enumerate(self.tables))
        return x + self.pos[pos0 : pos0 + T]


class AlephLM(nn.Module):
    """Embedding → L aleph-routed pre-LN blocks → LN → gate × bank + byte-tail output.

    The codebook is shared across layers, heads and the bank head unless
    ``codebook.sharing='layer'`` (then layer ℓ routes on codebook ℓ and the head uses the last).
    The bank is data (:meth:`set_bank`), never a parameter: no learned tensor has an N-sized axis.
    """

    def __init__(self, cfg: AlephConfig, bank: TrigramBank | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        # Per-layer codebooks are the aleph hubs'; the softmax twin's only reader is its head.
        per_layer = cfg.codebook.sharing == "layer" and cfg.attn == "aleph"
        n_books = cfg.n_layers if per_layer else 1
        self.embed = TrigramEmbedding(cfg.d_model, cfg.seq_trigrams)
        self.codebooks = nn.ModuleList(build_codebook(cfg) for _ in range(n_books))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.tail = ByteTail(cfg.d_model)
        if cfg.uses_bank:
            self.cand = CandidateFeatures(cfg.head.d_cand)
        if cfg.head.kind != "byte":
            self.gate = nn.Linear(cfg.d_model, 1)
            self.head = build_head(cfg)
        if cfg.kernel_aux_weight > 0:
            self.aux_kernel = KernelHead(cfg)
        if cfg.write_aux_weight > 0:
            self.write_readouts = nn.Parameter(torch.zeros(cfg.n_layers, 3, 256, 2 * cfg.K))
        self.head_codebook_override: AlephCodebook | None = None
        self.bank: TrigramBank | None = None
        if bank is not None:
            self.set_bank(bank)

    # Codebooks and bank.
    def hub_axes(self, layer: int) -> torch.Tensor:
        return self.codebooks[layer if len(self.codebooks) > 1 else 0].axes()

    def head_codebook(self) -> AlephCodebook:
        """The codebook the bank heads read (a private copy after a routing-only ablation)."""
        if self.head_codebook_override is not None:
            return self.head_codebook_override
        return self.codebooks[-1]

    def set_bank(self, bank: TrigramBank) -> None:
        """Swap the candidate bank: no parameter changes (spec §13.4)."""
        self.bank = bank.to(self.embed.pos.device)

    def bank_context(self) -> BankContext:
        """Candidate features, prior and head axes for the current bank (recomputed from the
        parameters: call once per forward, or once per generation under no_grad)."""
        if self.bank is None:
            raise ValueError(
                f"head {self.cfg.head.kind!r} needs a trigram bank; call set_bank() first"
            )
        if self.bank.trigrams.device != self.embed.pos.device:
            self.bank = self.bank.to(self.embed.pos.device)
        prior = (
            self.bank.log_prior
            if self.cfg.head.use_prior
            else torch.zeros_like(self.bank.log_prior)
        )
        psi = self.cand(self.bank.trigrams)
        return BankContext(psi, prior, self.head_codebook().axes(), self.cfg.head.bank_tile)

    # Backbone.
    def backbone(
        self, ids: torch.Tensor, state: State | None = None, pos0: int = 0
    ) -> tuple[torch.Tensor, State, list[torch.Tensor]]:
        """ids: [B, T, 3] -> (h: [B, T, d], new per-layer state, key addresses per layer)."""
        x = self.embed(ids, pos0)
        new_state, keys = [], []
        for layer, block in enumerate(self.blocks):
            prev = None if state is None else state[layer]
            x, st, g = block(x, self.hub_axes(layer), prev)
            new_state.append(st)
            keys.append(g)
        return self.ln_f(x), new_state, keys

    def step(
        self, ids_t: torch.Tensor, pos: int, state: State | None, inplace: bool = False
    ) -> tuple[torch.Tensor, State]:
        """Decode one position. ids_t: [B, 3] -> (h: [B, d], state); memory constant in context.

        ``inplace``: the aleph hubs update ``state`` where it lies (under ``no_grad``; the
        caller gives up the old state), saving a copy of every layer's ``M`` per token."""
        x = self.embed(ids_t.unsqueeze(1), pos)[:, 0]
        new_state = []
        for layer, block in enumerate(self.blocks):
            prev = None if state is None else state[layer]
            x, st = block.step(x, self.hub_axes(layer), prev, inplace)
            new_state.append(st)
        return self.ln_f(x), new_state

    # Output.
    def _bank_view(self, targets: torch.Tensor) -> tuple[BankContext, torch.Tensor]:
        """The bank context and each target's bank index (−1 out of bank): [B, T]."""
        return self.bank_context(), self.bank.lookup(targets)

    def trigram_nll(self, h: torch.Tensor, targets: torch.Tensor, view=None):
        """h: [B, T, d]; targets: [B, T, 3] -> (nll: [B, T] nats, diagnostics dict).

        ``view`` is a precomputed :meth:`_bank_view` (forward shares it with the kernel-aux head).
        """
        tail_logp = self.tail(h)
        log_tail = tail_log_prob(tail_logp, targets)
        if self.cfg.head.kind == "byte":
            return -log_tail, {}
        ctx, j = view if view is not None else self._bank_view(targets)
        in_bank = j >= 0
        log_q = self.head.target_log_q(h, j.clamp_min(0), ctx)
        gate = at_least_fp32(self.gate(h).squeeze(-1))
        outside = None
        if self.cfg.head.mixture == "switch":
            outside = switch_log_outside(tail_logp, self.bank.trigrams, self.cfg.head.bank_tile)
        nll = mixture_nll(self.cfg.head.mixture, gate, log_q, in_bank, log_tail, outside)
        return nll, _head_diagnostics(log_q, in_bank, gate)

    def forward(
        self, ids: torch.Tensor, targets: torch.Tensor, state: State | None = None, pos0: int = 0
    ) -> LMOutput:
        """ids, targets: [B, T, 3] (targets = the next trigrams) -> LMOutput with aux losses."""
        h, new_state, keys = self.backbone(ids, state, pos0)
        # ψ over the whole bank and the target lookup, once for the main and side heads.
        view = self._bank_view(targets) if self.cfg.uses_bank else None
        nll, diag = self.trigram_nll(h, targets, view)
        main = nll.mean()
        loss, metrics = main, {"loss_main": main.detach(), **diag}
        cfg = self.cfg
        if cfg.codebook.preservation == "div" and cfg.codebook.div_weight > 0:
            div = sum(diversity_loss(g) for g in keys)
            loss, metrics["loss_div"] = loss + cfg.codebook.div_weight * div, div.detach()
        if cfg.kernel_aux_weight > 0:
            kaux = self._kernel_aux(h, view)
            loss, metrics["loss_kaux"] = loss + cfg.kernel_aux_weight * kaux, kaux.detach()
        if cfg.write_aux_weight > 0:
            wr = sum(write_head_loss(g, R, ids) for g, R in zip(keys, self.write_readouts))
            wr = wr / len(keys)
            loss, metrics["loss_write"] = loss + cfg.write_aux_weight * wr, wr.detach()
        return LMOutput(loss=loss, nll=nll, state=new_state, metrics=metrics)

    def _kernel_aux(self, h: torch.Tensor, view) -> torch.Tensor:
        ctx, j = view
        in_bank = j >= 0
        if not bool(in_bank.any()):
            return h.sum() * 0.0
        log_q = self.aux_kernel.target_log_q(h, j.clamp_min(0), ctx)
        return -(log_q[in_bank]).mean()


def _head_diagnostics(log_q, in_bank, gate) -> dict[str, torch.Tensor]:
    """Coverage, in-bank NLL (nats) and gate accuracy, spec §5.3 (detached)."""
    inb = in_bank.float()
    n_in = inb.sum().clamp_min(1.0)
    return {
        "coverage": inb.mean().detach(),
        "inbank_nll": (-(log_q * inb).sum() / n_in).detach(),
        "gate_acc": ((gate > 0) == in_bank).float().mean().detach(),
    }
