"""The exact chunked causal scan: the training path.

Within a chunk of C positions the kernel is computed quadratically (``(F_c G_cᵀ) ⊙ L_C``); across
chunks only the summaries ``S_c = G_cᵀV_c`` (2K×d_h) and ``z_c = G_cᵀ1`` flow, as exclusive prefix
sums. Cost is O(T·(C·2K + 2K·d_h + C·d_h)) per head: linear in T.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F_

from geolip.ops.aleph_attention.common import (
    AttentionState,
    compute_dtype,
    denominator_floor,
    zero_state,
)


def _pad_to_chunks(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """[B, H, T, W] -> [B, H, n_c, C, W], zero rows appended (zero keys and values add nothing)."""
    B, H, T, W = x.shape
    n_c = -(-T // chunk)
    if n_c * chunk != T:  # no copy (and no pad node in the backward) when the chunks fit
        x = F_.pad(x, (0, 0, 0, n_c * chunk - T))
    return x.reshape(B, H, n_c, chunk, W)


def _intra(Fc: torch.Tensor, Gc: torch.Tensor) -> torch.Tensor:
    """Causal intra-chunk kernel ``(F_c G_cᵀ) ⊙ L_C``: [..., C, C], diagonal included."""
    # In place on a fresh matmul output: the matmul's backward needs only its inputs.
    return (Fc @ Gc.transpose(-1, -2)).tril_()


def aleph_attention_chunk(
    f: torch.Tensor,
    g: torch.Tensor,
    v: torch.Tensor,
    state: AttentionState | None = None,
    *,
    chunk: int = 128,
    parallel: bool = True,
) -> tuple[torch.Tensor, AttentionState]:
    """Chunked scan. f, g: [B, H, T, 2K]; v: [B, H, T, d_h] -> (o: [B, H, T, d_h], final state).

    ``parallel=True`` computes every chunk summary at once and takes exclusive prefix sums
    (memory O(n_c·2K·d_h)); ``parallel=False`` loops over chunks carrying ``(M, z)`` (memory
    O(2K·d_h)).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    dt = compute_dtype(v)
    B, H, T, W = g.shape
    if T == 0:
        if state is None:
            state = zero_state(B, H, W, v.shape[-1], device=v.device, dtype=dt)
        return v.clone(), state
    # The denominator rides along as an extra value column [V | 1] (and z as an extra column of
    # M): one matmul path yields numerator and denominator, with no separate C×C row sums.
    v1 = torch.cat([v.to(dt), torch.ones_like(v[..., :1], dtype=dt)], dim=-1)
    Fc, Gc, Vc = (_pad_to_chunks(x.to(dt), chunk) for x in (f, g, v1))
    if state is None:  # an empty past: [M | z] = 0 made at once
        MZ0 = torch.zeros(B, H, W, v.shape[-1] + 1, device=v.device, dtype=dt)
    else:
        MZ0 = torch.cat([state.M.to(dt), state.z.to(dt).unsqueeze(-1)], dim=-1)
    run = _scan_parallel if parallel else _scan_loop
    out, MZ = run(Fc, Gc, Vc, MZ0)
    # Padded queries would read 0/0: slice them off before dividing.
    out = out.flatten(2, 3)[:, :, :T]
    den = out[..., -1:].clamp_min(denominator_floor(v.dtype))
    o = (out[..., :-1] / den).to(v.dtype)
    return o, AttentionState(MZ[..., :-1], MZ[..., -1])


def _scan_parallel(Fc, Gc, Vc, MZ0):
    """All chunks at once. Fc, Gc: [B,H,n,C,2K]; Vc: [B,H,n,C,d+1]; MZ0: [B,H,2K,d+1]."""
    S = Gc.transpose(-1, -2) @ Vc  # [B,H,n,2K,d+1]
    # Exclusive prefixes by sequential addition in the same order as the carried-state loop:
    # torch's CPU cumsum accumulates fp32 in higher precision, so a stream split at chunk edges
    # would not reproduce the single pass bitwise. n_c adds cost nothing next to the matmuls.
    P, final = _prefix(MZ0, S)
    out = Fc @ P + _intra(Fc, Gc) @ Vc
    return out, final


def _prefix(x0: torch.Tensor, parts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exclusive prefixes [x0, x0+p0, ..., x0+p0+…+p_{n−2}] along dim 2 and the total
    x0+p0+…+p_{n−1}: parts [B,H,n,...] -> ([B,H,n,...], [B,H,...]).

    ``unbind`` (not ``parts[:, :, c]`` in the loop): slicing makes one backward node per chunk
    that zero-fills a gradient the size of ``parts``, an O(n_c²) backward. Stacking only the
    exclusive ones (not all n+1, then slicing) keeps the matmul's operand contiguous (no copy)
    and its backward free of a zero-filled gradient per slice.
    """
    out = [x0]
    for p in parts.unbind(2):
        out.append(out[-1] + p)
    return torch.stack(out[:-1], dim=2), out[-1]


def _scan_loop(Fc, Gc, Vc, MZ):
    """Chunk by chunk with carried state; the same arithmetic per chunk as the parallel form."""
    outs = []
    for F, G, V in zip(Fc.unbind(2), Gc.unbind(2), Vc.unbind(2)):
        outs.append(F @ MZ + _intra(F, G) @ V)
        MZ = MZ + G.transpose(-1, -2) @ V
    return torch.stack(outs, 2), MZ
