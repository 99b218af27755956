"""Reconstruction metrics of the SVAE companion (svae.md §13, §2.2).

Cosine is always reported next to the *mean-predictor* baseline: raw BERT vectors are
anisotropic, so predicting the training mean for every sample already scores a high cosine in
raw space; a recon cosine means something only by its margin over that baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from geolip.svae.adapters import quantize


def recon_cosine(recon: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over samples of cos(flatten(recon_b), flatten(target_b)).

    recon, target: [B, ...] (images [B, C, H, W] or feature patches [B, N, P]). fp64, eps 1e−12.
    """
    if recon.shape != target.shape or recon.ndim < 2:
        raise ValueError(
            f"recon_cosine needs equal [B, ...] shapes, got {tuple(recon.shape)} vs "
            f"{tuple(target.shape)}"
        )
    r = recon.detach().double().reshape(recon.shape[0], -1)
    t = target.detach().double().reshape(target.shape[0], -1)
    return float(F.cosine_similarity(r, t, dim=1, eps=1e-12).mean())


def mean_predictor_cosine(train_mean: torch.Tensor, target: torch.Tensor) -> float:
    """Recon cosine of predicting ``train_mean`` for every sample.

    train_mean: [...] one sample's shape (e.g. [N, P]) or [1, ...]; target: [B, ...].
    """
    mean = train_mean.detach().reshape(1, *target.shape[1:]).expand_as(target)
    return recon_cosine(mean, target)


def mse(recon: torch.Tensor, target: torch.Tensor) -> float:
    """Mean squared error over every entry, as a float."""
    return float(F.mse_loss(recon.detach().double(), target.detach().double()))


def byte_metrics(recon: torch.Tensor, img: torch.Tensor) -> dict:
    """Finer byte read-outs of byte images (§2.2). recon, img: [B, C, H, W] on the byte grid.

    ``per_byte_acc`` (= byte_recovery), ``mean_abs_byte_err`` (in byte units),
    ``cell_exact_rate`` (all C bytes of a pixel exact: the trigram rate at C = 3) and
    ``per_channel_acc`` (list of C floats).
    """
    if recon.shape != img.shape or recon.ndim != 4:
        raise ValueError(
            f"byte_metrics needs equal [B, C, H, W] shapes, got {tuple(recon.shape)} vs "
            f"{tuple(img.shape)}"
        )
    qr, qi = quantize(recon).long(), quantize(img).long()
    hit = (qr == qi).double()
    return {
        "per_byte_acc": float(hit.mean()),
        "mean_abs_byte_err": float((qr - qi).abs().double().mean()),
        "cell_exact_rate": float(hit.prod(dim=1).mean()),
        "per_channel_acc": hit.mean(dim=(0, 2, 3)).tolist(),
    }
