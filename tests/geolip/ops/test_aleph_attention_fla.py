"""``impl="fla"``: the parity gate in front of flash-linear-attention's kernel, and the fallback
to the chunk scan where the kernel cannot run (here: no CUDA). The kernel itself is checked by
the ``gpu``-marked test at the end (``make gpu-check``)."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from geolip.aleph.model import AlephLM
from geolip.aleph.presets import tiny, with_head
from geolip.geometry.address import oriented_address
from geolip.geometry.sphere import rownorm
from geolip.ops.aleph_attention import (
    aleph_attention,
    aleph_attention_chunk,
    aleph_attention_cumsum,
    fla_status,
)
from geolip.ops.aleph_attention.fla import parity_failure


def make_inputs(T, seed=0, dtype=torch.float64):
    """Addresses of random directions through a random codebook (K=8, D=4, τ=0.1) and values:
    f, g: [2, 2, T, 16]; v: [2, 2, T, 8]."""
    gen = torch.Generator().manual_seed(seed)
    axes = rownorm(torch.randn(8, 4, generator=gen, dtype=torch.float64))
    q, k = (torch.randn(2, 2, T, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 2, T, 8, generator=gen, dtype=torch.float64)
    f, g = oriented_address(q, axes, 0.1), oriented_address(k, axes, 0.1)
    return f.to(dtype), g.to(dtype), v.to(dtype)


def make_state(dtype=torch.float64):
    """The state a 5-token prefix wrote."""
    return aleph_attention_cumsum(*make_inputs(5, seed=1, dtype=dtype))[1]


def test_on_a_cpu_fla_is_the_chunk_scan_and_says_why():
    f, g, v = make_inputs(37, dtype=torch.float32)
    state = make_state(dtype=torch.float32)
    with warnings.catch_warnings():  # warned once per process and device
        warnings.simplefilter("ignore")
        o, st = aleph_attention(f, g, v, state, impl="fla", chunk=16)
    o_ref, st_ref = aleph_attention_chunk(f, g, v, state, chunk=16)
    assert torch.equal(o, o_ref) and torch.equal(st.M, st_ref.M) and torch.equal(st.z, st_ref.z)
    assert "need CUDA" in fla_status(torch.device("cpu"))


def test_the_gate_passes_an_exact_implementation():
    def chunk(f, g, v, state):
        return aleph_attention_chunk(f, g, v, state, chunk=16)

    assert parity_failure(chunk, torch.device("cpu")) == ""


@pytest.mark.parametrize(
    ("broken", "needle"),
    [
        ("scaled", "o off by"),
        ("nan", "o off by nan"),
        ("no_state_grad", "grad M0 off by"),
        ("stale_state", "final M off by"),
    ],
)
def test_the_gate_names_what_a_wrong_kernel_got_wrong(broken, needle):
    def candidate(f, g, v, state):
        o, st = aleph_attention_cumsum(f, g, v, state)
        if broken == "scaled":
            return o * 1.01, st
        if broken == "nan":
            return o * float("nan"), st
        if broken == "no_state_grad":  # the carried state treated as a constant
            o2, st2 = aleph_attention_cumsum(f, g, v, type(state)(*(x.detach() for x in state)))
            return o2, st2
        return o, type(st)(st.M - state.M, st.z)  # forgets the initial M in the final state

    why = parity_failure(candidate, torch.device("cpu"))
    assert why.startswith("parity check failed: ") and needle in why, why


def test_a_model_with_attn_impl_fla_runs_on_cpu():
    """The config accepts it; on a CPU the model computes what the chunk model computes."""
    run = with_head(tiny(), "byte")
    outs = []
    for impl in ("fla", "chunk"):
        torch.manual_seed(3)
        model = AlephLM(dataclasses.replace(run.model, attn_impl=impl)).eval()
        ids = torch.randint(0, 256, (2, 32, 3), generator=torch.Generator().manual_seed(1))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outs.append(model.backbone(ids)[0])
    assert torch.equal(*outs)


@pytest.mark.gpu
def test_the_fla_kernel_passes_its_gate_and_matches_the_oracle_on_cuda():
    """On a CUDA device with fla-core installed: the gate passes, and realistic addresses give
    the oracle's outputs and final state (fp64 oracle, fp32 kernel)."""
    dev = torch.device("cuda")
    assert fla_status(dev) == "", fla_status(dev)
    f, g, v = make_inputs(300, dtype=torch.float64)
    state = make_state(dtype=torch.float64)
    o_ref, st_ref = aleph_attention_cumsum(f, g, v, state)
    cuda = [x.float().to(dev) for x in (f, g, v)]
    o, st = aleph_attention(*cuda, type(state)(*(x.float().to(dev) for x in state)), impl="fla")
    torch.testing.assert_close(o.double().cpu(), o_ref, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(st.M.double().cpu(), st_ref.M, rtol=2e-3, atol=2e-3)
