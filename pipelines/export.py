"""``geolip export CKPT DIR``: a checkpoint of either model family as a self-contained,
Hugging Face-style folder.

The folder is a checkpoint in the shared layout (``geolip.checkpoint_io``) that also reads
without geolip: ``model.safetensors``, ``config.json`` (the model's config plus ``model_type``,
``architectures``, ``geolip_version`` and ``format``, which geolip's loaders ignore),
``bank.safetensors`` (AlephLM heads that use one), ``meta.json``, the run's ``verdict.json`` and
``host_config.json`` where it has them, and a ``README.md`` model card. It is written to a
temporary sibling, loaded back with geolip's loader, then renamed into place: an export that
does not load is never written, and an existing ``DIR`` is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.cli import Command, add_common_run_arguments, geolip_version
from pipelines.errors import GeolipError

MODEL_TYPES = {"aleph": ("geolip-aleph", "AlephLM"), "svae": ("geolip-svae", "SVAECompanion")}
"""family -> (config.json ``model_type``, the class in ``architectures``)."""

EXTRA_FILES = ("verdict.json", "host_config.json")


@dataclass(frozen=True)
class Source:
    """A checkpoint read and verified by its family's loader, with what its export carries."""

    path: Path
    family: str
    model: object
    """The loaded model (``AlephLM`` or ``SVAECompanion``): the folder must load back to it."""
    config: dict
    """The model's config as its family's ``to_dict`` gives it."""
    meta: dict
    extras: dict[str, dict]
    """``verdict.json`` / ``host_config.json`` found with the checkpoint, by file name."""
    weights: tuple[str, ...]
    """The safetensors files to copy: ``model.safetensors`` (and ``bank.safetensors``)."""


def read_source(path: Path) -> Source:
    """Load checkpoint directory ``path`` with its family's loader (every check a load makes)."""
    # torch and the models import on use, so `geolip --help` stays fast.
    from geolip.checkpoint_io import checkpoint_family, is_legacy, param_count, read_json

    family = checkpoint_family(path)
    weights = ("model.safetensors",)
    if family == "aleph":
        from geolip.aleph.checkpoint import load_checkpoint

        model, run_cfg, meta = load_checkpoint(path)
        config = run_cfg.to_dict()
        if (path / "bank.safetensors").exists():
            weights += ("bank.safetensors",)
    else:
        from geolip.svae.checkpoint import FORMAT, load_svae_checkpoint

        model, geo, meta = load_svae_checkpoint(path)
        config = geo.to_dict()
        if is_legacy(meta):  # an old-layout run: the export gets the meta a save writes
            meta = {**meta, "format": FORMAT, "config_hash": geo.config_hash()}
            meta.setdefault("param_count", param_count(model))
    meta = {**meta, "family": family}
    extras = {name: read_json(file) for name in EXTRA_FILES if (file := _extra(path, name))}
    return Source(path, family, model, config, meta, extras, weights)


def _extra(path: Path, name: str) -> Path | None:
    """``name`` in the checkpoint, else in its run directory (``runs/aleph/RUN/verdict.json``
    sits beside ``runs/aleph/RUN/final``)."""
    for folder in (path, path.parent if path.name == "final" else None):
        if folder is not None and (folder / name).is_file():
            return folder / name
    return None


def hf_config(source: Source) -> dict:
    """``config.json`` of the export: the model's config plus the Hugging Face-style keys."""
    from geolip.checkpoint_io import FAMILIES

    model_type, architecture = MODEL_TYPES[source.family]
    return {
        **source.config,
        "model_type": model_type,
        "architectures": [architecture],
        "geolip_version": geolip_version(),
        "format": FAMILIES[source.family][0],
    }


def export_checkpoint(src: Path, dst: Path, *, overwrite: bool = False) -> Path:
    """Export checkpoint directory ``src`` to folder ``dst`` (see the module docstring)."""
    from geolip.checkpoint_io import write_atomically

    _check_destination(src, dst, overwrite)
    source = read_source(src)
    return write_atomically(dst, lambda tmp: _write(tmp, source, dst.name), overwrite)


def _check_destination(src: Path, dst: Path, overwrite: bool) -> None:
    if dst.exists() and not dst.is_dir():
        raise GeolipError(f"DIR {dst} is a file; expected a new or existing export directory")
    if dst.exists() and not overwrite:
        raise GeolipError(f"DIR {dst} already exists; pass --overwrite to replace it")
    if src.exists() and (src.resolve() == dst.resolve() or dst.resolve() in src.resolve().parents):
        raise GeolipError(
            f"DIR {dst} is or contains the checkpoint {src}; export to another directory"
        )


def _write(tmp: Path, source: Source, name: str) -> None:
    import torch

    from geolip.checkpoint_io import write_json
    from pipelines.model_card import model_card

    for file in source.weights:
        shutil.copyfile(source.path / file, tmp / file)
    write_json(tmp / "config.json", hf_config(source))
    meta = {**source.meta, "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(tmp / "meta.json", meta)
    for file, value in source.extras.items():
        write_json(tmp / file, value, sort_keys=False)
    card = model_card(source.family, source.config, meta, source.extras, name)
    (tmp / "README.md").write_text(card, encoding="utf-8")
    # The folder must load back with geolip, to the same weights, before it is renamed in.
    loaded = load_export(tmp, source.family).state_dict()
    original = source.model.state_dict()
    if loaded.keys() != original.keys() or not all(
        torch.equal(loaded[k], original[k]) for k in original
    ):
        raise GeolipError(f"the export of {source.path} did not load back to the same weights")


def load_export(path: Path, family: str):
    """The model in an exported folder, loaded with its family's geolip loader."""
    if family == "aleph":
        from geolip.aleph.checkpoint import load_checkpoint

        return load_checkpoint(path)[0]
    from geolip.svae.checkpoint import load_svae_checkpoint

    return load_svae_checkpoint(path)[0]


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "ckpt",
        metavar="CKPT",
        help="an AlephLM or SVAE checkpoint: a directory, s3://..., runs:/ID/model or "
        "models:/NAME/VERSION",
    )
    p.add_argument("dir", metavar="DIR", help="the folder to write (must not exist)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR")
    add_common_run_arguments(p)  # where a runs:/ or models:/ URI is looked up


def _run(args: argparse.Namespace) -> int:
    from pipelines.model_uri import checkpoint_arg

    src = checkpoint_arg(args, args.ckpt, "CKPT")
    out = export_checkpoint(src, Path(args.dir).expanduser(), overwrite=args.overwrite)
    print(f"exported {src} -> {out}")
    return 0


COMMANDS = [
    Command(
        "export",
        "write a checkpoint as a self-contained folder (safetensors, JSON, README model card)",
        _add,
        _run,
    )
]
