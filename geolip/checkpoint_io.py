"""What every model family's checkpoint directory shares: its errors, JSON files, atomic writes,
weight verification and the family a directory holds.

A checkpoint is a directory: ``model.safetensors``, ``config.json`` (the family's config),
``meta.json`` (``format``, ``family``, ``config_hash``, ``param_count``, ``created``, ...) and
family files beside them (AlephLM's ``bank.safetensors``; the SVAE companion's
``host_config.json``, ``verdict.json``). No pickle anywhere. The families' own modules
(``geolip.aleph.checkpoint``, ``geolip.svae.checkpoint``) build and verify their models; this
module knows only files.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file


class CheckpointError(ValueError):
    """A checkpoint directory is missing, corrupt or does not match; the message says which."""


FAMILIES = {
    "aleph": ("geolip-aleph-checkpoint/1", "an AlephLM checkpoint"),
    "svae": ("geolip-svae-checkpoint/1", "an SVAE companion checkpoint"),
}
"""family -> (the ``meta.json`` format string, what a message calls its checkpoints)."""

EXPORT_KEYS = ("model_type", "architectures", "geolip_version", "format")
"""Keys ``geolip export`` adds to ``config.json`` for Hugging Face-style readers; they describe
the folder, not the model, so loaders drop them before building the config."""

LEGACY_SVAE_CONFIG = "geo_config.json"
"""The config file of SVAE checkpoints written before the shared layout (no family in meta)."""


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def write_atomically(
    path: str | os.PathLike, write: Callable[[Path], None], overwrite: bool
) -> Path:
    """Run ``write(tmp)`` on a fresh temporary sibling directory, then rename it to ``path``.

    An existing ``path`` is a ``FileExistsError`` unless ``overwrite``; a failing ``write``
    leaves nothing behind (neither the temporary directory nor a half-replaced ``path``).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"checkpoint {path} already exists (pass overwrite=True / --overwrite)"
        )
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        write(tmp)
        swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def swap_into_place(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``; an old directory is moved aside first and removed only after
    the new one is in place, so a crash never leaves neither."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, value: Mapping, sort_keys: bool = True) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=sort_keys) + "\n", encoding="utf-8")


def read_json(path: Path) -> dict:
    """The JSON object in checkpoint file ``path``; anything else is a ``CheckpointError``."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint file {path} is missing") from exc
    except IsADirectoryError as exc:
        raise CheckpointError(f"checkpoint file {path} is a directory, not a file") from exc
    except UnicodeDecodeError as exc:
        raise CheckpointError(
            f"checkpoint file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
            f"position {exc.start})"
        ) from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint file {path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CheckpointError(
            f"checkpoint file {path} holds a JSON {json_kind(value)}; expected a JSON object"
        )
    return value


def json_kind(value) -> str:
    """What JSON calls the type of ``value`` (for messages)."""
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def model_config(raw: dict) -> dict:
    """``config.json``'s model keys: an exported folder's ``EXPORT_KEYS`` removed."""
    return {k: v for k, v in raw.items() if k not in EXPORT_KEYS}


def check_directory(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint {path} is a file, not a directory (a checkpoint is a directory holding "
            "model.safetensors, config.json and meta.json)"
        )


def _identify(path: Path) -> tuple[str, str, dict]:
    """``(family, how it was told, meta)`` of checkpoint directory ``path``.

    ``meta.json``'s ``family`` decides; AlephLM checkpoints written before it existed are told by
    their ``format``, and SVAE ones (no format, or no ``meta.json`` at all) by ``geo_config.json``.
    """
    check_directory(path)
    legacy_svae = (path / LEGACY_SVAE_CONFIG).is_file()
    if not (path / "meta.json").exists() and legacy_svae:
        return "svae", f"{LEGACY_SVAE_CONFIG} and no meta.json", {}
    meta = read_json(path / "meta.json")
    family, fmt = meta.get("family"), meta.get("format")
    if family is not None:
        if family not in FAMILIES:
            raise CheckpointError(
                f"{path}/meta.json: unknown checkpoint family {family!r}; expected one of "
                f"{sorted(FAMILIES)}"
            )
        return family, f"meta.json family {family!r}", meta
    for name, (known, _) in FAMILIES.items():
        if fmt == known:
            return name, f"meta.json format {fmt!r}", meta
    if fmt is None and legacy_svae:
        return "svae", f"{LEGACY_SVAE_CONFIG}, meta.json without a format", meta
    raise CheckpointError(
        f"{path}/meta.json names no checkpoint family and an unknown format {fmt!r}; expected "
        f"one of {sorted(f for f, _ in FAMILIES.values())}"
    )


def checkpoint_family(path: str | os.PathLike) -> str:
    """``"aleph"`` or ``"svae"``: the model family checkpoint directory ``path`` holds."""
    return _identify(Path(path))[0]


def is_legacy(meta: dict) -> bool:
    """Whether ``family_meta`` accepted an SVAE checkpoint of the old layout (``geo_config.json``,
    meta without a format): its config has no hash to verify."""
    return "format" not in meta


def family_meta(path: Path, family: str) -> dict:
    """``path``'s ``meta.json`` (``{}`` for an old SVAE checkpoint without one), which must
    belong to ``family`` and carry its format (old SVAE checkpoints carry none: ``is_legacy``).
    Another family's checkpoint is a one-line ``CheckpointError`` naming both families."""
    found, why, meta = _identify(path)
    if found != family:
        raise CheckpointError(
            f"checkpoint {path} is {FAMILIES[found][1]} ({why}); this command needs "
            f"{FAMILIES[family][1]}"
        )
    fmt = FAMILIES[family][0]
    legacy = family == "svae" and "format" not in meta and (path / LEGACY_SVAE_CONFIG).is_file()
    if not legacy and meta.get("format") != fmt:
        raise CheckpointError(
            f"{path}/meta.json: expected format {fmt!r}, got {meta.get('format')!r}"
        )
    return meta


def load_weights(model: torch.nn.Module, file: Path) -> None:
    """Load ``file`` into ``model`` after checking it holds exactly the model's keys and shapes."""
    try:
        state = load_file(str(file))
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint weights {file} are missing") from exc
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint weights {file} are corrupt: {exc}") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{file}: keys do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    bad = [k for k in expected if expected[k].shape != state[k].shape]
    if bad:
        k = bad[0]
        raise CheckpointError(
            f"{file}: shape of {k} is {tuple(state[k].shape)}, the config expects "
            f"{tuple(expected[k].shape)} ({len(bad)} mismatched tensors)"
        )
    model.load_state_dict(state, strict=True)


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous CPU tensors (what ``save_file`` accepts)."""
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
