"""AlephLM checkpoints as directories: ``model.safetensors``, ``config.json``,
``bank.safetensors``, ``meta.json`` (family ``aleph``; and ``optimizer.safetensors`` +
``optimizer.json`` when saved). No pickle anywhere. The layout and what it shares with the SVAE
companion's checkpoints is ``geolip.checkpoint_io``'s.

Writes go to a temporary sibling directory renamed into place; an existing checkpoint is never
replaced unless ``overwrite=True``. Loading verifies the family, keys, shapes and the bank
fingerprint.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from safetensors.torch import save_file

from geolip.aleph.bank import BankError, TrigramBank, load_bank, save_bank
from geolip.aleph.config import AlephRunConfig
from geolip.aleph.model import AlephLM
from geolip.checkpoint_io import (
    FAMILIES,
    CheckpointError,
    check_directory,
    family_meta,
    json_kind,
    load_weights,
    model_config,
    param_count,
    read_json,
    state_of,
    write_atomically,
    write_json,
)
from geolip.config import ConfigError, config_hash

FORMAT = FAMILIES["aleph"][0]

__all__ = ["FORMAT", "CheckpointError", "load_checkpoint", "param_count", "save_checkpoint"]


def save_checkpoint(
    path: str | os.PathLike,
    model: AlephLM,
    run_cfg: AlephRunConfig,
    *,
    meta: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Save model weights, config, bank and metadata atomically to directory ``path``."""
    return write_atomically(path, lambda tmp: _write_contents(tmp, model, run_cfg, meta), overwrite)


def _write_contents(tmp: Path, model: AlephLM, run_cfg: AlephRunConfig, meta: dict | None) -> None:
    save_file(state_of(model), str(tmp / "model.safetensors"))
    write_json(tmp / "config.json", run_cfg.to_dict())
    info = {
        "format": FORMAT,
        "family": "aleph",
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
    write_json(tmp / "meta.json", info)


def load_checkpoint(
    path: str | os.PathLike, *, bank: TrigramBank | None = None, map_location: str = "cpu"
) -> tuple[AlephLM, AlephRunConfig, dict]:
    """Rebuild the model from a checkpoint directory -> (model in eval mode, run config, meta).

    ``bank`` swaps in another bank (vocabulary swap); otherwise the saved bank is used and its
    fingerprint must match ``meta.json``.
    """
    path = Path(path)
    check_directory(path)
    meta = family_meta(path, "aleph")
    raw = model_config(read_json(path / "config.json"))
    for section in ("model", "train"):
        if not isinstance(raw.get(section, {}), dict):
            raise CheckpointError(
                f"{path}/config.json: section {section!r} holds a JSON "
                f"{json_kind(raw[section])}; expected a JSON object"
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
    load_weights(model, path / "model.safetensors")
    return model.to(map_location).eval(), run_cfg, meta
