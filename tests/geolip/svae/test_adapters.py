"""Input adapters of the SVAE companion (svae.md §2; invariants 22–23 of §18) and the synthetic
data of the Mechanism A/B probe (§10.3, §14)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from geolip.svae.adapters import (
    FeaturePatchwork,
    Standardizer,
    byte_recovery,
    bytes_to_image,
    cross_patch_r2,
    extract_patches,
    image_to_bytes,
    image_to_text,
    patch_dim_for,
    patch_features,
    shuffle_patches,
    split_sentences,
    stitch_patches,
    structured_images,
    text_to_image,
    unpatch_features,
)
from geolip.svae.metrics import (
    byte_metrics,
    mean_predictor_cosine,
    mse,
    recon_cosine,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_bytes(n: int, seed: int = 0) -> bytes:
    return bytes(torch.randint(0, 256, (n,), generator=_gen(seed), dtype=torch.uint8).tolist())


# --- image patches (invariant 23) -------------------------------------------------------------


@pytest.mark.parametrize(("C", "H", "W", "ps"), [(3, 16, 16, 2), (1, 8, 12, 4), (4, 6, 10, 1)])
def test_stitch_inverts_extract_bitwise(C, H, W, ps):
    x = torch.randn(2, C, H, W, generator=_gen())
    p = extract_patches(x, ps)
    assert p.shape == (2, (H // ps) * (W // ps), C * ps * ps)
    assert torch.equal(stitch_patches(p, C, H, W, ps), x)


def test_patch_layout_is_row_major_grid_then_channel_row_col():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    p = extract_patches(x, 2)
    r, c, gw = 1, 2, 3  # patch n = r·gw + c
    assert torch.equal(p[1, r * gw + c], x[1, :, 2:4, 4:6].reshape(-1))


def test_patch_errors_name_the_problem():
    with pytest.raises(ValueError, match="divisible"):
        extract_patches(torch.zeros(1, 3, 15, 16), 2)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        extract_patches(torch.zeros(3, 16, 16), 2)
    with pytest.raises(ValueError, match=r"\[B, 64, 12\]"):
        stitch_patches(torch.zeros(1, 63, 12), 3, 16, 16, 2)


# --- bytes and text (invariant 22) ------------------------------------------------------------


@pytest.mark.parametrize("C", [1, 2, 3, 4])
@pytest.mark.parametrize("ps", [2, 4])
def test_bytes_round_trip_exactly(C, ps):
    H, W = 8, 16
    b = _random_bytes(C * H * W, seed=C * 10 + ps)
    img = bytes_to_image(b, C, H, W, ps)
    assert img.shape == (C, H, W) and img.dtype == torch.float32
    assert float(img.min()) >= -1 and float(img.max()) <= 1
    assert image_to_bytes(img, ps) == b
    arr = np.frombuffer(b, dtype=np.uint8)
    assert torch.equal(bytes_to_image(arr, C, H, W, ps), img)


def test_byte_layout_cell_i_lands_in_patch_i_div_ps2():
    C, H, W, ps = 3, 4, 8, 2
    b = _random_bytes(C * H * W, seed=1)
    img = bytes_to_image(b, C, H, W, ps)
    gw = W // ps
    for i in range(H * W):
        k, pos = divmod(i, ps * ps)
        y = (k // gw) * ps + pos // ps
        x = (k % gw) * ps + pos % ps
        cell = torch.tensor(list(b[C * i : C * i + C]), dtype=torch.float32)
        assert torch.equal(img[:, y, x], (cell - 127.5) / 127.5), i
    assert float(bytes_to_image(bytes([0] * 96), C, H, W, ps)[0, 0, 0]) == -1.0
    assert float(bytes_to_image(bytes([255] * 96), C, H, W, ps)[0, 0, 0]) == 1.0


def test_byte_recovery_threshold():
    b = _random_bytes(3 * 16 * 16, seed=2)
    img = bytes_to_image(b, 3, 16, 16, 2)[None]
    assert byte_recovery(img, img) == 1.0
    assert byte_recovery(img + 0.4 / 127.5, img) == 1.0
    assert byte_recovery(img - 0.4 / 127.5, img) == 1.0
    # +0.6/127.5 rounds every byte up by one, except 255, which the clamp keeps.
    share_255 = float(np.mean(np.frombuffer(b, dtype=np.uint8) == 255))
    assert byte_recovery(img + 0.6 / 127.5, img) == pytest.approx(share_255)
    with pytest.raises(ValueError, match="shapes differ"):
        byte_recovery(img, img[0])


def test_byte_errors_name_the_problem():
    with pytest.raises(ValueError, match="768 bytes, got 767"):
        bytes_to_image(b"x" * 767, 3, 16, 16, 2)
    with pytest.raises(ValueError, match="uint8"):
        bytes_to_image(np.zeros(768, dtype=np.int64), 3, 16, 16, 2)
    with pytest.raises(ValueError, match="divisible"):
        bytes_to_image(b"x" * 768, 3, 16, 16, 3)
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        image_to_bytes(torch.zeros(1, 3, 16, 16), 2)


def test_text_padding_modes():
    text = "Ünïcode text, 27 bytes."
    n = len(text.encode("utf-8"))
    space = image_to_bytes(text_to_image(text, 3, 4, 4, 2), 2)
    assert space == text.encode("utf-8") + b" " * (48 - n)
    assert image_to_text(text_to_image(text, 3, 4, 4, 2), 2, n) == text
    zero = image_to_bytes(text_to_image(text, 3, 4, 4, 2, pad="zero"), 2)
    assert zero == text.encode("utf-8") + b"\x00" * (48 - n)
    rep = image_to_bytes(text_to_image("abc", 1, 2, 4, 2, pad="repeat"), 2)
    assert rep == b"abcabcab"
    long = "0123456789" * 10
    for pad in ("space", "zero", "repeat", "truncate"):
        assert image_to_text(text_to_image(long, 3, 4, 4, 2, pad=pad), 2) == long[:48]
    with pytest.raises(ValueError, match="never pads"):
        text_to_image("short", 3, 4, 4, 2, pad="truncate")
    with pytest.raises(ValueError, match="pad must be one of"):
        text_to_image("short", 3, 4, 4, 2, pad="mirror")


# --- feature patchwork (invariant 23) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("d", "P"), [(768, 12), (128, 8), (100, 10), (24, 12), (7, 7), (13, 1), (1024, 8)]
)
def test_patch_dim_rule(d, P):
    assert patch_dim_for(d) == P


def test_feature_patchwork_round_trips():
    x = torch.randn(50, 768, generator=_gen(3))
    p = patch_features(x, 12)
    assert p.shape == (50, 64, 12)
    assert torch.equal(p[7, 5], x[7, 60:72])  # contiguous chunks
    assert torch.equal(unpatch_features(p), x)
    with pytest.raises(ValueError, match="not divisible by P=7"):
        patch_features(x, 7)
    with pytest.raises(ValueError, match="must be > 0"):
        patch_dim_for(0)


def test_standardizer_fit_transform_inverse_and_json():
    x = 5.0 + 30.0 * torch.randn(400, 128, generator=_gen(4))
    x[:, 3] = 2.5  # a constant dimension: the floored std keeps it finite
    st = Standardizer.fit(x)
    z = st.transform(x)
    assert torch.isfinite(z).all() and float(st.std[3]) == pytest.approx(1e-6)
    keep = [i for i in range(128) if i != 3]
    assert torch.allclose(z[:, keep].mean(0), torch.zeros(127), atol=1e-5)
    assert torch.allclose(z[:, keep].std(0, correction=0), torch.ones(127), atol=1e-5)
    back = st.inverse(z)
    assert torch.allclose(back, x, rtol=1e-6, atol=1e-6)
    again = Standardizer.from_dict(json.loads(json.dumps(st.to_dict())))
    assert torch.equal(again.mean, st.mean) and torch.equal(again.std, st.std)
    pw = FeaturePatchwork.fit(x)
    assert (pw.P, pw.N) == (8, 16)
    patches = pw.encode(x)
    assert patches.shape == (400, 16, 8)
    assert torch.allclose(pw.decode(patches), x, rtol=1e-6, atol=1e-6)


def test_split_sentences():
    text = (
        " = Valkyria Chronicles = \n"
        "\n"
        " The game began development in 2010 . It was short . Sales rose by 3.5 percent in "
        "Japan ! Did the sequel follow the same plan ? Yes .\n"
        " = = Plot = = \n"
        "   Another line without an ending but long enough   \n"
    )
    assert split_sentences(text) == [
        "The game began development in 2010 .",
        "Sales rose by 3.5 percent in Japan !",
        "Did the sequel follow the same plan ?",
        "Another line without an ending but long enough",
    ]


# --- Mechanism-probe data -----------------------------------------------------------------------


def test_structured_images_are_deterministic_and_bounded():
    x = structured_images(64, C=3, H=16, W=16, seed=5)
    assert x.shape == (64, 3, 16, 16) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and float(x.abs().max()) <= 4.0
    assert torch.equal(x, structured_images(64, seed=5))
    assert not torch.equal(x, structured_images(64, seed=6))
    assert structured_images(3, C=1, H=8, W=12, seed=0).shape == (3, 1, 8, 12)


def test_shuffle_patches_keeps_slot_marginals_and_moves_every_patch():
    p = torch.randn(40, 16, 12, generator=_gen(6))
    s = shuffle_patches(p, seed=1)
    assert torch.equal(s.sort(dim=0).values, p.sort(dim=0).values)  # same multiset per slot
    assert not (s == p).all(dim=-1).any()  # no sample keeps its own patch in any slot
    assert torch.equal(s, shuffle_patches(p, seed=1))
    with pytest.raises(ValueError, match="B >= 2"):
        shuffle_patches(p[:1], seed=0)


def test_cross_patch_r2_separates_structured_from_shuffled():
    p = extract_patches(structured_images(256, seed=0), 2)
    r2, r2_shuffled = (
        cross_patch_r2(p, max_slots=8),
        cross_patch_r2(shuffle_patches(p), max_slots=8),
    )
    assert r2 > 0.5
    assert abs(r2_shuffled) < 0.1
    assert r2 - r2_shuffled > 0.4


def test_cross_patch_r2_of_an_exactly_linear_family_is_one():
    z = torch.randn(200, 6, generator=_gen(7))
    maps = torch.randn(10, 6, 4, generator=_gen(8))
    p = torch.einsum("bk,nkp->bnp", z, maps)  # every patch a linear image of one latent
    assert cross_patch_r2(p) > 0.99
    with pytest.raises(ValueError, match="B >= 8"):
        cross_patch_r2(p[:4])


# --- reconstruction metrics (§13) ----------------------------------------------------------------


def test_recon_cosine_and_mean_predictor_baseline():
    t = torch.randn(32, 64, 12, generator=_gen(9))
    assert recon_cosine(t, t) == pytest.approx(1.0)
    assert recon_cosine(-2 * t, t) == pytest.approx(-1.0)
    per = torch.nn.functional.cosine_similarity(t.reshape(32, -1), (t + 1).reshape(32, -1))
    assert recon_cosine(t + 1, t) == pytest.approx(float(per.mean()), rel=1e-6)
    # Anisotropic data: a constant offset shared by all samples makes the mean predictor look good.
    train = torch.randn(2000, 64, 12, generator=_gen(10))
    assert mean_predictor_cosine((train + 10.0).mean(0), t + 10.0) > 0.95
    assert abs(mean_predictor_cosine(train.mean(0), t)) < 0.05  # standardised: baseline ≈ 0
    assert mse(t + 0.5, t) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="equal"):
        recon_cosine(t, t[:, :10])


def test_byte_metrics():
    img = bytes_to_image(_random_bytes(768, seed=10).replace(b"\xff", b"\xfe"), 3, 16, 16, 2)[None]
    bumped = img.clone()
    bumped[0, 1] += 1.0 / 127.5  # channel 1 off by exactly one byte everywhere
    out = byte_metrics(bumped, img)
    assert out["per_byte_acc"] == pytest.approx(2 / 3)
    assert out["mean_abs_byte_err"] == pytest.approx(1 / 3)
    assert out["cell_exact_rate"] == 0.0
    assert out["per_channel_acc"] == pytest.approx([1.0, 0.0, 1.0])
    assert byte_metrics(img, img)["cell_exact_rate"] == 1.0
