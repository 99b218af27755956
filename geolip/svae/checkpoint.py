"""SVAE companion checkpoints as directories: ``model.safetensors``, ``config.json`` (the
``GeoConfig``), ``meta.json`` (family ``svae``) and extra JSON files (a run's
``host_config.json`` and ``verdict.json``). The layout is AlephLM's (``geolip.checkpoint_io``),
so one set of tools (``geolip export``) reads both families.

Writes go to a temporary sibling directory renamed into place; an existing checkpoint is never
replaced unless ``overwrite=True``. Loading verifies the family, the config hash, keys and
shapes. Directories of the old layout (``geo_config.json``, a meta.json without a format or none)
still load, without a hash to verify.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from safetensors.torch import save_file

from geolip.checkpoint_io import (
    FAMILIES,
    LEGACY_SVAE_CONFIG,
    CheckpointError,
    check_directory,
    family_meta,
    is_legacy,
    load_weights,
    model_config,
    param_count,
    read_json,
    state_of,
    write_atomically,
    write_json,
)
from geolip.config import ConfigError
from geolip.svae.config import GeoConfig
from geolip.svae.model import SVAECompanion

FORMAT = FAMILIES["svae"][0]
RESERVED = ("model.safetensors", "config.json", "meta.json")

__all__ = ["FORMAT", "CheckpointError", "load_svae_checkpoint", "save_svae_checkpoint"]


def save_svae_checkpoint(
    path: str | os.PathLike,
    model: SVAECompanion,
    geo: GeoConfig,
    *,
    meta: dict | None = None,
    extra_json: Mapping[str, Mapping] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save weights, config, metadata and ``extra_json`` (file name -> JSON object, e.g.
    ``{"verdict.json": {...}}``) atomically to directory ``path``."""
    if model.cfg != geo:
        raise ValueError("save_svae_checkpoint: geo is not the config the model was built from")
    extra = dict(extra_json or {})
    for name in extra:
        if name in RESERVED or Path(name).name != name or not name.endswith(".json"):
            raise ValueError(
                f"save_svae_checkpoint: extra file {name!r} must be a plain *.json name other "
                f"than {RESERVED[1:]}"
            )
    return write_atomically(path, lambda tmp: _write(tmp, model, geo, meta, extra), overwrite)


def _write(tmp: Path, model: SVAECompanion, geo: GeoConfig, meta: dict | None, extra: dict):
    save_file(state_of(model), str(tmp / "model.safetensors"))
    write_json(tmp / "config.json", geo.to_dict())
    info = {
        "format": FORMAT,
        "family": "svae",
        "config_hash": geo.config_hash(),
        "param_count": param_count(model),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    info.update(meta or {})
    write_json(tmp / "meta.json", info)
    for name, value in extra.items():
        write_json(tmp / name, value, sort_keys=False)  # a verdict reads in the order it was made


def load_svae_checkpoint(
    path: str | os.PathLike, *, map_location: str = "cpu"
) -> tuple[SVAECompanion, GeoConfig, dict]:
    """Rebuild the companion from a checkpoint directory -> (model in eval mode, config, meta).

    ``meta`` is ``meta.json`` (``{}`` for an old-layout directory without one).
    """
    path = Path(path)
    check_directory(path)
    meta = family_meta(path, "svae")
    legacy = is_legacy(meta)
    name = LEGACY_SVAE_CONFIG if legacy else "config.json"
    raw = model_config(read_json(path / name))
    try:
        geo = GeoConfig.from_dict(raw)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path}/{name} does not describe a valid model: {exc}") from exc
    if not legacy and meta.get("config_hash") != geo.config_hash():
        raise CheckpointError(
            f"{path}/config.json was changed after saving (hash {geo.config_hash()} != "
            f"{meta.get('config_hash')} in meta.json)"
        )
    model = SVAECompanion(geo)
    load_weights(model, path / "model.safetensors")
    return model.to(map_location).eval(), geo, meta
