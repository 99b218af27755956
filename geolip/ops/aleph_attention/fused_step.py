"""The fused decode step: address, write and read of one token in a handful of batched kernels.

The reference step (:func:`aleph_attention_step`) takes addresses made elsewhere and spends
about twenty small ops per layer (two projections, two row norms, two address softmaxes with
their concatenations, an outer product, an einsum). At decode time each op is microseconds of
dispatch on a few kilobytes, so the op count is the cost. Here queries and keys share one row
norm, one codebook matmul and one softmax (stacked on a new leading axis), the write is one
``baddbmm`` and the read one ``bmm`` plus the denominator's dot product. With
``inplace=True`` (decoding without autograd) the state is updated where it lies instead of
being copied: for the 23M tier that is 256 KiB per layer and token not allocated.

Arithmetic is the reference's: the same fp32 (fp64) address, write-before-read (a token attends
to itself) and denominator floor, so the outputs agree to rounding.
"""

from __future__ import annotations

import torch

from geolip.geometry.address import oriented_address
from geolip.ops.aleph_attention.common import (
    AttentionState,
    compute_dtype,
    denominator_floor,
    zero_state,
)


def aleph_decode_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    axes: torch.Tensor,
    tau: float,
    state: AttentionState | None = None,
    *,
    inplace: bool = False,
) -> tuple[torch.Tensor, AttentionState]:
    """One token from raw query/key directions. q, k: [B, H, D]; v: [B, H, d_h]; axes: [K, D].

    Returns ``o: [B, H, d_h]`` (v's dtype) and the new state ``M: [B, H, 2K, d_h]``,
    ``z: [B, H, 2K]``. ``inplace`` updates the given state's tensors in place (the caller gives
    the old state up; ignored while autograd records, where it may be saved for backward).
    """
    # All of it outside autocast: the address and the running sums stay fp32 (fp64), as in the
    # scan; autocast would run the write and read matmuls, and so the state, in half precision.
    with torch.autocast(device_type=q.device.type, enabled=False):
        return _step(q, k, v, axes, tau, state, inplace)


def _step(q, k, v, axes, tau, state, inplace):
    dt = compute_dtype(v)
    B, H, _ = q.shape
    W, dh = 2 * axes.shape[0], v.shape[-1]
    phi = oriented_address(torch.stack([q, k]).flatten(1, 2), axes, tau).to(dt)  # [2,B·H,2K]
    f, g = phi[0].unsqueeze(1), phi[1].unsqueeze(2)  # [B·H, 1, 2K], [B·H, 2K, 1]
    vv = v.to(dt).reshape(B * H, 1, dh)
    if state is None:
        state = zero_state(B, H, W, dh, device=v.device, dtype=dt)
    M0, z0 = state.M.to(dt), state.z.to(dt)
    if inplace and not torch.is_grad_enabled():
        # A strided state (the scan's views) is copied once; from then on it is updated in place.
        M0, z0 = M0.contiguous().view(B * H, W, dh), z0.contiguous().view(B * H, 1, W)
        M, z = M0.baddbmm_(g, vv), z0.add_(g.transpose(1, 2))
    else:
        M0, z0 = M0.reshape(B * H, W, dh), z0.reshape(B * H, 1, W)
        M, z = torch.baddbmm(M0, g, vv), z0 + g.transpose(1, 2)
    num = torch.bmm(f, M)  # [B·H, 1, d_h]
    den = (f * z).sum(-1, keepdim=True).clamp_min(denominator_floor(v.dtype))
    o = (num / den).view(B, H, dh).to(v.dtype)
    return o, AttentionState(M.view(B, H, W, dh), z.view(B, H, W))
