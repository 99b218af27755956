"""The aleph codebook: K unit directions in D dimensions, shared by routing and prediction."""

from __future__ import annotations

import math

import torch
from torch import nn

from geolip.geometry.sphere import rownorm
from geolip.numerics import at_least_fp32

_PSI = 1.533751168755204288118041  # the super-Fibonacci constant ψ (ψ⁴ = ψ + 4)


def fibonacci_s3(n: int) -> torch.Tensor:
    """Super-Fibonacci points on S³ (Alexa 2022): [n, 4] unit rows, evenly spread."""
    s = torch.arange(n, dtype=torch.float64) + 0.5
    r, R = torch.sqrt(s / n), torch.sqrt(1.0 - s / n)
    alpha, beta = 2 * math.pi * s / math.sqrt(2.0), 2 * math.pi * s / _PSI
    pts = torch.stack([r * alpha.sin(), r * alpha.cos(), R * beta.sin(), R * beta.cos()], dim=-1)
    return pts.float()


class AlephCodebook(nn.Module):
    """An *aleph*: a learned (or frozen) codebook of K unit directions in D dims.

    The raw table ``A_raw: [K, D]`` is stored unnormalised and row-normalised at every use, so the
    optimiser moves directions, never lengths. Frozen arms (``frozen``, ``spread``,
    ``frozen_random``) register it as a buffer: no gradient, never in an optimiser, bit-identical
    after training. Everything that reads the codebook calls :meth:`axes`.
    """

    def __init__(self, init: torch.Tensor, trainable: bool = True) -> None:
        super().__init__()
        if init.ndim != 2:
            raise ValueError(f"codebook init must be [K, D], got shape {tuple(init.shape)}")
        if trainable:
            self.A_raw = nn.Parameter(init.clone().float())
        else:
            self.register_buffer("A_raw", init.clone().float())

    @property
    def trainable(self) -> bool:
        return isinstance(self.A_raw, nn.Parameter)

    @property
    def K(self) -> int:
        return self.A_raw.shape[0]

    def axes(self) -> torch.Tensor:
        """Unit axes ``A = rownorm(A_raw)``: [K, D], fp32."""
        return rownorm(at_least_fp32(self.A_raw))


def initial_codebook(K: int, D: int, init: str, seed: int, generator: torch.Generator | None):
    """The starting table for a codebook init name (``model.codebook.init``)."""
    if init == "random":
        return torch.randn(K, D, generator=generator)
    if init == "fibonacci":
        return fibonacci_s3(K)
    if init == "spread":
        from geolip.geometry.spread import spread_codebook

        return spread_codebook(K, D)
    if init == "frozen_random":
        from geolip.geometry.spread import random_codebook

        return random_codebook(K, D, seed)
    raise ValueError(f"unknown codebook init {init!r}")


def build_codebook(cfg, generator: torch.Generator | None = None) -> AlephCodebook:
    """A codebook for the preservation arm of ``cfg`` (an AlephConfig), spec §11.1."""
    book = cfg.codebook
    init = {"spread": "spread", "frozen_random": "frozen_random"}.get(book.preservation, book.init)
    # Frozen arms keep their init; so does a codebook nothing reads (the softmax twin with a
    # routing-free head), which would otherwise be a parameter without a gradient (DDP stalls).
    trainable = book.preservation not in ("frozen", "spread", "frozen_random")
    trainable = trainable and cfg.reads_codebook
    return AlephCodebook(initial_codebook(cfg.K, cfg.D, init, book.seed, generator), trainable)
