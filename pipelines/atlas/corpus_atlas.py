"""A corpus' atlases and banks, built once under the data directory and reused.

The default lineage of every AlephLM run is corpus → atlas → bank → run: ``train aleph``, a
sweep's trials and ``eval kn`` find the atlas of their corpus at

    DATA/atlases/<byte shards>-<atlas config hash>/

where the byte shards' directory name covers the corpus URI, its split and its files' sizes and
mtimes (``pipelines.byte_shards``): an edited corpus gets a new atlas, and an atlas found there
with its config hash is the corpus' atlas without reading the corpus again. Banks cut from it
are files beside it, ``DATA/banks/<atlas>-n<rows>-<quotas>.safetensors``.

Atlas builds run on Ray (``atlas.build``); the first ``train aleph`` or sweep of a corpus pays
for one (seconds at the builtin corpora, minutes at WikiText-103 on a cluster).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.errors import GeolipError

if TYPE_CHECKING:  # the CLI imports BANK_SOURCES: keep the rest for when there is work
    from atlas.config import AtlasConfig
    from pipelines.byte_shards import ByteShards

BANK_SOURCES = ("atlas", "frequency")
"""Where a run's bank comes from when no ``--bank`` file is given: the corpus' stratified atlas
(spec §4.2, the default) or the plain top-N frequency of the train side's aligned trigrams."""


def check_bank_source(value: str) -> None:
    """``--bank-source``: one of ``BANK_SOURCES``."""
    if value not in BANK_SOURCES:
        raise GeolipError(f"--bank-source must be one of {list(BANK_SOURCES)}, got {value!r}")


def bank_atlas_config(shards: ByteShards) -> AtlasConfig:
    """The atlas banks are cut from: the default build (spec §4.2) on the shards' split."""
    from atlas.config import AtlasConfig

    return AtlasConfig(heldout_fraction=float(shards.manifest["heldout_fraction"]))


def corpus_atlas_dir(data: Path, shards: ByteShards, cfg: AtlasConfig) -> Path:
    """Where the atlas of ``cfg`` of the corpus of ``shards`` lives."""
    return Path(data) / "atlases" / f"{shards.path.name}-{cfg.config_hash()}"


def _built(out: Path, cfg: AtlasConfig) -> bool:
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("config_hash") == cfg.config_hash()


def ensure_corpus_atlas(
    corpus: str, data: Path, shards: ByteShards, cfg: AtlasConfig, progress: bool = True
) -> Path:
    """The atlas of ``corpus`` with ``cfg``: the one under the data directory, else built (Ray)."""
    from atlas.build import build_atlas
    from pipelines.runtime import init_ray

    out = corpus_atlas_dir(data, shards, cfg)
    if _built(out, cfg):  # the shards' key names the corpus' files: no need to read it again
        return out
    return build_atlas(corpus, out, cfg, init_ray=init_ray, progress=progress).path


def ensure_corpus_bank(
    corpus: str,
    data: Path,
    shards: ByteShards,
    size: int,
    progress: bool = True,
    quotas: str | None = None,
) -> Path:
    """The bank file of ``size`` rows cut from the corpus' atlas (both built on first use), with
    the stratum ``quotas`` of ``atlas.bank.parse_quotas`` (``None``: the spec's default mix).

    A corpus too small for ``size`` distinct trigrams gets a bank of all it has (the frequency
    bank does the same); its provenance records the size asked for.
    """
    from atlas.bank import build_bank, parse_quotas, save_bank_file
    from atlas.query import AtlasError

    try:
        mix = "default" if quotas is None else _mix_name(parse_quotas(quotas))
    except AtlasError as exc:
        raise GeolipError(f"bank quotas {quotas!r}: {exc}") from None
    atlas = ensure_corpus_atlas(corpus, data, shards, bank_atlas_config(shards), progress)
    path = Path(data) / "banks" / f"{atlas.name}-n{size}-{mix}.safetensors"
    if path.is_file():
        return path
    try:
        trigrams, prior, provenance = build_bank(atlas, size, quotas, clamp=True)
    except AtlasError as exc:
        raise GeolipError(f"--corpus {corpus}: no bank can be cut from its atlas: {exc}") from None
    # Another trial may have cut the same bank first: the same bytes.
    with contextlib.suppress(FileExistsError):
        save_bank_file(path, trigrams, prior, provenance)
    return path


def _mix_name(quotas: dict[str, float]) -> str:
    """``char0.6-word0.3-unicode0.1``: a bank file's stratum mix."""
    return "-".join(f"{k}{v:g}" for k, v in quotas.items())
