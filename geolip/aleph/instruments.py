"""Instruments that read a model without changing it: the statute gauge on a probe batch."""

from __future__ import annotations

import torch

from geolip.aleph.model import AlephLM
from geolip.geometry.gauge import GaugeReading, StatuteGauge

MAX_ROWS = 200_000


@torch.no_grad()
def routing_rows(model: AlephLM, probe: torch.Tensor, max_rows: int = MAX_ROWS) -> torch.Tensor:
    """Hub key addresses of every layer and head on a probe batch, as rows ``[M, 2K]``.

    probe: [B, T(+1), 3] trigram windows (a trailing target trigram is ignored).
    """
    was_training = model.training
    model.eval()
    ids = probe[:, : model.cfg.seq_trigrams].to(next(model.parameters()).device)
    _, _, keys = model.backbone(ids)
    model.train(was_training)
    rows = torch.cat([g.reshape(-1, g.shape[-1]) for g in keys]).float().cpu()
    if rows.shape[0] > max_rows:  # deterministic subsample: evenly spaced rows
        rows = rows[torch.linspace(0, rows.shape[0] - 1, max_rows).long()]
    return rows


def read_gauge(model: AlephLM, probe: torch.Tensor | None = None) -> GaugeReading:
    """The statute gauge of the head's codebook (the shared one by default), with routing
    concentration when a probe batch is given."""
    A = model.head_codebook().axes().detach().cpu()
    # The softmax twin routes without the codebook: it has no key addresses to read.
    routed = probe is not None and model.cfg.attn == "aleph"
    rows = routing_rows(model, probe) if routed else None
    return StatuteGauge()(A, rows)
