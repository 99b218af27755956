"""The bank swap (spec §13.4): a trained model scored on a bank of other vocabulary, no retraining.

The bank is data, not parameters (``graft.swap_bank``): a pmix/apmix head scores whatever
candidate trigrams it is handed. Whether that survives a *different vocabulary* (another stratum
mix of the atlas, or another corpus' atlas) is what this measures, so the report carries how
different the two banks are (``overlap``: the share of the swapped bank's rows the trained bank
also holds; a superset swap has overlap 1) next to each bank's coverage of the held-out targets
and bits/byte, in-bank NLL and gate accuracy (spec §13.4). The statute gauge is unchanged by
construction (the codebook is untouched).

Both banks score the same held-out bytes in the ``windowed`` regime (every target trigram once,
``geolip.aleph.bpb.target_nll_windowed``), so Δ = swapped − trained is paired target by target and
carries a standard error (``geolip.paired``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from geolip.aleph.bank import TrigramBank, trigram_codes
from geolip.aleph.bpb import target_nll_windowed
from geolip.aleph.data import trigram_view
from geolip.aleph.experiments.graft import swap_bank
from geolip.aleph.model import AlephLM
from geolip.paired import Estimate, bits_per_byte, paired_delta


@dataclass(frozen=True)
class BankSwap:
    """What one swap measured on ``targets`` held-out target trigrams."""

    bpb_trained: float
    bpb_swapped: float
    delta: Estimate
    """swapped − trained bits/byte, paired over the targets."""
    coverage_trained: float
    coverage_swapped: float
    heads_trained: dict[str, float]
    """In-bank NLL (nats) and gate accuracy with the trained bank (``head_diagnostics``)."""
    heads_swapped: dict[str, float]
    overlap: float
    """Share of the swapped bank's rows that the trained bank also holds (1: a superset)."""
    size_trained: int
    size_swapped: int
    targets: int

    def metrics(self, prefix: str = "swap/") -> dict[str, float]:
        """Flat MLflow metrics (``swap/bpb_trained_bank`` ...)."""
        m = {
            "bpb_trained_bank": self.bpb_trained,
            "bpb_swapped_bank": self.bpb_swapped,
            "delta_bpb": self.delta.mean,
            "delta_bpb_se": self.delta.se,
            "coverage_trained": self.coverage_trained,
            "coverage_swapped": self.coverage_swapped,
            "overlap": self.overlap,
            "size_trained": float(self.size_trained),
            "size_swapped": float(self.size_swapped),
            "targets": float(self.targets),
        }
        for bank, heads in (("trained", self.heads_trained), ("swapped", self.heads_swapped)):
            m.update({f"{k}_{bank}": v for k, v in heads.items()})
        return {prefix + k: v for k, v in m.items()}


def coverage(bank: TrigramBank, targets: torch.Tensor) -> float:
    """Fraction of ``targets: [N, 3]`` (byte trigrams) that are rows of ``bank``."""
    codes = trigram_codes(targets.long().cpu())
    return float(torch.isin(codes, trigram_codes(bank.trigrams.cpu())).double().mean())


def overlap(trained: TrigramBank, swapped: TrigramBank) -> float:
    """Share of ``swapped``'s rows that are also rows of ``trained``."""
    other = trigram_codes(swapped.trigrams.cpu())
    return float(torch.isin(other, trigram_codes(trained.trigrams.cpu())).double().mean())


@torch.no_grad()
def head_diagnostics(model: AlephLM, held: np.ndarray, batch: int = 8) -> dict[str, float]:
    """``{"inbank_nll", "gate_acc"}`` over consecutive windows of ``seq_trigrams`` of ``held``:
    the in-bank NLL (nats, over targets in the bank) and the gate's accuracy (spec §5.3)."""
    tri, _ = trigram_view(held)
    T = min(model.cfg.seq_trigrams, tri.shape[0] - 1)
    n_win = (tri.shape[0] - 1) // T
    windows = torch.stack([tri[i * T : i * T + T + 1] for i in range(n_win)])
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    n = n_in = inbank = gate = 0.0
    try:
        for w in windows.split(batch):
            w = w.to(dev)
            m = model(w[:, :-1], w[:, 1:]).metrics
            k = w.shape[0] * T
            cov = float(m["coverage"]) * k
            n, n_in = n + k, n_in + cov
            inbank += float(m["inbank_nll"]) * cov
            gate += float(m["gate_acc"]) * k
    finally:
        model.train(was)
    return {"inbank_nll": inbank / max(n_in, 1.0), "gate_acc": gate / max(n, 1.0)}


def bank_swap(model: AlephLM, other: TrigramBank, held: np.ndarray) -> BankSwap:
    """Score ``model`` with its own bank and with ``other`` on the held-out bytes ``held: [L]``."""
    if model.bank is None or not model.cfg.uses_bank:
        raise ValueError(f"a {model.cfg.head.kind} head uses no bank: there is nothing to swap")
    tri, _ = trigram_view(held)
    nll_trained, _ = target_nll_windowed(model, held)
    swapped_model = swap_bank(model, other)
    nll_swapped, _ = target_nll_windowed(swapped_model, held)
    trained, swapped = (bits_per_byte(n.numpy()) for n in (nll_trained, nll_swapped))
    targets = tri[1:]  # target trigrams 1..n-1, the ones target_nll_windowed scores
    return BankSwap(
        bpb_trained=float(trained.mean()),
        bpb_swapped=float(swapped.mean()),
        delta=paired_delta({"0": swapped}, {"0": trained}),
        coverage_trained=coverage(model.bank, targets),
        coverage_swapped=coverage(other, targets),
        heads_trained=head_diagnostics(model, held),
        heads_swapped=head_diagnostics(swapped_model, held),
        overlap=overlap(model.bank, other),
        size_trained=model.bank.size,
        size_swapped=other.size,
        targets=len(trained),
    )
