"""Datasets of ``geolip train svae --data``: feature shards, structured images, or text as image.

``load_svae_data`` returns train/validation tensors (each sample is its own reconstruction
target) and what the model config must match:

- ``features:DIR`` — token vectors of a ``geolip features extract`` directory, standardised with
  the manifest's train statistics and cut into a patchwork ``[T, N, P]`` (spec §2.3).
- ``images:structured`` — synthetic, spatially correlated 3×16×16 images (§10.3, offline).
- ``text:URI`` — byte trigrams of the corpus as 3×16×16 images (§2.2), random windows of the
  train split and of the held-out split.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from atlas.corpus import corpus_bytes
from geolip.config import apply_overrides
from geolip.svae.adapters import (
    bytes_to_image,
    patch_dim_for,
    patch_features,
    structured_images,
)
from geolip.svae.config import SVAERunConfig, features, image16
from pipelines.errors import GeolipError
from pipelines.features.extract import load_vectors


@dataclass
class SVAEData:
    kind: str
    train: torch.Tensor
    val: torch.Tensor
    source: dict
    """What the data is (for the checkpoint's host config and the verdict)."""
    patch_dim: int | None = None
    n_patches: int | None = None


def run_config(spec: str, sets: Sequence[str] = ()) -> SVAERunConfig:
    """The SVAE run config for ``--data spec`` (the feature preset sized to the host's hidden
    width, else the 16×16 image build), then ``--set`` overrides: built once, at the edge."""
    kind, rest = _parse(spec)
    if kind == "features":
        d = int(_manifest(_features_dir(rest))["host"]["hidden_size"])
        model = features(patch_dim_for(d), d // patch_dim_for(d))
    else:
        model = image16()
    return apply_overrides(SVAERunConfig(model=model), list(sets))


def load_svae_data(spec: str, n_train: int = 4096, n_val: int = 512, seed: int = 0) -> SVAEData:
    kind, rest = _parse(spec)
    if kind == "features":
        return _features(_features_dir(rest))
    if kind == "images":
        return _images(n_train, n_val, seed)
    return _text(rest, n_train, n_val, seed)


def _features_dir(rest: str) -> Path:
    """The features directory of ``features:DIR``; an ``s3://`` one is read from a local cache
    copy (``pipelines.storage.readable``)."""
    from pipelines.storage import readable

    return Path(readable(rest, "--data")).expanduser().resolve()


def _parse(spec: str) -> tuple[str, str]:
    kind, _, rest = spec.partition(":")
    if (kind in ("features", "text") and rest) or (kind == "images" and rest == "structured"):
        return kind, rest
    raise GeolipError(
        f"--data {spec!r}: expected features:DIR, images:structured or text:CORPUS_URI"
    )


MANIFEST_KEYS = {"host": dict, "standardize": dict, "request": dict, "corpus": str}
"""What ``train svae`` reads from a features manifest, and the JSON type of each."""


def _manifest(path: Path) -> dict:
    """The manifest of the features directory ``path``; anything else names the file and what
    was expected."""
    where = f"--data features:{path}"
    if not path.exists():
        raise GeolipError(f"{where}: no such directory")
    if not path.is_dir():
        raise GeolipError(f"{where}: a regular file; expected a features directory")
    file = path / "manifest.json"
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GeolipError(
            f"{where}: no feature manifest there ({file} is missing); make one with "
            "`geolip features extract`"
        ) from None
    except (OSError, ValueError) as exc:
        raise GeolipError(f"{where}: {file} is not valid JSON ({exc})") from exc
    _check_manifest(manifest, file, where)
    return manifest


def _check_manifest(manifest, file: Path, where: str) -> None:
    """Refuse a manifest that is not a JSON object with the keys ``train svae`` reads."""
    if not isinstance(manifest, dict):
        kind = _json_kind(manifest)
        raise GeolipError(f"{where}: {file} holds a JSON {kind}; expected a JSON object")
    for key, kind in MANIFEST_KEYS.items():
        if not isinstance(manifest.get(key), kind):
            raise GeolipError(
                f"{where}: {file} has no {key!r} {_json_kind(kind())}; expected the manifest "
                "of `geolip features extract`"
            )
    host, stats = manifest["host"], manifest["standardize"]
    ok = isinstance(host.get("hidden_size"), int) and host["hidden_size"] > 0
    ok = ok and all(isinstance(stats.get(k), list) for k in ("mean", "std"))
    if not ok or "layer" not in manifest["request"]:
        raise GeolipError(
            f"{where}: {file} lacks host.hidden_size, standardize.mean/std or request.layer; "
            "expected the manifest of `geolip features extract`"
        )


def _json_kind(value) -> str:
    """JSON's name for the type of a parsed value (``array``, ``object``, ...)."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _features(path: Path) -> SVAEData:
    manifest = _manifest(path)
    mean = torch.tensor(manifest["standardize"]["mean"])
    std = torch.tensor(manifest["standardize"]["std"])
    d = int(manifest["host"]["hidden_size"])
    P = patch_dim_for(d)
    sides = {}
    for side in ("train", "validation"):
        if not (path / side).is_dir():
            raise GeolipError(
                f"--data features:{path}: no {side} shards ({path / side} is missing)"
            )
        raw = torch.from_numpy(load_vectors(path / side))
        if raw.shape[1] != d or len(mean) != d:
            raise GeolipError(
                f"--data features:{path}: {side} vectors have {raw.shape[1]} dims and the "
                f"statistics {len(mean)}, but the manifest's host has hidden size {d}"
            )
        x = (raw - mean) / std
        sides[side] = patch_features(x, P)
    source = {
        "kind": "features",
        "dir": str(path),
        "host": manifest["host"],
        "corpus": manifest["corpus"],
        "layer": manifest["request"]["layer"],
        "P": P,
        "N": d // P,
        "mean": manifest["standardize"]["mean"],
        "std": manifest["standardize"]["std"],
    }
    return SVAEData("features", sides["train"], sides["validation"], source, P, d // P)


def _images(n_train: int, n_val: int, seed: int) -> SVAEData:
    train = structured_images(n_train, seed=seed)
    val = structured_images(n_val, seed=seed + 10_000)
    return SVAEData("images", train, val, {"kind": "images", "generator": "structured"})


def _text(uri: str, n_train: int, n_val: int, seed: int) -> SVAEData:
    C, H, W, ps = 3, 16, 16, 2
    need = C * H * W
    rng = np.random.default_rng(seed)
    sides = {}
    for side, n in (("train", n_train), ("validation", n_val)):
        data, _ = corpus_bytes(uri, side)
        if len(data) < need:
            raise GeolipError(
                f"--data text:{uri}: the {side} split has {len(data)} bytes, "
                f"fewer than one {need}-byte image"
            )
        starts = rng.integers(0, len(data) - need + 1, n)
        sides[side] = torch.stack([bytes_to_image(data[s : s + need], C, H, W, ps) for s in starts])
    return SVAEData("text", sides["train"], sides["validation"], {"kind": "text", "corpus": uri})
