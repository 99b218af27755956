"""``file:PATH_OR_GLOB`` corpora: ``.txt``, ``.jsonl``, ``.parquet`` and ``datasets`` directories.

Document ids are relative to the glob's fixed prefix (or the file's name for a single path), so the
train/validation split does not change when the data directory moves.

How each kind of file becomes documents:

- ``.txt``: one document per file, except that a file with WikiText top-level headings
  (a line `` = Title = ``) is one document per article, and a file over ``TXT_BLOCK_BYTES`` without
  such headings is one document per blank-line-separated block. Both exceptions exist so that a
  single big file still splits into train/validation by document. Text files are read with
  ``errors="surrogateescape"``: bytes that are not UTF-8 survive as escapes, and
  ``atlas.corpus.encode_text`` gives them back unchanged.
- ``.jsonl``: one document per line, from its ``text`` field (string); blank lines are skipped.
- ``.parquet``: one document per row of the ``text`` column.
- a directory written by ``datasets.Dataset.save_to_disk``: one document per row of ``text``.

Empty texts are skipped everywhere: they would otherwise add a bare ``"\\n"`` to the stream.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from atlas.corpus.uri import CorpusError, Document

if TYPE_CHECKING:
    import datasets

TXT_BLOCK_BYTES = 1 << 20
_TXT_CHUNK_CHARS = 8 << 20  # a text file is read in chunks of this many characters (whole lines)
SUPPORTED = (".txt", ".raw", ".jsonl", ".parquet")
"""``.raw`` is plain text: WikiText's raw release names its files ``wiki.{train,valid,test}.raw``."""
# The files `datasets.save_to_disk` writes: a Dataset has state.json, a DatasetDict has
# dataset_dict.json (and one Dataset directory per split).
_SAVED_MARKERS = ("state.json", "dataset_dict.json")
# " = Title = " but not the sub-heading " = = Section = = ".
_WIKI_HEADING = re.compile(r"^ = (?!=)[^\n]*[^=\n] = $", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n[ \t]*\n+")
_BATCH_ROWS = 4096


def resolve_paths(pattern: str, uri: str) -> list[tuple[str, Path]]:
    """``(doc_id prefix, path)`` for every file ``pattern`` names, sorted; errors name the URI."""
    if glob.has_magic(pattern):
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise CorpusError(f"no files match the glob {pattern!r} (from {uri!r})")
        base = _glob_base(pattern)
        return [(os.path.relpath(m, base).replace(os.sep, "/"), Path(m)) for m in matches]
    path = Path(pattern)
    if not path.exists():
        raise CorpusError(f"corpus file not found: {pattern!r} (from {uri!r})")
    return [(path.name, path)]


def _glob_base(pattern: str) -> str:
    """The longest leading directory of ``pattern`` without glob characters."""
    parts = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return os.path.join(*parts) if parts else "."


def iter_file_documents(pattern: str, uri: str) -> Iterator[Document]:
    """Documents from every file ``pattern`` matches, in sorted path order.

    Paths are resolved now, so a missing file or an empty glob raises before iteration.
    """
    paths = resolve_paths(pattern, uri)
    return (doc for prefix, path in paths for doc in _read_path(prefix, path))


def _read_path(prefix: str, path: Path) -> Iterator[Document]:
    if path.is_dir():
        return _read_saved_dataset(prefix, path)
    suffix = path.suffix.lower()
    if suffix in (".txt", ".raw"):
        return _read_txt(prefix, path)
    if suffix == ".jsonl":
        return _read_jsonl(prefix, path)
    if suffix == ".parquet":
        return _read_parquet(prefix, path)
    raise CorpusError(
        f"unsupported corpus file {str(path)!r}: expected one of {', '.join(SUPPORTED)} "
        "or a directory written by datasets' save_to_disk"
    )


def _read_txt(prefix: str, path: Path) -> Iterator[Document]:
    """The documents of a text file, streamed: WikiText articles are yielded as the file is read
    (the first one before the rest is read, so checking a corpus costs one chunk, not the file);
    a file without headings is read whole, as its pieces depend on its size and blank lines."""
    # Plain text is often not quite UTF-8 (a stray Latin-1 byte): keep the bytes rather than fail.
    pieces = _wiki_pieces(_line_chunks(path))
    try:
        first = next(pieces)
    except StopIteration as whole:
        text = whole.value  # no heading anywhere: the whole text
        if path.stat().st_size > TXT_BLOCK_BYTES:
            pieces = iter([p.strip("\n") + "\n" for p in _BLANK_LINES.split(text)])
            first = next(pieces)
        else:
            yield from _documents([(prefix, text)])
            return
    # Whitespace-only pieces (WikiText's blank preamble, trailing blank lines) carry no text.
    numbered = enumerate(itertools.chain([first], pieces))
    yield from _documents((f"{prefix}#{i}", piece) for i, piece in numbered if piece.strip())


def _wiki_pieces(chunks: Iterator[str]):
    """The text cut before every top-level heading (the text before the first heading, if any,
    is a piece of its own), one piece at a time; without any heading, nothing is yielded and
    the generator returns the whole text. ``chunks`` start at line starts, so a heading (one
    line) is never cut and ``^``/``$`` match exactly where they would in the whole text."""
    held: list[str] = []  # the open piece
    found = False
    for chunk in chunks:
        pos = 0
        for start in _heading_starts(chunk):
            held.append(chunk[pos:start])
            piece = "".join(held)
            if found or piece:  # the first heading at offset 0 opens the first piece
                yield piece
            found, held, pos = True, [], start
        held.append(chunk[pos:])
    if not found:
        return "".join(held)
    yield "".join(held)


def _heading_starts(text: str) -> Iterator[int]:
    """Where ``_WIKI_HEADING.finditer(text)`` matches, ~8x faster: only lines that begin with
    ``" = "`` (found with ``str.find``) are tried against the pattern, anchored there; the
    scan of every position for ``^`` is what makes ``finditer`` slow (~250 MB/s)."""
    if text.startswith(" = "):
        at = 0
    elif (at := text.find("\n = ") + 1) == 0:
        return
    while True:
        if (match := _WIKI_HEADING.match(text, at)) is not None:
            yield at
            at = match.end()
        next_line = text.find("\n = ", at)
        if next_line < 0:
            return
        at = next_line + 1


def _line_chunks(path: Path) -> Iterator[str]:
    """The decoded text of ``path`` in chunks of about ``_TXT_CHUNK_CHARS`` whole lines
    (universal newlines and surrogate escapes, as ``read_text`` decodes)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            while chunk := f.read(_TXT_CHUNK_CHARS):
                yield chunk + f.readline()
    except OSError as e:
        raise CorpusError(f"cannot read corpus file {str(path)!r}: {e}") from e


def _read_text_file(path: Path, errors: str = "strict") -> str:
    try:
        return path.read_text(encoding="utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise CorpusError(f"corpus file {str(path)!r} is not UTF-8 text: {e}") from e
    except OSError as e:
        raise CorpusError(f"cannot read corpus file {str(path)!r}: {e}") from e


def _read_jsonl(prefix: str, path: Path) -> Iterator[Document]:
    for lineno, line in enumerate(_read_text_file(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path}:{lineno}: invalid JSON ({e.msg})") from e
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise CorpusError(f"{path}:{lineno}: expected a JSON object with a string 'text' field")
        if text:
            yield Document(f"{prefix}#{lineno}", text)


def _read_parquet(prefix: str, path: Path) -> Iterator[Document]:
    import pyarrow.parquet as pq  # lazy: pyarrow costs ~0.3 s to import

    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for non-Parquet input
        raise CorpusError(f"cannot read Parquet file {str(path)!r}: {e}") from e
    names = parquet.schema_arrow.names
    if "text" not in names:
        raise CorpusError(f"Parquet file {str(path)!r} has no 'text' column (columns: {names})")
    batches = parquet.iter_batches(batch_size=_BATCH_ROWS, columns=["text"])
    texts = (t for batch in batches for t in batch.column(0).to_pylist())
    yield from _documents((f"{prefix}#{i}", t) for i, t in enumerate(texts))


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a directory written by ``datasets``' ``save_to_disk``."""
    return path.is_dir() and any((path / m).is_file() for m in _SAVED_MARKERS)


def _read_saved_dataset(prefix: str, path: Path) -> Iterator[Document]:
    if not is_saved_dataset(path):
        raise CorpusError(
            f"{str(path)!r} is a directory but not one written by datasets' save_to_disk "
            "(no state.json); name its files with a glob instead, e.g. file:DIR/*.txt"
        )
    import datasets  # lazy: a slow import that only this format needs

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        raise CorpusError(
            f"{str(path)!r} holds a DatasetDict with splits {sorted(loaded)}; "
            f"name one split's directory, e.g. file:{path / sorted(loaded)[0]}"
        )
    yield from dataset_documents(loaded, prefix, str(path))


def dataset_documents(dataset: datasets.Dataset, prefix: str, source: str) -> Iterator[Document]:
    """Documents from the ``text`` column of a ``datasets.Dataset``, ``doc_id = prefix#row``."""
    names = dataset.column_names
    if "text" not in names:
        raise CorpusError(f"dataset {source!r} has no 'text' column (columns: {names})")
    batches = dataset.select_columns(["text"]).iter(batch_size=_BATCH_ROWS)
    texts = (t for batch in batches for t in batch["text"])
    yield from _documents((f"{prefix}#{i}", t) for i, t in enumerate(texts))


def _documents(pairs: Iterable[tuple[str, str | None]]) -> Iterator[Document]:
    """Wrap ``(doc_id, text)`` pairs, skipping empty or null texts."""
    for doc_id, text in pairs:
        if text:
            yield Document(doc_id, text)
