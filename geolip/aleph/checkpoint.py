"""Checkpoints as directories: ``model.safetensors``, ``config.json``, ``bank.safetensors``,
``meta.json`` (and ``optimizer.safetensors`` + ``optimizer.json`` when saved). No pickle anywhere.

Writes go to a temporary sibling directory renamed into place; an existing checkpoint is never
replaced unless ``overwrite=True``. Loading verifies keys, shapes and the bank fingerprint.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from geolip.aleph.bank import BankError, TrigramBank, load_bank, save_bank
from geolip.aleph.config import AlephRunConfig
from geolip.aleph.model import AlephLM
from geolip.config import ConfigError, config_hash

FORMAT = "geolip-aleph-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, corrupt or does not match; the message says which."""


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(
    path: str | os.PathLike,
    model: AlephLM,
    run_cfg: AlephRunConfig,
    *,
    meta: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Save model weights, config, bank and metadata atomically to directory ``path``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"checkpoint {path} already exists (pass overwrite=True / --overwrite)"
        )
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_contents(tmp, model, run_cfg, meta)
        _swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _write_contents(tmp: Path, model: AlephLM, run_cfg: AlephRunConfig, meta: dict | None) -> None:
    tmp.mkdir(parents=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(json.dumps(run_cfg.to_dict(), indent=2, sort_keys=True))
    info = {
        "format": FORMAT,
        "config_hash": config_hash(run_cfg),
        "param_count": param_count(model),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bank_fingerprint": None,
        "bank_size": None,
    }
    if model.bank is not None:
        save_bank(model.bank, tmp / "bank.safetensors")
        info.update(bank_fingerprint=model.bank.fingerprint(), bank_size=model.bank.size)
    info.update(meta or {})
    (tmp / "meta.json").write_text(json.dumps(info, indent=2, sort_keys=True))


def _swap_into_place(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``; an old checkpoint is moved aside first and removed only after
    the new one is in place, so a crash never leaves neither."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _read_json(path: Path) -> dict:
    """The JSON object in checkpoint file ``path``; anything else is a ``CheckpointError``."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint file {path} is missing") from exc
    except UnicodeDecodeError as exc:
        raise CheckpointError(
            f"checkpoint file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
            f"position {exc.start})"
        ) from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint file {path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CheckpointError(
            f"checkpoint file {path} holds a JSON {_json_kind(value)}; expected a JSON object"
        )
    return value


def _json_kind(value) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _check_directory(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint {path} is a file, not a directory (a checkpoint is a directory holding "
            "model.safetensors, config.json and meta.json)"
        )


def load_checkpoint(
    path: str | os.PathLike, *, bank: TrigramBank | None = None, map_location: str = "cpu"
) -> tuple[AlephLM, AlephRunConfig, dict]:
    """Rebuild the model from a checkpoint directory -> (model in eval mode, run config, meta).

    ``bank`` swaps in another bank (vocabulary swap); otherwise the saved bank is used and its
    fingerprint must match ``meta.json``.
    """
    path = Path(path)
    _check_directory(path)
    meta = _read_json(path / "meta.json")
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}/meta.json: expected format {FORMAT!r}, got {meta.get('format')!r}"
        )
    raw = _read_json(path / "config.json")
    for section in ("model", "train"):
        if not isinstance(raw.get(section, {}), dict):
            raise CheckpointError(
                f"{path}/config.json: section {section!r} holds a JSON "
                f"{_json_kind(raw[section])}; expected a JSON object"
            )
    try:
        run_cfg = AlephRunConfig.from_dict(raw)
    except (ConfigError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}/config.json does not describe a valid model: {exc}") from exc
    if meta.get("config_hash") != config_hash(run_cfg):
        raise CheckpointError(
            f"{path}/config.json was changed after saving (hash {config_hash(run_cfg)} != "
            f"{meta.get('config_hash')} in meta.json)"
        )
    if bank is None and (path / "bank.safetensors").exists():
        try:
            bank = load_bank(path / "bank.safetensors")
        except BankError as exc:
            raise CheckpointError(str(exc)) from exc
        if bank.fingerprint() != meta.get("bank_fingerprint"):
            raise CheckpointError(
                f"{path}/bank.safetensors does not match the bank recorded in meta.json "
                f"(fingerprint {bank.fingerprint()} != {meta.get('bank_fingerprint')})"
            )
    if run_cfg.model.uses_bank and bank is None:
        raise CheckpointError(f"checkpoint {path} has head {run_cfg.head!r} but no bank")
    model = AlephLM(run_cfg.model, bank)
    _load_weights(model, path / "model.safetensors")
    return model.to(map_location).eval(), run_cfg, meta


def _load_weights(model: AlephLM, file: Path) -> None:
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
