"""Lineage in MLflow: corpus → atlas → bank → run (→ sweep), every step a dataset with a digest.

Atlas, bank and feature-shard builds are runs of their own experiment, ``geolip-data``, holding
their manifest; a build is recorded once, found again by its kind and digest (a build made
before tracking, or by a command that had no store, is recorded the first time a tracked run
uses it). A training run logs what it read as MLflow dataset inputs (``log_inputs``), each
tagged with the id of the run that built it, and its description links those runs, so the
run's page in the UI shows its inputs and leads to where they came from.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.tracking import (
    artifact_root,
    client,
    ensure_experiment,
    start_run,
)

DATA_EXPERIMENT = "geolip-data"
KIND_TAG, DIGEST_TAG, PATH_TAG = "geolip.kind", "geolip.digest", "geolip.path"
BUILD_RUN_TAG = "geolip.build_run"


@dataclass(frozen=True)
class Input:
    """One thing a run read: an MLflow dataset (name, digest, source) and where it was built."""

    kind: str
    """corpus | atlas | bank | features | data."""
    name: str
    digest: str
    source: str
    """Its URI or absolute path."""
    profile: dict = field(default_factory=dict)
    """Sizes shown in the UI (bytes, documents, rows)."""
    manifest: dict | None = None
    """What its build run stores as ``manifest.json`` (None: not built by geolip)."""
    parents: tuple[Input, ...] = ()
    """What its build read (an atlas: the corpus; a bank: the atlas)."""


def corpus_input(corpus: str, shards) -> Input:
    """A corpus as its byte shards saw it (``pipelines.byte_shards.ByteShards``): the digest
    covers both sides' fingerprints, so an edited corpus is another dataset."""
    splits = shards.manifest["splits"]
    prints = {side: splits[side]["fingerprint"] for side in sorted(splits)}
    profile = {f"{side}_bytes": splits[side]["n_bytes"] for side in sorted(splits)}
    profile.update({f"{side}_docs": splits[side].get("n_docs") for side in sorted(splits)})
    return Input("corpus", corpus, _digest(prints), corpus, profile)


def atlas_input(atlas_dir: Path, corpus: Input | None = None) -> Input:
    """A built atlas directory (its ``manifest.json``)."""
    manifest = json.loads((Path(atlas_dir) / "manifest.json").read_text(encoding="utf-8"))
    src = manifest.get("corpus", {})
    digest = _digest({"config": manifest.get("config_hash"), "corpus": src.get("fingerprint")})
    strata = manifest.get("strata", {})
    profile = {f"{name}_kept": s.get("kept") for name, s in strata.items() if isinstance(s, dict)}
    profile["corpus_bytes"] = src.get("n_bytes")
    parents = (corpus,) if corpus is not None else ()
    path = str(Path(atlas_dir).resolve())
    return Input("atlas", Path(atlas_dir).name, digest, path, profile, manifest, parents)


def bank_input(path: Path, fingerprint: str, size: int, provenance: dict, parent=None) -> Input:
    """A bank file: its rows' fingerprint is the digest; its provenance is the manifest."""
    parents = (parent,) if parent is not None else ()
    source = str(Path(path).resolve())
    profile = {"rows": size, "source": provenance.get("source", "file")}
    return Input("bank", Path(path).stem, fingerprint, source, profile, provenance, parents)


def bank_lineage(path: Path, corpus: Input | None = None) -> list[Input]:
    """``[atlas, bank]`` of a bank file: the atlas it was cut from (when it is still where
    its provenance says) and the bank, whose parent it is."""
    from geolip.aleph.bank import load_bank

    bank = load_bank(path)
    prov = bank.provenance
    atlas = prov.get("atlas") if prov.get("source") == "atlas" else None
    items = []
    if atlas and (Path(atlas) / "manifest.json").is_file():
        items.append(atlas_input(Path(atlas), corpus))
    parent = items[0] if items else None
    return [*items, bank_input(path, bank.fingerprint(), bank.size, prov, parent)]


def features_input(features_dir: Path) -> Input:
    """A feature-shard directory (``geolip features extract``): its manifest's key is the
    digest (host, revision, layer, corpus and limits)."""
    manifest = json.loads((Path(features_dir) / "manifest.json").read_text(encoding="utf-8"))
    splits = manifest.get("splits", {})
    profile = {f"{side}_tokens": s.get("tokens") for side, s in splits.items()}
    source = str(Path(features_dir).resolve())
    name = Path(features_dir).name
    return Input("features", name, str(manifest.get("key")), source, profile, manifest)


def file_input(kind: str, name: str, path: Path, profile: dict | None = None) -> Input:
    """A file read as it is (an SVAE run's tensors): the digest is its bytes' sha256."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return Input(kind, name, digest, str(Path(path).resolve()), profile or {})


def record_named_store(tracking_flag: str | None, data_flag: str | None, items) -> str | None:
    """Record the builds ``items()`` lists when a store is named (``--tracking-uri``,
    ``--data-dir`` or ``$MLFLOW_TRACKING_URI``); returns the last build run's id (None: no
    store named, nothing recorded; a tracked run that reads them records them then)."""
    import os

    if not (tracking_flag or data_flag or os.environ.get("MLFLOW_TRACKING_URI")):
        return None
    from pipelines.paths import data_dir
    from pipelines.tracking import check_tracking, resolve_tracking_uri

    data = data_dir(data_flag)
    uri = resolve_tracking_uri(tracking_flag, data)
    check_tracking(uri)
    run_id = None
    for item in items():
        run_id = record_build(uri, data, item)
    return run_id


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def record_build(uri: str, data: Path, item: Input, storage: str | None = None) -> str | None:
    """The id of ``item``'s build run in ``geolip-data`` (recorded now if it is not yet);
    None for what geolip does not build (a corpus)."""
    if item.manifest is None:
        return None
    experiment = ensure_experiment(uri, DATA_EXPERIMENT, artifact_root(uri, data, storage))
    if (found := find_build(uri, experiment, item)) is not None:
        return found
    tags = {KIND_TAG: item.kind, DIGEST_TAG: item.digest, PATH_TAG: item.source}
    config = item.manifest.get("config", item.manifest)
    name = f"{item.kind}-{item.name}"
    with start_run(uri, experiment, name, tags=tags, config=config) as logger:
        log_inputs(uri, data, logger.run_id, item.parents, "build", storage)
        logger.log_dict(item.manifest, "manifest.json")
        logger.log_metrics(_numbers(item.profile), 0)
    return logger.run_id


def find_build(uri: str, experiment: str, item: Input) -> str | None:
    """The newest finished build run of ``item`` (its kind and digest), if any."""
    query = (
        f"tags.`{KIND_TAG}` = '{item.kind}' and tags.`{DIGEST_TAG}` = '{item.digest}' "
        "and attributes.status = 'FINISHED'"
    )
    runs = client(uri).search_runs(
        [experiment], query, order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0].info.run_id if runs else None


def log_inputs(
    uri: str,
    data: Path,
    run_id: str,
    items: tuple[Input, ...] | list[Input],
    context: str,
    storage: str | None = None,
) -> dict[str, str]:
    """Log ``items`` as run ``run_id``'s dataset inputs (``context``: train, eval, build), each
    with its build run recorded first; returns ``{kind: build run id}``."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    rows, builds = [], {}
    for item in items:
        tags = [InputTag("mlflow.data.context", context)]
        if (build := record_build(uri, data, item, storage)) is not None:
            builds[item.kind] = build
            tags.append(InputTag(BUILD_RUN_TAG, build))
        dataset = Dataset(
            name=item.name,
            digest=item.digest,
            source_type=_source_type(item.source),
            source=json.dumps({"uri": item.source}),
            profile=json.dumps(item.profile, default=str),
        )
        rows.append(DatasetInput(dataset, tags))
    if rows:
        _log_input_rows(uri, run_id, rows)
    return builds


def _log_input_rows(uri: str, run_id: str, rows: list, tries: int = 4) -> None:
    """``log_inputs``, retried when another process created the same dataset entity between
    MLflow's look-up and its insert (sweep trials starting together log the same corpus): the
    failed call rolled back, and the retry finds the dataset and links it."""
    from mlflow.exceptions import MlflowException

    for attempt in range(tries):
        try:
            client(uri).log_inputs(run_id, datasets=rows)
            return
        except MlflowException as exc:
            text = str(exc)
            duplicate = "UNIQUE constraint failed" in text or "duplicate key value" in text
            if not duplicate or attempt == tries - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


def _source_type(source: str) -> str:
    if source.startswith("s3://"):
        return "s3"
    return "local" if source.startswith("/") else "geolip"


def _numbers(profile: dict) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in profile.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def describe_lineage(uri: str, items: list[Input], builds: dict[str, str]) -> str:
    """The run's description (``mlflow.note.content``): its inputs in order, each build
    linked to its run's page."""
    store = client(uri)
    parts = []
    for item in items:
        label = f"{item.kind} `{item.name}` ({item.digest})"
        if (run_id := builds.get(item.kind)) is not None:
            experiment = store.get_run(run_id).info.experiment_id
            label = f"[{label}](#/experiments/{experiment}/runs/{run_id})"
        parts.append(label)
    return "**Lineage:** " + " → ".join([*parts, "this run"])


def log_lineage(
    uri: str, data: Path, run_id: str, items: list[Input], storage: str | None = None
) -> dict[str, str]:
    """Everything a run read (corpus first) as its inputs, and its description linking their
    builds; returns ``{kind: build run id}``."""
    builds = log_inputs(uri, data, run_id, items, "train", storage)
    note = describe_lineage(uri, items, builds)
    client(uri).set_tag(run_id, "mlflow.note.content", note)
    return builds
