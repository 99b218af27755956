"""AlephLM on the tiny preset: sizes, causality, decode, output normalisation, heads, losses.

Spec §3 (backbone, streaming), §5 (gate × bank + tail), §6 (heads), §7 (losses); tests T5, T9–T12,
T14, T19.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from geolip.aleph.bank import TrigramBank
from geolip.aleph.bpb import bpb_batches, bpb_windowed
from geolip.aleph.config import TrainConfig
from geolip.aleph.losses import diversity_loss
from geolip.aleph.model import AlephLM
from geolip.aleph.output import (
    mixture_nll,
    switch_log_outside,
    tail_bank_mass,
    tail_log_prob,
)
from geolip.aleph.presets import calib23m, small
from geolip.aleph.train import build_optimizer, build_scheduler, train_step
from geolip.aleph.train.step import split_segments
from geolip.geometry.address import oriented_address

LN2 = math.log(2.0)
HEADS = ("byte", "kernel", "pmix", "pmix8", "apmix", "apmix_free")


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


# -- sizes ----------------------------------------------------------------------------------------
def test_small_byte_head_param_count():
    model = AlephLM(small().model)
    assert sum(p.numel() for p in model.parameters()) == 6_677_248


def test_state_floats():
    assert calib23m().model.state_floats == 532_480
    assert small().model.state_floats == 199_680


def test_tiny_decode_state_size_matches_config(make_model, random_ids):
    model = make_model("byte")
    cfg = model.cfg
    with torch.no_grad():
        _, state = model.step(random_ids(1, 1, 0)[:, 0], 0, None)
        _, full_state, _ = model.backbone(random_ids(1, 5, 1))
    assert len(state) == cfg.n_layers
    assert sum(s.M.numel() + s.z.numel() for s in state) == cfg.state_floats
    assert sum(s.M.numel() + s.z.numel() for s in full_state) == cfg.state_floats


# -- causality and decode -------------------------------------------------------------------------
def _trace(model, ids, targets):
    """h, every block's output, every layer's key addresses and the NLL for one input."""
    blocks: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda m, i, o: blocks.append(o[0])) for b in model.blocks]
    try:
        h, _, keys = model.backbone(ids)
        nll, _ = model.trigram_nll(h, targets)
    finally:
        for hk in hooks:
            hk.remove()
    return h, blocks, keys, nll


@pytest.mark.parametrize("head", ["byte", "pmix"])
@pytest.mark.parametrize("t_star", [5, 17, 31])
def test_T5_causality_model(make_model, random_ids, head, t_star):
    model = make_model(head, seed=t_star).eval()
    ids, targets = random_ids(2, 32, seed=t_star), random_ids(2, 32, seed=100 + t_star)
    bumped = ids.clone()
    bumped[:, t_star] = (ids[:, t_star] + 1 + random_ids(2, 1, seed=7)[:, 0] % 255) % 256
    with torch.no_grad():
        a, b = _trace(model, ids, targets), _trace(model, bumped, targets)
    h0, blocks0, keys0, nll0 = a
    h1, blocks1, keys1, nll1 = b
    assert _max_diff(h0[:, :t_star], h1[:, :t_star]) <= 1e-6
    assert _max_diff(nll0[:, :t_star], nll1[:, :t_star]) <= 1e-6
    for layer, (x0, x1) in enumerate(zip(blocks0, blocks1)):
        assert _max_diff(x0[:, :t_star], x1[:, :t_star]) <= 1e-6, f"layer {layer}"
    for layer, (g0, g1) in enumerate(zip(keys0, keys1)):
        assert _max_diff(g0[:, :, :t_star], g1[:, :, :t_star]) <= 1e-6, f"keys of layer {layer}"
    # The perturbation is real: position t* itself moves.
    assert _max_diff(h0[:, t_star], h1[:, t_star]) > 1e-3


@pytest.mark.parametrize("impl", ["chunk", "chunk_loop"])
def test_full_pass_equals_prefill_and_decode(make_model, random_ids, impl):
    model = make_model("byte", seed=1, attn_impl=impl).eval()
    ids = random_ids(2, 32, seed=3)
    with torch.no_grad():
        h_full, st_full, _ = model.backbone(ids)
        state, hs = None, []
        for t in range(32):
            h_t, state = model.step(ids[:, t], t, state)
            hs.append(h_t)
        assert _max_diff(torch.stack(hs, 1), h_full) <= 1e-5
        for s_dec, s_full in zip(state, st_full):
            assert torch.allclose(s_dec.M, s_full.M, rtol=1e-5, atol=1e-5)
            assert torch.allclose(s_dec.z, s_full.z, rtol=1e-5, atol=1e-5)
        # Prefill 11 (not a chunk edge), then decode; and prefill, then a second prefill at pos0.
        h_pre, state, _ = model.backbone(ids[:, :11])
        assert _max_diff(h_pre, h_full[:, :11]) <= 1e-5
        state2 = state
        hs = []
        for t in range(11, 32):
            h_t, state = model.step(ids[:, t], t, state)
            hs.append(h_t)
        assert _max_diff(torch.stack(hs, 1), h_full[:, 11:]) <= 1e-5
        h_rest, _, _ = model.backbone(ids[:, 11:], state2, pos0=11)
        assert _max_diff(h_rest, h_full[:, 11:]) <= 1e-5


@pytest.mark.parametrize("head", ["byte", "pmix"])
def test_in_place_decode_equals_the_copying_decode(make_model, random_ids, head):
    """Generation's in-place step (the loop owns the state) gives the copying step's outputs
    and final state, from a prefill's state as from none."""
    model = make_model(head, seed=4).eval()
    ids = random_ids(2, 24, seed=5)
    with torch.no_grad():
        for t0 in (0, 9):
            runs = []
            for inplace in (False, True):
                state = model.backbone(ids[:, :t0])[1] if t0 else None
                hs = []
                for t in range(t0, 24):
                    h_t, state = model.step(ids[:, t], t, state, inplace=inplace)
                    hs.append(h_t)
                runs.append((torch.stack(hs, 1), state))
            (h0, s0), (h1, s1) = runs
            assert _max_diff(h0, h1) <= 1e-6
            for a, b in zip(s0, s1):
                assert torch.allclose(a.M, b.M, atol=1e-6) and torch.allclose(a.z, b.z, atol=1e-6)


def test_streamed_segments_match_decode_and_train_step(make_model, text_windows):
    model = make_model("pmix", seed=2, n_segments=2)
    T = model.cfg.seq_trigrams
    window = text_windows(2, 2 * T, start=999)
    pairs = list(split_segments(window, T, 2))
    assert len(pairs) == 2
    for s, (ids, tgt) in enumerate(pairs):
        assert torch.equal(ids, window[:, s * T : (s + 1) * T])
        assert torch.equal(tgt, window[:, s * T + 1 : (s + 1) * T + 1])
    with torch.no_grad():
        state, nlls = None, []
        for ids, tgt in pairs:
            out = model(ids, tgt, state)
            nlls.append(out.nll)
            state = out.state
        streamed = torch.cat(nlls, 1)
        # Independent path: token-by-token decode, positions restarting every T trigrams.
        st, hs = None, []
        for t in range(2 * T):
            h_t, st = model.step(window[:, t], t % T, st)
            hs.append(h_t)
        decoded, _ = model.trigram_nll(torch.stack(hs, 1), window[:, 1:])
        assert _max_diff(streamed, decoded) <= 1e-4
        # The carried state matters: segment 2 from a fresh state is different.
        fresh = model(*pairs[1]).nll
        assert _max_diff(fresh, nlls[1]) > 1e-3
    train_cfg = TrainConfig(steps=10, batch_size=2, lr=1e-3, amp="off")
    opt = build_optimizer(model, train_cfg)
    metrics = train_step(model, opt, build_scheduler(opt, train_cfg), [window], train_cfg)
    expected = float(torch.stack([n.mean() for n in nlls]).mean())
    assert metrics["loss_main"] == pytest.approx(expected, rel=1e-5)


# -- output normalisation -------------------------------------------------------------------------
def test_T9_byte_head_normalised(make_model, random_ids):
    model = make_model("byte", seed=4)
    ids, tgt = random_ids(2, 8, seed=1), random_ids(2, 8, seed=2)
    with torch.no_grad():
        h, _, _ = model.backbone(ids)
        logp = model.tail(h)  # [2, 8, 3, 256]
        nll = model(ids, tgt).nll
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2, 8, 3), atol=1e-6)
    ref = -logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1).sum(-1)
    assert _max_diff(nll, ref) <= 1e-5
    # Exact enumeration of all 256³ trigram probabilities at one position (fp64, in blocks).
    p = logp[1, 5].double().exp()
    p12 = (p[0][:, None] * p[1][None, :]).flatten()  # [65536]
    total = sum(
        float((p12[i : i + 8192, None] * p[2][None, :]).sum()) for i in range(0, 65536, 8192)
    )
    assert abs(total - 1.0) <= 1e-6  # the tail's log-softmax is fp32


def _toy_tail_and_bank(V: int, n_bank: int, seed: int, dtype=torch.float64):
    """Tail log-probs [3, 256] with all mass on bytes 0..V−1; a bank of n_bank trigrams of V³."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.full((3, 256), -math.inf, dtype=dtype)
    logits[:, :V] = 2 * torch.randn(3, V, generator=g, dtype=dtype)
    tail_logp = torch.log_softmax(logits, -1)
    alphabet = torch.tensor(list(itertools.product(range(V), repeat=3)))  # [V³, 3]
    rows = alphabet[torch.randperm(len(alphabet), generator=g)[:n_bank]]
    bank = TrigramBank(rows, torch.zeros(n_bank), {})
    log_q = torch.log_softmax(torch.randn(n_bank, generator=g, dtype=dtype), -1)
    gamma = torch.randn((), generator=g, dtype=dtype)
    return tail_logp, alphabet, bank, log_q, gamma


@pytest.mark.parametrize("mixture", ["blend", "switch"])
def test_T10_mixture_normalises_on_toy_alphabet(mixture):
    V = 6
    tail_logp, xs, bank, log_q, gamma = _toy_tail_and_bank(V, n_bank=40, seed=5)
    n = len(xs)
    j = bank.lookup(xs)
    in_bank = j >= 0
    assert 0 < int(in_bank.sum()) < n
    log_q_x = log_q[j.clamp_min(0)]
    log_tail = tail_log_prob(tail_logp.expand(n, 3, 256), xs)
    p_tail = log_tail.exp()
    mass = tail_bank_mass(tail_logp, bank.trigrams, tile=7)
    assert float(mass) == pytest.approx(float(p_tail[in_bank].sum()), abs=1e-12)
    outside = switch_log_outside(tail_logp, bank.trigrams, tile=7).expand(n)
    nll = mixture_nll(mixture, gamma.expand(n), log_q_x, in_bank, log_tail, outside)
    p = torch.exp(-nll)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-12)
    g = torch.sigmoid(gamma)
    if mixture == "blend":
        ref = torch.where(in_bank, g * log_q_x.exp(), 0.0) + (1 - g) * p_tail
    else:
        ref = torch.where(in_bank, g * log_q_x.exp(), (1 - g) * p_tail / (1 - mass))
        # NLL = gate BCE + (in-bank CE | out-of-bank tail CE), exactly.
        bce = F.binary_cross_entropy_with_logits(
            gamma.expand(n), in_bank.double(), reduction="none"
        )
        ce = torch.where(in_bank, -log_q_x, -(log_tail - torch.log1p(-mass)))
        assert torch.allclose(nll, bce + ce, rtol=0, atol=1e-12)
    assert torch.allclose(p, ref, rtol=1e-12, atol=1e-15)


def _restrict_tail_to_alphabet(model: AlephLM, V: int) -> None:
    """Give bytes ≥ V zero tail probability by editing the tail (exp(−1e4) underflows to 0)."""
    with torch.no_grad():
        for proj in model.tail.proj:
            proj.weight[V:] = 0.0
            proj.bias[V:] = -1e4
        model.gate.bias.fill_(0.4)


@pytest.mark.parametrize("head", ["kernel", "pmix", "apmix", "apmix_free"])
@pytest.mark.parametrize("mixture", ["blend", "switch"])
def test_T10_model_distribution_sums_to_one(make_model, head, mixture):
    V = 6
    _, xs, bank, _, _ = _toy_tail_and_bank(V, n_bank=40, seed=6)
    g = torch.Generator().manual_seed(8)
    bank = TrigramBank(bank.trigrams, torch.randn(40, generator=g), {})
    model = make_model(head, seed=9, with_bank=bank, head__mixture=mixture, head__bank_tile=7)
    _restrict_tail_to_alphabet(model, V)
    h = torch.randn(1, 1, model.cfg.d_model, generator=g).expand(1, len(xs), -1).contiguous()
    with torch.no_grad():
        nll, diag = model.trigram_nll(h, xs.unsqueeze(0))
    assert torch.isfinite(nll).all()
    assert float(torch.exp(-nll.double()).sum()) == pytest.approx(1.0, abs=2e-5)
    assert float(diag["coverage"]) == pytest.approx(40 / len(xs))


@pytest.mark.parametrize("head", ["kernel", "pmix", "apmix", "apmix_free"])
def test_bank_heads_normalised_and_tiles_consistent(make_model, bank, head):
    model = make_model(head, seed=10, head__bank_tile=37)
    ctx = model.bank_context()
    g = torch.Generator().manual_seed(10)
    h = torch.randn(3, 5, model.cfg.d_model, generator=g)
    j = torch.randint(0, bank.size, (3, 5), generator=g)
    with torch.no_grad():
        full = model.head.all_log_q(h.reshape(15, -1), ctx)  # [15, N]
        picked = model.head.target_log_q(h, j, ctx)
    row_sums = full.double().exp().sum(-1)
    assert float((row_sums - 1).abs().max()) <= 1e-5
    assert _max_diff(picked.reshape(-1), full.gather(1, j.reshape(15, 1))[:, 0]) <= 1e-5


# -- heads ----------------------------------------------------------------------------------------
def test_T11_kernel_head(make_model, bank):
    model = make_model("kernel", seed=11, K=4)
    ctx = model.bank_context()
    two_k, n = 8, bank.size
    assert n > two_k
    h = torch.randn(40, model.cfg.d_model, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        log_q = model.head.all_log_q(h, ctx).double()
        q = log_q.exp()
        assert torch.allclose(q.sum(-1), torch.ones(40, dtype=torch.float64), atol=1e-6)
        sv = torch.linalg.svdvals(q)
        # Rank ≤ 2K: everything past the 2K-th singular value is fp32 round-off.
        assert float(sv[two_k] / sv[0]) < 1e-5
        assert float(sv[two_k - 1] / sv[0]) > 1e-4  # and the bound is actually reached
        log_pi, log_kappa = model.head.log_pi(h, ctx), model.head.log_kappa(ctx)
        assert log_pi.shape == (40, two_k) and log_kappa.shape == (two_k, n)
        direct = torch.log(log_pi.double().exp() @ log_kappa.double().exp())
        assert _max_diff(direct, log_q) <= 1e-6
        # A pmix head on the same bank escapes the bound (the check above can fail).
        pm = make_model("pmix", seed=11, K=4)
        sv_p = torch.linalg.svdvals(pm.head.all_log_q(h, pm.bank_context()).double().exp())
        assert float(sv_p[two_k] / sv_p[0]) > 1e-2


@pytest.mark.parametrize("mode", ["apmix", "apmix_free"])
def test_T12_apmix(make_model, mode):
    model = make_model(mode, seed=12)
    ctx = model.bank_context()
    head = model.head
    h = torch.randn(6, model.cfg.d_model, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        r = head.pointers(h, ctx).double()  # [6, J, 2K]
        e = head.candidates(ctx).double()  # [N, 2K]
        q_dir = head.P_a(h).unflatten(-1, (head.J, head.D))
    two_k = 2 * model.cfg.K
    assert r.shape == (6, model.cfg.head.n_pointers, two_k) and e.shape[-1] == two_k
    assert torch.allclose(r.norm(dim=-1), torch.ones(r.shape[:-1], dtype=r.dtype), atol=1e-6)
    assert torch.allclose(e.norm(dim=-1), torch.ones(e.shape[0], dtype=e.dtype), atol=1e-6)
    # Pointers are √ of the oriented address of P^a h on the shared codebook.
    phi = oriented_address(q_dir, ctx.axes, model.cfg.tau).double()
    assert torch.allclose(r**2, phi, atol=1e-6)
    bc = torch.einsum("mjk,nk->mjn", r, e)
    assert float(bc.min()) >= -1e-7 and float(bc.max()) <= 1 + 1e-6
    self_bc = torch.diagonal(e @ e.T)
    assert float((self_bc - 1).abs().max()) <= 1e-6
    hell2 = 0.5 * ((r.unsqueeze(2) - e.view(1, 1, *e.shape)) ** 2).sum(-1)
    assert torch.allclose(1 - bc, hell2, atol=1e-6)


# -- metrics --------------------------------------------------------------------------------------
def test_T14_uniform_model_bpb_is_8(make_model, english, text_windows):
    model = make_model("byte", seed=14)
    with torch.no_grad():
        for proj in model.tail.proj:
            proj.weight.zero_()
            proj.bias.zero_()
    batches = [text_windows(2, 32, start=0), text_windows(3, 32, start=5000)]
    fixed = bpb_batches(model, batches)
    assert fixed.bpb == pytest.approx(8.0, abs=1e-5)
    assert fixed.bytes_scored == 3 * 32 * 5
    windowed = bpb_windowed(model, english[:1001])
    assert windowed.bpb == pytest.approx(8.0, abs=1e-5)
    assert windowed.nll_nats == pytest.approx(3 * math.log(256), abs=1e-5)


def test_T14_byte_loss_per_byte_equals_trigram_form(make_model, text_windows):
    model = make_model("byte", seed=15)
    w = text_windows(2, 32, start=300)
    with torch.no_grad():
        out = model(w[:, :-1], w[:, 1:])
        h, _, _ = model.backbone(w[:, :-1])
        logits = torch.stack([p(h) for p in model.tail.proj], dim=-2)  # [B, T, 3, 256]
    per_byte = F.cross_entropy(logits.reshape(-1, 256), w[:, 1:].reshape(-1))
    assert float(per_byte) / LN2 == pytest.approx(float(out.nll.mean()) / (3 * LN2), rel=1e-5)


# -- losses ---------------------------------------------------------------------------------------
def test_T19_diversity_loss():
    two_k = 16
    uniform = torch.full((2, 3, 5, two_k), 1.0 / two_k)
    assert float(diversity_loss(uniform)) == pytest.approx(0.0, abs=1e-6)
    one_hot = torch.zeros(2, 3, 5, two_k)
    one_hot[..., 3] = 1.0
    assert float(diversity_loss(one_hot)) == pytest.approx(math.log(two_k), abs=1e-6)
    logits = torch.randn(2, 3, 5, two_k, generator=torch.Generator().manual_seed(19))
    logits.requires_grad_(True)
    keys = torch.softmax(logits, -1)
    loss = diversity_loss(keys)
    u = keys.detach().double().mean((0, 1, 2))
    assert float(loss.detach()) == pytest.approx(
        math.log(two_k) + float((u * u.log()).sum()), abs=1e-6
    )
    loss.backward()
    assert torch.isfinite(logits.grad).all() and float(logits.grad.abs().sum()) > 0


def _codebook_grads(model, ids, tgt):
    """(grad of the total loss, grad of the main loss) w.r.t. the shared codebook."""
    A = model.codebooks[0].A_raw
    out = model(ids, tgt)
    g_total = torch.autograd.grad(out.loss, A, retain_graph=True)[0]
    g_main = torch.autograd.grad(out.nll.mean(), A)[0]
    return out, g_total, g_main


@pytest.mark.parametrize("main_head", ["pmix", "byte"])
def test_kernel_aux_reaches_codebook(make_model, text_windows, main_head):
    w = text_windows(2, 16, start=2000)
    ids, tgt = w[:, :-1], w[:, 1:]
    model = make_model(main_head, seed=20, kernel_aux_weight=0.3)
    out, g_total, g_main = _codebook_grads(model, ids, tgt)
    assert torch.isfinite(out.metrics["loss_kaux"]) and float(out.metrics["loss_kaux"]) > 0
    expected = out.metrics["loss_main"] + 0.3 * out.metrics["loss_kaux"]
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    assert float(g_main.abs().sum()) > 0  # routing alone reaches the codebook
    assert torch.isfinite(g_total).all()
    assert float((g_total - g_main).abs().max()) > 1e-6 * float(g_main.abs().max())
    # Without the aux the total codebook gradient is the routing gradient.
    plain = make_model(main_head, seed=20)
    _, g_total0, g_main0 = _codebook_grads(plain, ids, tgt)
    assert torch.equal(g_total0, g_main0)


def test_diversity_arm_adds_weighted_loss(make_model, text_windows):
    w = text_windows(2, 16, start=2500)
    model = make_model("byte", seed=25, codebook__preservation="div", codebook__div_weight=0.05)
    out, g_total, g_main = _codebook_grads(model, w[:, :-1], w[:, 1:])
    with torch.no_grad():
        _, _, keys = model.backbone(w[:, :-1])
    div = sum(float(diversity_loss(g)) for g in keys)
    assert float(out.metrics["loss_div"]) == pytest.approx(div, rel=1e-5)
    expected = float(out.metrics["loss_main"]) + 0.05 * div
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-6)
    assert float((g_total - g_main).abs().max()) > 0


def test_write_aux_reaches_codebook(make_model, text_windows):
    w = text_windows(2, 16, start=3000)
    model = make_model("byte", seed=21, write_aux_weight=0.1)
    with torch.no_grad():  # readouts start at 0 (no codebook gradient yet); move them off zero
        model.write_readouts.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(21))
    out, g_total, g_main = _codebook_grads(model, w[:, :-1], w[:, 1:])
    assert torch.isfinite(out.metrics["loss_write"])
    expected = out.metrics["loss_main"] + 0.1 * out.metrics["loss_write"]
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    assert torch.isfinite(g_total).all()
    assert float((g_total - g_main).abs().max()) > 1e-6 * float(g_main.abs().max())
    out = model(w[:, :-1], w[:, 1:])
    out.loss.backward()
    assert float(model.write_readouts.grad.abs().sum()) > 0


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("mixture", ["blend", "switch"])
def test_every_head_forward_backward(make_model, text_windows, head, mixture):
    model = make_model(head, seed=22, head__mixture=mixture)
    w = text_windows(2, 16, start=4000)
    out = model(w[:, :-1], w[:, 1:])
    assert out.nll.shape == (2, 16) and torch.isfinite(out.nll).all()
    assert torch.isfinite(out.loss)
    if head != "byte":
        assert 0 < float(out.metrics["coverage"]) < 1  # both mixture branches are exercised
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient ({head}, {mixture})"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    assert float(model.codebooks[0].A_raw.grad.abs().sum()) > 0


@pytest.mark.parametrize("head", ["byte", "pmix"])
def test_overfit_one_batch(make_model, text_windows, head):
    model = make_model(head, seed=23)
    w = text_windows(4, 32, start=0)
    ids, tgt = w[:, :-1], w[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(100):
        opt.zero_grad(set_to_none=True)
        out = model(ids, tgt)
        out.loss.backward()
        opt.step()
        first = float(out.nll.detach().mean()) if first is None else first
    with torch.no_grad():
        final = float(model(ids, tgt).nll.mean())
    # Measured: ~8.3 → 0.03 bpb (byte), ~3.3 → 0.02 (pmix) after 100 steps.
    assert final / (3 * LN2) < 0.5, f"did not overfit: {first / (3 * LN2):.3f} → {final:.3f}"
    assert final < 0.2 * first


# -- AMP ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", ["apmix", "kernel"])
def test_bf16_autocast_forward_finite_address_fp32(make_model, text_windows, head):
    model = make_model(head, seed=24)
    w = text_windows(2, 16, start=6000)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(w[:, :-1], w[:, 1:])
        h, _, keys = model.backbone(w[:, :-1])
        f, g, v = model.blocks[0].hub.addresses(model.blocks[0].ln1(h), model.hub_axes(0))
    assert torch.isfinite(out.loss) and torch.isfinite(out.nll).all()
    assert out.nll.dtype == torch.float32
    assert v.dtype == torch.bfloat16  # autocast is on inside the model
    for t in (*keys, f, g):
        assert t.dtype == torch.float32
    with torch.no_grad():
        ref = model(w[:, :-1], w[:, 1:]).nll
    assert _max_diff(out.nll, ref) < 0.5  # bf16 is close to fp32, not garbage
