"""``geolip atlas build --out s3://BUCKET/PREFIX``: the atlas is built in a local staging
directory by ``atlas.build.build_atlas`` (which knows nothing of object stores) and published
with ``pipelines.storage.publish_dir`` (its Parquet parts, then ``manifest.json`` last).

What is already at the prefix decides, as for a local ``--out``: nothing there → build; an atlas
of the same config → only the corpus fingerprint is checked (nothing rebuilt); another atlas →
refused unless ``--overwrite``; anything else → refused. Readers (``atlas query``, ``atlas
stats``, ``bank build --atlas``) read it through ``pipelines.storage.readable``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable

from atlas.build import FORMAT, build_atlas
from atlas.config import AtlasConfig
from pipelines.errors import GeolipError
from pipelines.storage import MARKER, Root, describe, list_files, publish_dir, read_bytes
from pipelines.storage import scratch_dir as new_scratch

FLAG = "--out"


def _existing(root: Root) -> tuple[bytes | None, list[str]]:
    """The atlas marker's bytes at ``root`` (None: not an atlas) and every file there."""
    try:
        files = list_files(root)
        marker = read_bytes(root, MARKER) if MARKER in files else None
    except OSError as exc:
        raise describe(exc, root, FLAG) from None
    try:
        manifest = json.loads(marker) if marker is not None else None
    except ValueError:
        manifest = None
    if not (isinstance(manifest, dict) and manifest.get("format") == FORMAT):
        if files:
            raise GeolipError(
                f"{FLAG} {root.uri} exists and is not an atlas; choose another {FLAG}"
            )
        return None, files
    return marker, files


def build_atlas_at(
    corpus: str,
    root: Root,
    cfg: AtlasConfig,
    *,
    overwrite: bool,
    init_ray: Callable[[], None],
    progress: bool,
) -> None:
    """Build (or recognise) the atlas of ``corpus`` at the object-store prefix ``root``."""
    marker, files = _existing(root)
    if marker is not None and not overwrite:
        built = json.loads(marker).get("config_hash")
        if built != cfg.config_hash():
            raise FileExistsError(
                f"{FLAG} {root.uri} holds an atlas built with another config (hash {built}, this "
                f"build {cfg.config_hash()}); pass --overwrite to replace it"
            )
    scratch = new_scratch("geolip-atlas-")
    local = scratch / "atlas"
    try:
        if marker is not None and not overwrite:
            # The same config: build_atlas checks the corpus fingerprint against this manifest.
            local.mkdir()
            (local / MARKER).write_bytes(marker)
        result = build_atlas(
            corpus,
            local,
            cfg,
            overwrite=overwrite,
            init_ray=init_ray,
            progress=progress,
            shown_as=root.uri,
        )
        if not result.already_built:
            try:
                publish_dir(local, root, replace=files if overwrite else [])
            except OSError as exc:
                raise describe(exc, root, FLAG) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
