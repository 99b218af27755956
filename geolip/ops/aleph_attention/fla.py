"""``impl="fla"``: the chunked scan on flash-linear-attention's Triton kernels, trusted only after
a parity check against the oracle on the device it will run on.

``fla.ops.linear_attn.chunk_linear_attn(normalize=True, scale=1)`` computes exactly this operator
(``o_t = f_tᵀM_t / f_tᵀz_t`` with ``M_t = Σ_{s≤t} g_s v_sᵀ``, ``z_t = Σ_{s≤t} g_s``) with the
state ``(M, z)`` in and out, in its ``[B, T, H, ·]`` layout. Before first use on a device the
kernel runs a small problem (a carried state, a length that is no multiple of its chunk) and
its values, gradients and final state must match :func:`aleph_attention_cumsum`; on a CPU,
without ``fla`` installed, or when the check fails, the PyTorch chunk scan runs instead, and
:func:`fla_status` says why (one line, also warned once).

The operands are cast to fp32 for the kernel: the address is fp32 by design (routing at τ=0.1
spans e^±10), and the running sums accumulate in fp32 as in every other implementation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from geolip.ops.aleph_attention.chunk import aleph_attention_chunk
from geolip.ops.aleph_attention.common import AttentionState, compute_dtype
from geolip.ops.aleph_attention.naive import aleph_attention_cumsum

Impl = Callable[..., tuple[torch.Tensor, AttentionState]]
_STATUS: dict[str, str] = {}  # device -> "" (checked, in use) or why the chunk scan runs
PARITY_TOL = 2e-3  # fp32 Triton matmuls may use TF32 inside: relative to each tensor's scale


def fla_kernel(f, g, v, state: AttentionState | None = None):
    """The fla call in this module's shapes. f, g: [B, H, T, 2K]; v: [B, H, T, d_h]."""
    from fla.ops.linear_attn import chunk_linear_attn

    q, k, vv = (x.float().transpose(1, 2).contiguous() for x in (f, g, v))
    init = None if state is None else (state.M.float(), state.z.float().unsqueeze(1))
    o, (M, z) = chunk_linear_attn(
        q, k, vv, scale=1.0, initial_state=init, output_final_state=True, normalize=True
    )
    return o.transpose(1, 2).to(v.dtype), AttentionState(M, z.squeeze(1))


def aleph_attention_fla(f, g, v, state: AttentionState | None = None, *, chunk: int = 128):
    """fla's kernel where it passed its check on this device, else the chunk scan (same shapes
    and state as :func:`aleph_attention_chunk`)."""
    if fla_status(f.device) == "":
        return fla_kernel(f, g, v, state)
    return aleph_attention_chunk(f, g, v, state, chunk=chunk, parallel=True)


def fla_status(device: torch.device) -> str:
    """ "" when the fla kernel is in use on ``device``; else the reason the chunk scan runs."""
    key = str(device)
    if key not in _STATUS:
        _STATUS[key] = _first_use(torch.device(device))
        if _STATUS[key]:
            warnings.warn(f"attn_impl=fla on {key}: {_STATUS[key]}", stacklevel=3)
    return _STATUS[key]


def _first_use(device: torch.device) -> str:
    if device.type != "cuda":
        return f"the fla kernels need CUDA; {device.type} runs the PyTorch chunk scan"
    try:
        import fla.ops.linear_attn  # noqa: F401
    except ImportError as exc:
        return f"fla-core is not installed ({exc}); the PyTorch chunk scan runs"
    try:
        return parity_failure(fla_kernel, device)
    except Exception as exc:  # noqa: BLE001 - a kernel that cannot run is not used
        return f"the fla kernel failed its first run ({type(exc).__name__}: {exc}); chunk scan"


def parity_failure(candidate: Impl, device: torch.device, tol: float = PARITY_TOL) -> str:
    """ "" when ``candidate`` reproduces the cumsum oracle on ``device`` (outputs, gradients of
    f, g, v and of the carried state, final state); else what differed, in one line."""
    gen = torch.Generator().manual_seed(0)
    B, H, T, W, dh = 2, 2, 75, 16, 8  # T: no multiple of any chunk size
    raw = [torch.rand(B, H, T, W, generator=gen) + 0.05 for _ in range(2)]
    f, g = (x / x.sum(-1, keepdim=True) for x in raw)  # positive rows, as addresses are
    v = torch.randn(B, H, T, dh, generator=gen)
    M0 = torch.randn(B, H, W, dh, generator=gen)
    z0 = torch.rand(B, H, W, generator=gen) * 3
    cot = torch.randn(B, H, T, dh, generator=gen)
    results = []
    for fn in (candidate, aleph_attention_cumsum):
        leaves = [x.to(device).requires_grad_() for x in (f, g, v, M0, z0)]
        o, st = fn(*leaves[:3], AttentionState(leaves[3], leaves[4]))
        ((o * cot.to(device)).sum() + st.M.square().sum() + st.z.sum()).backward()
        grads = [torch.zeros_like(x) if x.grad is None else x.grad for x in leaves]
        results.append([o, st.M, st.z, *grads])  # a gradient never formed counts as 0
    names = ("o", "final M", "final z", "grad f", "grad g", "grad v", "grad M0", "grad z0")
    for name, a, b in zip(names, *results):
        a, b = a.detach().to("cpu", compute_dtype(b)), b.detach().cpu()
        err = float((a - b).abs().max() / b.abs().max().clamp_min(1e-6))
        if not err <= tol:  # also catches NaN
            return f"parity check failed: {name} off by {err:.1e} (relative); chunk scan"
    return ""
