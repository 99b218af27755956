"""Grafting (spec §13): warm-start a changed architecture from a trained donor.

A *graft* builds a new model whose config differs from the donor's in one structural field and
fills it from the donor's weights so that it starts where the donor is (or, for the head retrofit,
keeps everything but the new head). Depth grafts interpolate per-layer tensors between neighbouring
donor layers; mixture grafts tile the pointers and split each mixture weight evenly among copies
(exactly the donor's q at zero jitter); the head retrofit keeps the backbone, gate and tail of a
pmix donor and draws a fresh apmix head; a bank swap changes data only. Every graft returns a new
model with a new config (``dataclasses.replace``) and never mutates the donor.
"""

from __future__ import annotations

import copy

import torch

from geolip.aleph.bank import TrigramBank
from geolip.aleph.config import AlephConfig
from geolip.aleph.model import AlephLM
from geolip.config import apply_changes, get_at, replace_at

# Fields that fix a parameter's shape (or existence): a graft may change only the one it is about.
SHAPE_FIELDS = ("d_model", "n_layers", "n_heads", "seq_trigrams", "mlp_mult", "K", "D")
SHAPE_FIELDS += ("codebook.sharing", "head.kind", "head.n_pointers", "head.d_cand")
SHAPE_FIELDS += ("head.pmix.d_pointer", "head.apmix.mode")


class GraftError(ValueError):
    """The donor cannot be grafted into the requested shape; the message says why."""


def _check_donor(donor: AlephLM, target: AlephConfig, changed: tuple[str, ...], what: str) -> None:
    if donor.head_codebook_override is not None:
        raise GraftError(f"{what}: the donor carries an ablation override; graft the base model")
    src = donor.cfg
    for name in SHAPE_FIELDS:
        a, b = get_at(src, name), get_at(target, name)
        if name not in changed and a != b:
            raise GraftError(
                f"{what}: model.{name} differs (donor {a!r}, target {b!r}); "
                f"this graft changes only {list(changed)}"
            )
    for name in ("kernel_aux_weight", "write_aux_weight"):
        if (getattr(src, name) > 0) != (getattr(target, name) > 0):
            raise GraftError(f"{what}: model.{name} turns a side head on/off; not graftable")


def _fresh(donor: AlephLM, cfg: AlephConfig, seed: int) -> AlephLM:
    """A newly initialised model for ``cfg`` on the donor's device/dtype, with the donor's bank.

    Seeded locally so a graft is reproducible without touching the caller's global RNG.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AlephLM(cfg)
    ref = next(donor.parameters())
    model = model.to(device=ref.device, dtype=ref.dtype)
    if donor.bank is not None:
        model.set_bank(donor.bank)
    return model.train(donor.training)


def _target(donor: AlephLM, cfg: AlephConfig | None, changes: dict) -> AlephConfig:
    """``cfg`` (default: the donor's) with ``changes`` at dotted paths."""
    return apply_changes(cfg or donor.cfg, changes)


def _layer_source(lp: int, L: int, Lp: int) -> tuple[int, int, float, int]:
    """``s = ℓ'(L−1)/(L'−1)`` in exact integer arithmetic -> (a = ⌊s⌋, b = ⌈s⌉, f = s − a,
    round(s) with halves rounded up)."""
    num, den = lp * (L - 1), Lp - 1
    a, rem = divmod(num, den)
    return a, a + (rem > 0), rem / den, a + (2 * rem >= den)


def _lerp(wa: torch.Tensor, wb: torch.Tensor, f: float) -> torch.Tensor:
    # At f = 0 copy instead of computing 1·W_a + 0·W_b, so L' = L is a bitwise identity.
    return wa.clone() if f == 0 else (1 - f) * wa + f * wb


def graft_depth(donor: AlephLM, new_layers: int, cfg: AlephConfig | None = None) -> AlephLM:
    """Depth L → L' by layer interpolation (§13.1).

    New layer ℓ' reads ``s = ℓ'(L−1)/(L'−1)``; every per-layer tensor (LNs, W_q, W_k, W_v, W_o,
    MLP) is ``(1−f)W_a + f W_b``. Shared codebook, embeddings, positions, LN_f, gate, tail and heads
    are copied. Unshared per-layer codebooks (and the write-head readouts indexed by their axes)
    are copied from layer round(s), never averaged: rows are not aligned across layers.
    ``cfg`` (optional) is the base of the new config, e.g. another preservation arm.
    """
    if new_layers < 2:
        raise GraftError(
            f"graft_depth: new_layers must be >= 2 (s divides by L'−1), got {new_layers}"
        )
    target = _target(donor, cfg, {"n_layers": new_layers})
    _check_donor(donor, target, ("n_layers",), "graft_depth")
    L, Lp = donor.cfg.n_layers, new_layers
    src, model = donor.state_dict(), _fresh(donor, target, 0)
    per_layer_books = target.codebook.sharing == "layer"
    out = {}
    for key in model.state_dict():
        parts = key.split(".")
        if parts[0] == "blocks":
            a, b, f, _ = _layer_source(int(parts[1]), L, Lp)
            rest = ".".join(parts[2:])
            out[key] = _lerp(src[f"blocks.{a}.{rest}"], src[f"blocks.{b}.{rest}"], f)
        elif parts[0] == "codebooks" and per_layer_books:
            r = _layer_source(int(parts[1]), L, Lp)[3]
            out[key] = src[".".join(["codebooks", str(r), *parts[2:]])].clone()
        elif key == "write_readouts":
            out[key] = _depth_readouts(src[key], L, Lp, per_layer_books)
        else:
            out[key] = src[key].clone()
    model.load_state_dict(out)
    return model


def _depth_readouts(R: torch.Tensor, L: int, Lp: int, per_layer_books: bool) -> torch.Tensor:
    """write_readouts: [L, 3, 256, 2K] -> [L', 3, 256, 2K] (lerped, or copied under per-layer
    codebooks because the last axis is indexed by that layer's codebook rows)."""
    rows = []
    for lp in range(Lp):
        a, b, f, r = _layer_source(lp, L, Lp)
        rows.append(R[r].clone() if per_layer_books else _lerp(R[a], R[b], f))
    return torch.stack(rows)


def _pointer_key(head_name: str) -> str:
    return {"pmix": "head.P.weight", "apmix": "head.P_a.weight"}[head_name]


def graft_mixture(
    donor: AlephLM, new_J: int, jitter: float = 0.01, seed: int = 0, cfg: AlephConfig | None = None
) -> AlephLM:
    """Mixture J → J' ≥ J by tile + jitter (§13.2), pmix or apmix heads.

    Pointer m' copies pointer m = m' mod J (its projection block and θ_m); mixture rows
    ``G_{m'} = G_m``, ``b_{G,m'} = b_{G,m} − log c_m`` (c_m copies of m) so the copies split w_m
    evenly and q is the donor's. Non-first copies then get ``N(0, (jitter·std(P_m))²)`` noise on
    their projection; at jitter 0 the graft reproduces the donor's q exactly.
    """
    head = donor.cfg.head.kind
    if head not in ("pmix", "apmix"):
        raise GraftError(f"graft_mixture needs a pmix or apmix head, the donor has {head!r}")
    J = donor.cfg.head.n_pointers
    if new_J < J:
        raise GraftError(f"graft_mixture: new_J={new_J} < donor J={J} would drop pointers")
    if jitter < 0:
        raise GraftError(f"graft_mixture: jitter must be >= 0, got {jitter}")
    target = _target(donor, cfg, {"head.n_pointers": new_J})
    _check_donor(donor, target, ("head.n_pointers",), "graft_mixture")
    src, model = donor.state_dict(), _fresh(donor, target, seed)
    out = {k: v.clone() for k, v in src.items()}
    src_m = torch.arange(new_J) % J
    copies = torch.bincount(src_m, minlength=J).to(src["head.G.bias"])
    out["head.G.weight"] = src["head.G.weight"][src_m].clone()
    out["head.G.bias"] = src["head.G.bias"][src_m] - torch.log(copies[src_m])
    out["head.theta"] = src["head.theta"][src_m].clone()
    pkey = _pointer_key(head)
    P = src[pkey].view(J, -1, src[pkey].shape[-1])  # [J, k, d]: one block per pointer
    tiled = P[src_m].clone()
    gen = torch.Generator().manual_seed(seed)
    for mp in range(J, new_J):
        std = float(P[mp % J].std())
        noise = torch.randn(tiled[mp].shape, generator=gen, dtype=torch.float64)
        tiled[mp] += (jitter * std * noise).to(tiled)
    out[pkey] = tiled.reshape(new_J * P.shape[1], P.shape[2])
    model.load_state_dict(out)
    return model


def graft_head_retrofit(
    pmix_donor: AlephLM, seed: int = 0, cfg: AlephConfig | None = None
) -> AlephLM:
    """Head pmix → apmix "identity retrofit" (§13.3).

    Everything is copied from the pmix donor (embedding, blocks, codebook, LN_f, gate, tail,
    candidate byte tables, mixture projection G, b_G); the apmix pointers ``P^a`` (orthogonal),
    ``W_c`` and θ are fresh (seeded by ``seed``). At step 0 the backbone h, gate g and P_tail are
    the donor's bitwise; only q changes. ``cfg`` may choose ``head.apmix.mode`` (default
    ``through``).
    """
    if pmix_donor.cfg.head.kind != "pmix":
        raise GraftError(
            f"graft_head_retrofit needs a pmix donor, got head={pmix_donor.cfg.head.kind!r}"
        )
    base = cfg or replace_at(pmix_donor.cfg, "head.apmix.mode", "through")
    target = replace_at(base, "head.kind", "apmix")
    _check_donor(pmix_donor, target, ("head.kind", "head.apmix.mode"), "graft_head_retrofit")

    src, model = pmix_donor.state_dict(), _fresh(pmix_donor, target, seed)
    out = model.state_dict()
    for key in out:
        if not key.startswith("head.") or key.startswith("head.G."):
            out[key] = src[key].clone()
    model.load_state_dict(out)
    return model


def swap_bank(model: AlephLM, bank: TrigramBank) -> AlephLM:
    """A copy of ``model`` reading ``bank`` (§13.4): no parameter changes; candidate features,
    κ (kernel) and √κ_j (apmix) are recomputed from the bank bytes at every forward."""
    out = copy.deepcopy(model)
    out.set_bank(bank)
    return out
