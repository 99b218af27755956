"""``hf:NAME[:CONFIG[:SPLIT]]`` corpora, read through ``datasets.load_dataset``.

NAME is a Hub dataset (``wikitext``) or a local path ``load_dataset`` understands (a directory of
Parquet/JSON/text files, or a loading script). A directory written by ``save_to_disk`` is also
accepted, through ``load_from_disk``, since ``load_dataset`` refuses those. SPLIT defaults to
``train``. Documents are the rows of the ``text`` column, ``doc_id = SPLIT#ROW``: neither the
Hub name nor a local path enters the id, so moving a local copy leaves the split unchanged.

Offline (``HF_DATASETS_OFFLINE=1``, or no network) a dataset that is not in the local cache cannot
be loaded; that is reported as a ``CorpusError`` naming the URI instead of a retry storm's
traceback.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from atlas.corpus.files import dataset_documents, is_saved_dataset
from atlas.corpus.uri import CorpusError, CorpusSpec, Document

if TYPE_CHECKING:
    import datasets

DEFAULT_SPLIT = "train"
_TRUE = ("1", "true", "yes", "on")
PROBE_SECONDS = 3.0


def hub_offline() -> bool:
    """Whether the Hugging Face Hub is out of reach: offline by configuration
    (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``), or its host refuses a TCP connection within
    ``PROBE_SECONDS``. In the second case ``datasets``, ``transformers`` and ``huggingface_hub``
    are switched to offline mode for this process, so they read their local caches at once
    instead of retrying the network for half a minute.
    """
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    if any(os.environ.get(name, "").lower() in _TRUE for name in names):
        return True
    if _hub_reachable():
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"  # for the libraries not imported yet, and child processes
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        import datasets.config
    except ImportError:
        return True
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    return True


@functools.lru_cache(maxsize=1)
def _hub_reachable() -> bool:
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=PROBE_SECONDS):
            return True
    except OSError:
        return False


def iter_hf_documents(spec: CorpusSpec) -> Iterator[Document]:
    """Documents of ``spec`` (an ``hf`` spec), in dataset row order; loads the dataset now."""
    split = spec.split or DEFAULT_SPLIT
    dataset = _load(spec, split)
    return dataset_documents(dataset, split, str(spec))


def _load(spec: CorpusSpec, split: str) -> datasets.Dataset:
    import datasets  # lazy: importing datasets takes about a second

    uri = str(spec)
    try:
        if is_saved_dataset(Path(spec.target)):
            return _load_saved(spec.target, split, uri)
        if not Path(spec.target).exists():
            hub_offline()  # a Hub name: no network means the cache, without a retry storm
        return datasets.load_dataset(spec.target, spec.config, split=split)
    except CorpusError:
        raise
    except ConnectionError as e:
        raise CorpusError(
            f"cannot load {uri!r}: the Hugging Face Hub is unreachable and the dataset is not in "
            f"the local cache ({e}); download it while online or use a file: URI"
        ) from e
    except FileNotFoundError as e:
        raise CorpusError(f"cannot load {uri!r}: dataset not found ({e})") from e
    except ValueError as e:
        # Unknown split or config, malformed data files: datasets' message says which.
        raise CorpusError(f"cannot load {uri!r}: {e}") from e


def _load_saved(path: str, split: str, uri: str) -> datasets.Dataset:
    import datasets

    loaded = datasets.load_from_disk(path)
    if not isinstance(loaded, datasets.DatasetDict):
        return loaded
    if split not in loaded:
        raise CorpusError(f"cannot load {uri!r}: no split {split!r} (splits: {sorted(loaded)})")
    return loaded[split]
