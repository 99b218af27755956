"""Deterministic train/validation splits and the byte stream a training run consumes.

A document goes to validation when ``sha256(salt, doc_id)`` maps below ``heldout_fraction``: the
split is the same on every machine and run (Python's ``hash()`` is salted per process), and a
document keeps its side when other documents are added or removed.

Documents are the unit of the split ("document" mode). A source with few documents can leave one
side empty (20 documents at 5 % leave validation empty 36 % of the time); the split then falls back
to "bytes" mode: the concatenated stream is cut once, and its last ~``heldout_fraction`` of bytes
(starting at a line start when possible) is validation. The mode used is recorded.

The stream is the documents' UTF-8 text concatenated with no separator, each document ending with
``"\\n"`` (one is appended when missing). Text is encoded with ``encode_text``: bytes that a
``.txt`` file held but that are not UTF-8 were decoded as surrogate escapes and come back unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from atlas.corpus.sources import iter_documents
from atlas.corpus.uri import CorpusError, CorpusSpec, Document, parse_uri

SPLITS = ("train", "validation")
DEFAULT_SALT = "geolip"
DEFAULT_HELDOUT = 0.05


def encode_text(text: str) -> bytes:
    """UTF-8 bytes of ``text``, restoring raw bytes decoded with ``errors="surrogateescape"``.

    A lone surrogate outside the escape range (e.g. from a JSON ``"\\ud800"``) has no byte to
    restore; such a text is encoded with ``surrogatepass`` instead of failing.
    """
    try:
        return text.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="surrogatepass")


def assign_split(
    doc_id: str,
    text: str | None = None,
    heldout_fraction: float = DEFAULT_HELDOUT,
    salt: str = DEFAULT_SALT,
) -> str:
    """``"train"`` or ``"validation"`` for one document, from ``sha256(salt + "\\0" + doc_id)``.

    ``text`` is accepted so callers can pass a whole document, but does not enter the hash: a
    document whose text is corrected stays on its side of the split.
    """
    digest = hashlib.sha256(f"{salt}\0{doc_id}".encode()).digest()
    # The first 8 bytes as a uniform number in [0, 1).
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "validation" if u < heldout_fraction else "train"


@dataclass
class SplitStats:
    """Filled in while a split is iterated: ``mode`` is ``"document"`` or ``"bytes"``."""

    mode: str | None = None


def split_documents(
    docs: Iterable[Document],
    split: str,
    heldout_fraction: float = DEFAULT_HELDOUT,
    salt: str = DEFAULT_SALT,
    stats: SplitStats | None = None,
    source: str | None = None,
) -> Iterator[Document]:
    """The documents of ``docs`` on side ``split``, each text ending with ``"\\n"``.

    Streams once both sides have received a document; until then documents are held back, because
    a source that never fills both sides is split in "bytes" mode instead (see the module doc).
    ``source`` (the corpus URI) names the corpus when it turns out to hold no document.
    """
    _check(split, heldout_fraction)
    stats = SplitStats() if stats is None else stats
    pending: list[tuple[str, Document]] = []
    for doc in map(_terminated, docs):
        side = assign_split(doc.doc_id, doc.text, heldout_fraction, salt)
        if stats.mode == "document":
            if side == split:
                yield doc
            continue
        pending.append((side, doc))
        # Everything pending so far is on pending[0]'s side, so a different side means both are
        # filled. heldout_fraction == 0 means "no validation": stream without waiting for one.
        if heldout_fraction == 0 or side != pending[0][0]:
            stats.mode = "document"
            yield from (d for s, d in pending if s == split)
            pending = []
    if stats.mode == "document":
        return
    if not pending:
        what = f"corpus {source!r}" if source else "the corpus"
        raise CorpusError(f"{what} has no documents: all the text it names is empty")
    stats.mode = "bytes"
    yield from _tail_split([d for _, d in pending], split, heldout_fraction)


def _check(split: str, heldout_fraction: float) -> None:
    if split not in SPLITS:
        raise CorpusError(f"unknown split {split!r}: expected 'train' or 'validation'")
    if not 0 <= heldout_fraction < 1:
        raise CorpusError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")


def _terminated(doc: Document) -> Document:
    return doc if doc.text.endswith("\n") else Document(doc.doc_id, doc.text + "\n")


def _tail_split(docs: list[Document], split: str, heldout_fraction: float) -> Iterator[Document]:
    """Cut the stream of ``docs`` once; bytes after the cut are validation.

    The document that straddles the cut is split in two; its validation piece is named
    ``doc_id@BYTE_OFFSET``.
    """
    encoded = [encode_text(d.text) for d in docs]
    cut = tail_cut(b"".join(encoded), heldout_fraction)
    start = 0
    for doc, data in zip(docs, encoded):
        end = start + len(data)
        whole_side = "train" if end <= cut else "validation" if start >= cut else None
        if whole_side == split:
            yield doc
        elif whole_side is None:
            k = cut - start
            if split == "train":
                yield Document(doc.doc_id, data[:k].decode("utf-8", errors="surrogateescape"))
            else:
                piece = data[k:].decode("utf-8", errors="surrogateescape")
                yield Document(f"{doc.doc_id}@{k}", piece)
        start = end


def tail_cut(data: bytes, heldout_fraction: float) -> int:
    """Offset where validation starts in "bytes" mode; both sides are non-empty if ``len > 1``.

    The first line start at or after ``len - round(fraction * len)``; when that falls in the last
    line, the target itself, moved forward to a UTF-8 character boundary.
    """
    n = len(data)
    if n < 2:
        return n
    target = min(max(n - max(1, round(heldout_fraction * n)), 1), n - 1)
    newline = data.find(b"\n", target - 1)
    if 0 <= newline < n - 1:
        return newline + 1
    # 0b10xxxxxx bytes continue a multi-byte character; a cut there would not decode.
    while target < n - 1 and data[target] & 0xC0 == 0x80:
        target += 1
    return target


def iter_split(
    uri: str | CorpusSpec,
    split: str,
    heldout_fraction: float = DEFAULT_HELDOUT,
    stats: SplitStats | None = None,
) -> Iterator[Document]:
    """The ``split`` side of the corpus ``uri`` (see ``split_documents``)."""
    spec = parse_uri(uri)
    _check(split, heldout_fraction)
    docs = iter_documents(spec)
    return split_documents(docs, split, heldout_fraction, stats=stats, source=str(spec))


def fingerprint(data: bytes) -> str:
    """First 16 hex digits of ``sha256(data)``: names a corpus stream in records and caches."""
    return hashlib.sha256(data).hexdigest()[:16]


def corpus_bytes(
    uri: str | CorpusSpec, split: str, heldout_fraction: float = DEFAULT_HELDOUT
) -> tuple[bytes, dict]:
    """The UTF-8 stream of one side of a corpus, and a record of how it was made.

    The record holds ``uri`` (canonical), ``split``, ``n_docs``, ``n_bytes``,
    ``heldout_fraction``, ``split_mode`` (``"document"`` or ``"bytes"``) and ``fingerprint``.
    """
    spec = parse_uri(uri)
    stats = SplitStats()
    chunks = [encode_text(d.text) for d in iter_split(spec, split, heldout_fraction, stats)]
    data = b"".join(chunks)
    record = {
        "uri": str(spec),
        "split": split,
        "n_docs": len(chunks),
        "n_bytes": len(data),
        "heldout_fraction": heldout_fraction,
        "split_mode": stats.mode,
        "fingerprint": fingerprint(data),
    }
    return data, record
