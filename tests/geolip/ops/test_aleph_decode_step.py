"""The fused decode step against the reference step and the chunked scan: values, gradients,
final state, and the in-place update's ownership rules."""

from __future__ import annotations

import pytest
import torch

from geolip.geometry.address import oriented_address
from geolip.geometry.sphere import rownorm
from geolip.ops.aleph_attention import (
    AttentionState,
    aleph_attention_chunk,
    aleph_attention_step,
    aleph_decode_step,
)

B, H, K, D, DH, TAU = 2, 3, 8, 4, 5, 0.1


def directions(T, seed=0, dtype=torch.float64):
    """q, k: [B, H, T, D] raw directions; v: [B, H, T, d_h]; axes: [K, D] unit rows."""
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, H, T, D, generator=gen, dtype=dtype) for _ in range(2))
    v = torch.randn(B, H, T, DH, generator=gen, dtype=dtype)
    axes = rownorm(torch.randn(K, D, generator=gen, dtype=dtype))
    return q, k, v, axes


def carried(seed=3, T0=6):
    """The state a prefix of T0 tokens wrote (from the chunked scan: non-contiguous views)."""
    q, k, v, axes = directions(T0, seed)
    f, g = oriented_address(q, axes, TAU), oriented_address(k, axes, TAU)
    return aleph_attention_chunk(f, g, v, chunk=4)[1], axes


def reference(q, k, v, axes, state):
    f, g = oriented_address(q, axes, TAU), oriented_address(k, axes, TAU)
    return aleph_attention_step(f, g, v, state)


@pytest.mark.parametrize("with_state", [False, True])
def test_one_step_equals_the_reference(with_state):
    q, k, v, _ = directions(1, seed=1)
    state, axes = carried() if with_state else (None, directions(1, seed=3)[3])
    o_ref, s_ref = reference(q[:, :, 0], k[:, :, 0], v[:, :, 0], axes, state)
    o, s = aleph_decode_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], axes, TAU, state)
    torch.testing.assert_close(o, o_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s.M, s_ref.M, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s.z, s_ref.z, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("inplace", [False, True])
def test_a_stream_of_steps_equals_the_chunked_scan(inplace):
    """Token by token (in place or not) from a carried state: every output and the final state
    are the scan's."""
    state, axes = carried()
    q, k, v, _ = directions(11, seed=2)
    f, g = oriented_address(q, axes, TAU), oriented_address(k, axes, TAU)
    o_scan, s_scan = aleph_attention_chunk(f, g, v, state, chunk=4)
    outs, st = [], state
    with torch.no_grad():
        for t in range(q.shape[2]):
            o, st = aleph_decode_step(
                q[:, :, t], k[:, :, t], v[:, :, t], axes, TAU, st, inplace=inplace
            )
            outs.append(o)
    torch.testing.assert_close(torch.stack(outs, 2), o_scan, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(st.M, s_scan.M, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(st.z, s_scan.z, rtol=1e-10, atol=1e-12)


def test_gradients_equal_the_reference():
    """Through q, k, v, the codebook and the carried state (M, z)."""
    q, k, v, _ = directions(1, seed=4)
    state, axes = carried()
    leaves = [
        x.detach().clone().requires_grad_()
        for x in (q[:, :, 0], k[:, :, 0], v[:, :, 0], axes, state.M, state.z)
    ]
    cot = torch.randn(B, H, DH, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    def grads(fn):
        for t in leaves:
            t.grad = None
        qq, kk, vv, A, M, z = leaves
        o, s = fn(qq, kk, vv, A, AttentionState(M, z))
        ((o * cot).sum() + s.M.square().sum() + s.z.sum()).backward()
        return [t.grad.clone() for t in leaves]

    ref = grads(reference)
    fused = grads(lambda q_, k_, v_, A, s: aleph_decode_step(q_, k_, v_, A, TAU, s))
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_inplace_updates_a_contiguous_state_where_it_lies():
    state, axes = carried()
    q, k, v, _ = directions(2, seed=6)
    rows = [(q[:, :, t], k[:, :, t], v[:, :, t]) for t in range(2)]
    with torch.no_grad():
        s1 = aleph_decode_step(*rows[0], axes, TAU, state, inplace=True)[1]
        assert s1.M.is_contiguous()  # the scan's views were copied once, then owned
        ptr, before = s1.M.data_ptr(), AttentionState(s1.M.clone(), s1.z.clone())
        o2, s2 = aleph_decode_step(*rows[1], axes, TAU, s1, inplace=True)
        o_ref, s_ref = reference(*rows[1], axes, before)
    assert s2.M.data_ptr() == ptr and s1.M.data_ptr() == ptr  # s1 was updated, not copied
    torch.testing.assert_close(s1.M, s_ref.M, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s2.z, s_ref.z, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(o2, o_ref, rtol=1e-12, atol=1e-12)


def test_inplace_is_ignored_while_autograd_records():
    """The old state may be saved for backward: with grad enabled it is never overwritten."""
    state, axes = carried()
    M = state.M.contiguous().requires_grad_()
    z = state.z.contiguous()
    q, k, v, _ = directions(1, seed=7)
    before = M.detach().clone()
    o, s = aleph_decode_step(
        q[:, :, 0], k[:, :, 0], v[:, :, 0], axes, TAU, AttentionState(M, z), inplace=True
    )
    assert torch.equal(M.detach(), before) and s.M.data_ptr() != M.data_ptr()
    o.sum().backward()
    assert M.grad is not None


def test_bf16_values_keep_an_fp32_address_and_state():
    q, k, v, axes = directions(1, seed=8, dtype=torch.float32)
    vb = v[:, :, 0].to(torch.bfloat16)
    o, s = aleph_decode_step(q[:, :, 0], k[:, :, 0], vb, axes, TAU)
    assert o.dtype == torch.bfloat16 and s.M.dtype == torch.float32
    o_ref, _ = reference(q[:, :, 0], k[:, :, 0], vb, axes, None)
    torch.testing.assert_close(o.float(), o_ref.float(), rtol=1e-2, atol=1e-2)


def test_under_autocast_the_state_still_accumulates_in_fp32():
    """bf16 autocast (what GPU training runs) must not move the write and read matmuls, and so
    the running state, to half precision."""
    state, axes = carried()
    q, k, v, _ = directions(1, seed=9, dtype=torch.float32)
    s32 = AttentionState(state.M.float(), state.z.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        o, s = aleph_decode_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], axes.float(), TAU, s32)
    assert s.M.dtype == torch.float32 and o.dtype == torch.float32
    o_ref, s_ref = reference(q[:, :, 0], k[:, :, 0], v[:, :, 0], axes.float(), s32)
    torch.testing.assert_close(s.M, s_ref.M, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(o, o_ref, rtol=1e-5, atol=1e-5)
