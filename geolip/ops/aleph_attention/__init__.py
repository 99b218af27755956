"""Aleph-routed causal linear attention: ``o_t = Σ_{s≤t}⟨f_t,g_s⟩v_s / Σ_{s≤t}⟨f_t,g_s⟩``.

Implementations of one operator, all taking and returning the streaming state ``(M, z)``:

- ``naive``: the test oracle, both as prefix sums (``cumsum``) and as the quadratic masked product;
- ``chunk``: the exact chunked causal scan, fully parallel over chunks or looped with carried state;
- ``recurrent``: the one-token step (constant memory in context length), the reference for
- ``fused_step``: the decode step from raw q/k directions in a few batched kernels (in place
  when decoding without autograd);
- ``fla``: flash-linear-attention's chunked kernel on CUDA, used after a parity check against
  the oracle, the chunk scan elsewhere.

Shapes throughout: ``f, g: [B, H, T, 2K]`` (oriented addresses of queries and keys, positive rows),
``v: [B, H, T, d_h]``, state ``M: [B, H, 2K, d_h]``, ``z: [B, H, 2K]``.
"""

from geolip.ops.aleph_attention.chunk import aleph_attention_chunk
from geolip.ops.aleph_attention.common import AttentionState, denominator_floor, zero_state
from geolip.ops.aleph_attention.fla import aleph_attention_fla, fla_status
from geolip.ops.aleph_attention.fused_step import aleph_decode_step
from geolip.ops.aleph_attention.naive import aleph_attention_cumsum, aleph_attention_quadratic
from geolip.ops.aleph_attention.recurrent import aleph_attention_recurrent, aleph_attention_step

IMPLEMENTATIONS = ("chunk", "chunk_loop", "cumsum", "recurrent", "fla")


def aleph_attention(f, g, v, state=None, *, impl: str = "chunk", chunk: int = 128):
    """Dispatch to one implementation by name; returns ``(o: [B,H,T,d_h], (M, z))``."""
    if impl == "chunk":
        return aleph_attention_chunk(f, g, v, state, chunk=chunk, parallel=True)
    if impl == "chunk_loop":
        return aleph_attention_chunk(f, g, v, state, chunk=chunk, parallel=False)
    if impl == "cumsum":
        return aleph_attention_cumsum(f, g, v, state)
    if impl == "recurrent":
        return aleph_attention_recurrent(f, g, v, state)
    if impl == "fla":  # fla-core's Triton kernels on CUDA after a parity check, else "chunk"
        return aleph_attention_fla(f, g, v, state, chunk=chunk)
    raise ValueError(f"attention impl must be one of {IMPLEMENTATIONS}, got {impl!r}")


__all__ = [
    "IMPLEMENTATIONS",
    "AttentionState",
    "aleph_attention",
    "aleph_attention_chunk",
    "aleph_attention_cumsum",
    "aleph_attention_fla",
    "aleph_attention_quadratic",
    "aleph_attention_recurrent",
    "aleph_attention_step",
    "aleph_decode_step",
    "denominator_floor",
    "fla_status",
    "zero_state",
]
