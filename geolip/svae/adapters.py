"""Input adapters of the SVAE companion (svae.md §2): images ↔ patches, bytes and text ↔ images,
feature vectors ↔ patchwork tokens, and the synthetic data of the Mechanism A/B probe (§10.3, §14).

The model only ever sees ``(B, N, P)`` patch tensors. An image is cut into ps×ps blocks in
row-major grid order; a byte stream becomes an image whose pixels are C-byte cells (byte trigrams
at C = 3), laid out patch by patch so that one patch holds ps² consecutive cells; a feature
vector of width d is cut into d/P contiguous chunks of P values. Every adapter has an exact
inverse, which the tests hold to bitwise equality.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

PAD_MODES = ("space", "zero", "repeat", "truncate")
MAX_PATCH_DIM = 12
STD_FLOOR = 1e-6
MIN_SENTENCE_WORDS = 5
_SENTENCE_END = re.compile(r"(?<=[.!?]) +")


def _grid(H: int, W: int, ps: int) -> tuple[int, int]:
    if ps <= 0 or H % ps or W % ps:
        raise ValueError(f"image size {H}x{W} must be divisible by the patch size ps={ps}")
    return H // ps, W // ps


def extract_patches(x: torch.Tensor, ps: int) -> torch.Tensor:
    """Cut images into flattened ps×ps patches (§2.1). x: [B, C, H, W] -> [B, N, P].

    Patch n = r·gw + c holds x[b, :, r·ps:(r+1)·ps, c·ps:(c+1)·ps] flattened in (channel, row,
    col) order, so P = C·ps² and N = (H/ps)(W/ps).
    """
    if x.ndim != 4:
        raise ValueError(f"extract_patches expects images [B, C, H, W], got {tuple(x.shape)}")
    B, C, H, W = x.shape
    gh, gw = _grid(H, W, ps)
    p = x.reshape(B, C, gh, ps, gw, ps).permute(0, 2, 4, 1, 3, 5)
    return p.reshape(B, gh * gw, C * ps * ps)


def stitch_patches(p: torch.Tensor, C: int, H: int, W: int, ps: int) -> torch.Tensor:
    """Exact inverse of :func:`extract_patches`. p: [B, N, P] -> [B, C, H, W]."""
    gh, gw = _grid(H, W, ps)
    if p.ndim != 3 or p.shape[1:] != (gh * gw, C * ps * ps):
        raise ValueError(
            f"stitch_patches expects [B, {gh * gw}, {C * ps * ps}] for C={C}, {H}x{W}, ps={ps}; "
            f"got {tuple(p.shape)}"
        )
    x = p.reshape(p.shape[0], gh, gw, C, ps, ps).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(p.shape[0], C, H, W)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Byte value of each entry: clamp(round(127.5·x + 127.5), 0, 255) as uint8 (§2.2)."""
    return (x.detach().double() * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)


def bytes_to_image(b, C: int, H: int, W: int, ps: int) -> torch.Tensor:
    """Lay a byte stream out as an image (§2.2). b: bytes | bytearray | uint8 array of length
    C·H·W -> [C, H, W] float32 in [−1, 1].

    Cell i (bytes C·i … C·i+C−1, one per channel) goes to patch ⌊i/ps²⌋ (row-major over the
    patch grid) at row-major position i mod ps² inside the patch; a byte becomes (b − 127.5)/127.5.
    """
    gh, gw = _grid(H, W, ps)
    if isinstance(b, (bytes, bytearray, memoryview)):
        arr = np.frombuffer(bytes(b), dtype=np.uint8)
    else:
        arr = np.asarray(b)
        if arr.dtype != np.uint8:
            raise ValueError(f"bytes_to_image needs uint8 values, got dtype {arr.dtype}")
        arr = arr.reshape(-1)
    if arr.size != C * H * W:
        raise ValueError(
            f"bytes_to_image needs exactly C·H·W = {C}·{H}·{W} = {C * H * W} bytes, got {arr.size}"
        )
    cells = torch.from_numpy(arr.copy()).reshape(gh, gw, ps, ps, C)
    img = cells.permute(4, 0, 2, 1, 3).reshape(C, H, W)
    return (img.float() - 127.5) / 127.5


def image_to_bytes(img: torch.Tensor, ps: int) -> bytes:
    """Inverse of :func:`bytes_to_image` through :func:`quantize`. img: [C, H, W] -> C·H·W bytes."""
    if img.ndim != 3:
        raise ValueError(f"image_to_bytes expects one image [C, H, W], got {tuple(img.shape)}")
    C, H, W = img.shape
    gh, gw = _grid(H, W, ps)
    cells = quantize(img).cpu().reshape(C, gh, ps, gw, ps).permute(1, 3, 2, 4, 0)
    return cells.contiguous().numpy().tobytes()


def _fit_bytes(raw: bytes, target: int, pad: str) -> bytes:
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
    if len(raw) >= target:
        return raw[:target]
    if pad == "truncate":
        raise ValueError(
            f"text is {len(raw)} bytes but the image holds {target}; pad='truncate' never pads "
            "(use 'space', 'zero' or 'repeat')"
        )
    if pad == "repeat" and raw:
        return (raw * (target // len(raw) + 1))[:target]
    fill = b"\x00" if pad == "zero" else b" "  # empty text under 'repeat' falls back to spaces
    return raw + fill * (target - len(raw))


def text_to_image(
    text: str, C: int = 3, H: int = 16, W: int = 16, ps: int = 2, pad: str = "space"
) -> torch.Tensor:
    """UTF-8 text as a byte image [C, H, W] (§2.2). Longer text is cut to C·H·W bytes; shorter
    text is padded with spaces ('space'), NUL ('zero') or cyclic repeats ('repeat'), or refused
    ('truncate')."""
    return bytes_to_image(_fit_bytes(text.encode("utf-8"), C * H * W, pad), C, H, W, ps)


def image_to_text(img: torch.Tensor, ps: int, n_bytes: int | None = None) -> str:
    """Decode the first ``n_bytes`` bytes (all by default) of a byte image as UTF-8 (invalid
    sequences become U+FFFD)."""
    return image_to_bytes(img, ps)[:n_bytes].decode("utf-8", errors="replace")


def byte_recovery(recon: torch.Tensor, img: torch.Tensor) -> float:
    """Share of entries whose byte survives: mean of 1[q(recon) = q(img)] over every entry.

    A byte is exact iff |recon − x| < 0.5/127.5 ≈ 3.92e−3 (x on the byte grid).
    """
    if recon.shape != img.shape:
        raise ValueError(f"shapes differ: recon {tuple(recon.shape)} vs img {tuple(img.shape)}")
    return float((quantize(recon) == quantize(img)).double().mean())


def patch_dim_for(d: int) -> int:
    """Feature patch width P: 12 if 12 | d, else the largest divisor of d that is ≤ 12 (§2.3)."""
    if d <= 0:
        raise ValueError(f"feature width must be > 0, got {d}")
    return max(p for p in range(1, MAX_PATCH_DIM + 1) if d % p == 0)


def patch_features(x: torch.Tensor, P: int) -> torch.Tensor:
    """Feature vectors as patchwork tokens: [..., d] -> [..., d/P, P] (contiguous chunks)."""
    if x.shape[-1] % P:
        raise ValueError(f"feature width {x.shape[-1]} is not divisible by P={P}")
    return x.reshape(*x.shape[:-1], x.shape[-1] // P, P)


def unpatch_features(p: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`patch_features`: [..., N, P] -> [..., N·P]."""
    return p.reshape(*p.shape[:-2], p.shape[-2] * p.shape[-1])


@dataclass(frozen=True)
class Standardizer:
    """Per-dimension x̃ = (x − mean)/std, fitted on training tokens only (§2.3).

    ``std`` is stored already floored at 1e−6 (the divisor actually used). mean, std: [d] fp32.
    """

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor) -> Standardizer:
        """x: [T, d] (or [..., d]) training tokens; population std, computed in fp64."""
        x64 = x.detach().double().reshape(-1, x.shape[-1])
        if x64.shape[0] < 1:
            raise ValueError("Standardizer.fit needs at least one token")
        std = x64.std(dim=0, correction=0).clamp_min(STD_FLOOR)
        return cls(x64.mean(dim=0).float(), std.float())

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d] -> [..., d] standardised, in x's dtype."""
        return ((x.double() - self.mean.double()) / self.std.double()).to(x.dtype)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """[..., d] standardised -> [..., d] raw, in z's dtype."""
        return (z.double() * self.std.double() + self.mean.double()).to(z.dtype)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready lists (fp32 values survive the float64 round trip exactly)."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Standardizer:
        mean = torch.tensor(d["mean"], dtype=torch.float32)
        return cls(mean, torch.tensor(d["std"], dtype=torch.float32))


@dataclass(frozen=True)
class FeaturePatchwork:
    """Standardise feature vectors [T, d] and cut them into N = d/P tokens of width P (§2.3)."""

    standardizer: Standardizer
    P: int

    @classmethod
    def fit(cls, x: torch.Tensor) -> FeaturePatchwork:
        return cls(Standardizer.fit(x), patch_dim_for(x.shape[-1]))

    @property
    def N(self) -> int:
        return self.standardizer.mean.numel() // self.P

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d] raw -> [..., N, P] standardised patches."""
        return patch_features(self.standardizer.transform(x), self.P)

    def decode(self, p: torch.Tensor) -> torch.Tensor:
        """[..., N, P] standardised patches -> [..., d] raw."""
        return self.standardizer.inverse(unpatch_features(p))


def split_sentences(text: str, min_words: int = MIN_SENTENCE_WORDS) -> list[str]:
    """Sentences of a wikitext-style corpus (§2.3): strip lines, drop empty lines and '='
    headings, split after [.!?] followed by a space, keep sentences of ≥ ``min_words`` words."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("="):
            continue
        out.extend(s.strip() for s in _SENTENCE_END.split(line) if len(s.split()) >= min_words)
    return out


def _sizes(H: int, W: int) -> list[int]:
    """Block / cell sides for the structured families: 4 and 8 where they tile the image (wider
    than a 2×2 patch, so neighbouring patches share content), else 2, else 1."""
    for cands in ((4, 8), (2,), (1,)):
        fit = [k for k in cands if H % k == 0 and W % k == 0 and k < min(H, W)]
        if fit:
            return fit
    return [1]


def _per_sample(sizes: list[int], n: int, gen: torch.Generator, make) -> torch.Tensor:
    """Sample one size per image and build each image with ``make(k, n)``: [n, ...]."""
    pick = torch.randint(len(sizes), (n,), generator=gen)
    out = torch.stack([make(k, n) for k in sizes])  # [len(sizes), n, ...]
    return out[pick, torch.arange(n)]


def _family(name: str, n: int, C: int, H: int, W: int, gen: torch.Generator) -> torch.Tensor:
    """n images [n, C, H, W] of one structured family (see :func:`structured_images`)."""
    yy = torch.linspace(-1, 1, H)[:, None].expand(H, W)
    xx = torch.linspace(-1, 1, W)[None, :].expand(H, W)
    amp = 0.5 + 1.5 * torch.rand(n, C, 1, 1, generator=gen)
    off = 0.5 * torch.randn(n, C, 1, 1, generator=gen)
    if name == "gradient":
        th = 2 * torch.pi * torch.rand(n, C, 1, 1, generator=gen)
        return amp * (th.cos() * xx + th.sin() * yy) + off
    if name == "blocks":

        def blocks(k: int, m: int) -> torch.Tensor:
            low = torch.randn(m, C, H // k, W // k, generator=gen)
            return low.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)

        return _per_sample(_sizes(H, W), n, gen, blocks) * amp + off
    if name == "checkerboard":
        iy, ix = torch.arange(H)[:, None], torch.arange(W)[None, :]

        def board(k: int, m: int) -> torch.Tensor:
            return (((iy // k + ix // k) % 2) * 2.0 - 1.0).expand(m, C, H, W)

        return _per_sample(_sizes(H, W), n, gen, board) * amp + off
    # Pink (β = 1) or brown (β = 2) noise: white noise shaped to power ∝ 1/f^β.
    beta = torch.randint(1, 3, (n, 1, 1, 1), generator=gen).double()
    f = torch.sqrt(torch.fft.fftfreq(H)[:, None] ** 2 + torch.fft.rfftfreq(W)[None, :] ** 2)
    gain = f.double().clamp_min(1.0 / max(H, W)) ** (-beta / 2)
    spec = torch.fft.rfft2(torch.randn(n, C, H, W, generator=gen, dtype=torch.float64)) * gain
    x = torch.fft.irfft2(spec, s=(H, W))
    x = (x - x.mean(dim=(-2, -1), keepdim=True)) / x.std(dim=(-2, -1), keepdim=True)
    return x.float() * amp + off


STRUCTURED_FAMILIES = ("gradient", "blocks", "checkerboard", "powerlaw")


def structured_images(n: int, C: int = 3, H: int = 16, W: int = 16, seed: int = 0) -> torch.Tensor:
    """Synthetic, spatially correlated images for the Mechanism-A probe (§10.3) [proposed].

    -> [n, C, H, W] float32 in [−4, 4], an even mix (shuffled) of four families with random
    amplitude and offset per channel: linear gradients in a random direction, Gaussian noise
    upsampled from 4×4 or 8×8 blocks, checkerboards of 4- or 8-pixel cells, and pink/brown
    (1/f, 1/f²) noise. Neighbouring 2×2 patches share content, so patches are predictable from
    each other (see :func:`cross_patch_r2`); deterministic given ``seed``, no download.
    """
    if n < 1 or C < 1 or min(H, W) < 2:
        raise ValueError(f"structured_images needs n, C >= 1 and H, W >= 2, got {n}, {C}, {H}, {W}")
    gen = torch.Generator().manual_seed(seed)
    fam = torch.arange(n) % len(STRUCTURED_FAMILIES)
    fam = fam[torch.randperm(n, generator=gen)]
    out = torch.empty(n, C, H, W)
    for i, name in enumerate(STRUCTURED_FAMILIES):
        idx = (fam == i).nonzero().squeeze(1)
        if idx.numel():
            out[idx] = _family(name, idx.numel(), C, H, W, gen)
    return out.clamp(-4.0, 4.0)


def shuffle_patches(p: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The §14 control: slot n of every sample comes from slot n of another sample.

    p: [B, N, P] -> [B, N, P]. Each slot draws its own random cyclic permutation of the samples
    (a derangement: no sample keeps its own patch), so every slot's multiset of patches, hence its
    marginal, is kept exactly while the patches of one output sample come from unrelated inputs.
    """
    if p.ndim != 3 or p.shape[0] < 2:
        raise ValueError(f"shuffle_patches needs [B >= 2, N, P], got {tuple(p.shape)}")
    B, N = p.shape[0], p.shape[1]
    gen = torch.Generator().manual_seed(seed)
    order = torch.rand(N, B, generator=gen).argsort(dim=1)  # [N, B]: a random order per slot
    # Within each slot the sample at position i of the order takes the patch of position i+1.
    src = torch.empty_like(order).scatter_(1, order, order.roll(-1, dims=1))
    return p[src.T.to(p.device), torch.arange(N, device=p.device)[None, :]]


RIDGE_GRID = tuple(10.0**k for k in range(-4, 5))


def _ridge(X: torch.Tensor, Y: torch.Tensor):
    """Ridge fits of Y: [n, P] on X: [n, F] for any relative penalty g (λ = g · mean s², s the
    singular values of the centred X), all from one eigendecomposition of the smaller Gram
    matrix. Centred on X's and Y's own means. Returns ``predict(Xq: [m, F], g) -> [m, P]``.
    """
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    dual = Xc.shape[0] <= Xc.shape[1]
    s2, Q = torch.linalg.eigh(Xc @ Xc.T if dual else Xc.T @ Xc)
    s2 = s2.clamp_min(0.0)
    QtY = Q.T @ (Yc if dual else Xc.T @ Yc)
    scale = max(float(s2.mean()), 1e-12)  # constant inputs: keep λ > 0 so noise is not amplified

    def predict(Xq: torch.Tensor, g: float) -> torch.Tensor:
        # dual: W = Xcᵀ(XcXcᵀ + λ)⁻¹Yc; primal: W = (XcᵀXc + λ)⁻¹XcᵀYc (the same W).
        inner = Q @ (QtY / (s2 + g * scale)[:, None])
        W = Xc.T @ inner if dual else inner
        return (Xq - mx) @ W + my

    return predict


def _ridge_predict(Xtr: torch.Tensor, Ytr: torch.Tensor, Xte: torch.Tensor) -> torch.Tensor:
    """Ridge prediction for Xte with the penalty chosen on a held-out quarter of the fit data.

    With more features than samples a weak ridge overfits (independent patches would score far
    below 0) and a strong one discards real structure, so g is validated, then refitted on all
    of (Xtr, Ytr). (Leave-one-out shortcuts are not used: centring on the fit data's own mean
    leaks every point into the others' fit.)
    """
    cut = (3 * len(Xtr)) // 4
    val = _ridge(Xtr[:cut], Ytr[:cut])
    errs = [float(((val(Xtr[cut:], g) - Ytr[cut:]) ** 2).sum()) for g in RIDGE_GRID]
    return _ridge(Xtr, Ytr)(Xte, RIDGE_GRID[int(np.argmin(errs))])


def cross_patch_r2(p: torch.Tensor, max_slots: int = 16, seed: int = 0) -> float:
    """Cross-patch dependence of a data set (§14): held-out R² of linearly predicting patch n
    from all other patches of the same sample, averaged over slots.

    p: [B, N, P] (B ≥ 8). Samples are split in half at random; a ridge fit (penalty validated on
    a quarter of the fit half) is scored on the other half, with R² pooled over the P outputs.
    At most ``max_slots`` slots (a seeded random subset) are scored. ≈ 0 (slightly below) for
    independent patches, e.g. after :func:`shuffle_patches`; → 1 when each patch is a linear
    function of the others.
    """
    if p.ndim != 3 or p.shape[0] < 8 or p.shape[1] < 2:
        raise ValueError(f"cross_patch_r2 needs [B >= 8, N >= 2, P], got {tuple(p.shape)}")
    B, N, _ = p.shape
    gen = torch.Generator().manual_seed(seed)
    x = p.detach().double().cpu()[torch.randperm(B, generator=gen)]
    tr, te = x[: B // 2], x[B // 2 :]
    slots = torch.randperm(N, generator=gen)[: min(N, max_slots)].tolist()
    scores = []
    for n in slots:
        others = [m for m in range(N) if m != n]
        Xtr, Xte = tr[:, others].reshape(len(tr), -1), te[:, others].reshape(len(te), -1)
        pred = _ridge_predict(Xtr, tr[:, n], Xte)
        sst = float(((te[:, n] - te[:, n].mean(0)) ** 2).sum())
        if sst > 0:
            scores.append(1.0 - float(((te[:, n] - pred) ** 2).sum()) / sst)
    return float(np.mean(scores)) if scores else float("nan")
