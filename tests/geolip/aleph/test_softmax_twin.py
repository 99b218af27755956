"""The softmax twin (``model.attn=softmax``): causal SDPA hubs at the same widths, against a
naive softmax oracle (values and gradients), with its KV cache exact under prefill + decode,
causal, and every head on top trainable as in AlephLM."""

from __future__ import annotations

import math

import pytest
import torch
from aleph_configs import tiny_cfg

from geolip.aleph.instruments import read_gauge
from geolip.aleph.model import AlephLM
from geolip.aleph.softmax_hub import SoftmaxAttention
from geolip.config import ConfigError


def _oracle(att: SoftmaxAttention, x: torch.Tensor) -> torch.Tensor:
    """softmax(QKᵀ/√d_h + causal −∞) V by explicit matmuls. x: [B, T, d] -> [B, T, d]."""
    B, T, d = x.shape
    H, dh = att.n_heads, att.head_dim
    q, k, v = (
        (x @ w.weight.T).view(B, T, H, dh).transpose(1, 2) for w in (att.W_q, att.W_k, att.W_v)
    )
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -math.inf)
    o = torch.softmax(scores, dim=-1) @ v
    return att.W_o(o.transpose(1, 2).reshape(B, T, d))


def test_softmax_hub_matches_the_oracle_in_values_and_gradients():
    torch.manual_seed(0)
    att = SoftmaxAttention(16, 4).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64, requires_grad=True)
    y, state, g = att(x)
    ref = _oracle(att, x)
    assert g is None and state.k.shape == (2, 4, 9, 4)
    assert torch.allclose(y, ref, atol=1e-12)
    grads = torch.autograd.grad(y.square().sum(), [x, att.W_q.weight, att.W_k.weight])
    ref_grads = torch.autograd.grad(ref.square().sum(), [x, att.W_q.weight, att.W_k.weight])
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-10)


def test_the_twin_decodes_and_prefills_exactly_like_its_full_pass(random_ids):
    torch.manual_seed(1)
    model = AlephLM(tiny_cfg("byte", attn="softmax")).eval()
    ids = random_ids(2, 20, seed=3)
    with torch.no_grad():
        h_full, _, _ = model.backbone(ids)
        state, hs = None, []
        for t in range(20):
            h_t, state = model.step(ids[:, t], t, state)
            hs.append(h_t)
        assert (torch.stack(hs, 1) - h_full).abs().max() <= 1e-5
        assert state[0].k.shape[2] == 20  # the cache grows with the context
        h_pre, st, _ = model.backbone(ids[:, :7])
        h_rest, _, _ = model.backbone(ids[:, 7:], st, pos0=7)  # a second prefill on the cache
        assert (torch.cat([h_pre, h_rest], 1) - h_full).abs().max() <= 1e-5


def test_the_twin_is_causal(random_ids):
    torch.manual_seed(2)
    model = AlephLM(tiny_cfg("byte", attn="softmax")).eval()
    ids = random_ids(1, 16, seed=4)
    other = ids.clone()
    other[:, 10:] = (other[:, 10:] + 1) % 256
    with torch.no_grad():
        a, _, _ = model.backbone(ids)
        b, _, _ = model.backbone(other)
    assert torch.equal(a[:, :10], b[:, :10]) and not torch.equal(a[:, 10:], b[:, 10:])


@pytest.mark.parametrize("head", ["byte", "kernel", "pmix", "apmix"])
def test_every_head_trains_on_the_twin(head, bank, text_windows):
    torch.manual_seed(3)
    model = AlephLM(tiny_cfg(head, attn="softmax"), bank)
    twin = AlephLM(tiny_cfg(head), bank)
    sizes = [sum(p.numel() for p in m.parameters()) for m in (model, twin)]
    # Same widths, heads, MLP and heads on top; only the hub's q/k projections differ (d vs H·D).
    assert abs(sizes[0] - sizes[1]) <= 2 * model.cfg.n_layers * model.cfg.d_model**2
    reads = head in ("kernel", "apmix")  # the only consumers of the codebook in the twin
    assert model.codebooks[0].trainable == reads
    w = text_windows(4, 16)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(30):
        opt.zero_grad(set_to_none=True)
        out = model(w[:, :-1], w[:, 1:])
        out.loss.backward()
        opt.step()
        first = float(out.loss.detach()) if first is None else first
    assert float(out.loss.detach()) < 0.7 * first
    # The statute gauge reads the head's codebook; the twin has no routing rows to add.
    assert read_gauge(model, w[:2]).as_metrics() == read_gauge(model).as_metrics()
    grad = model.codebooks[0].A_raw.grad if reads else None
    assert (grad is not None and grad.abs().sum() > 0) if reads else grad is None


def test_the_twin_keeps_one_codebook_for_its_head(bank):
    """Per-layer codebooks belong to aleph hubs: the twin has one, read by its head (an
    unread trainable codebook would also stall DDP, which expects every parameter's grad)."""
    model = AlephLM(tiny_cfg("kernel", attn="softmax", codebook__sharing="layer"), bank)
    assert len(model.codebooks) == 1 and model.head_codebook() is model.codebooks[0]


def test_the_twin_refuses_what_reads_key_addresses():
    with pytest.raises(ConfigError, match="model.attn=softmax has no key addresses"):
        tiny_cfg("byte", attn="softmax", codebook__preservation="div")
    with pytest.raises(ConfigError, match="model.attn=softmax has no key addresses"):
        tiny_cfg("byte", attn="softmax", write_aux_weight=0.1)
    with pytest.raises(ConfigError, match="attn"):
        tiny_cfg("byte", attn="linear")
