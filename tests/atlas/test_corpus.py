"""Corpus URIs, readers for every scheme, and the deterministic train/validation split."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas.corpus import (
    CorpusError,
    CorpusSpec,
    Document,
    SplitStats,
    assign_split,
    builtin,
    corpus_bytes,
    files,
    fingerprint,
    iter_documents,
    iter_split,
    parse_uri,
    split_documents,
)


@pytest.fixture(scope="module")
def python_docs() -> list[Document]:
    # Parsing the whole stdlib takes seconds: read it once for the module.
    return list(iter_documents("builtin:python-docs"))


def stream(docs: list[Document]) -> bytes:
    return b"".join(d.text.encode() for d in docs)


# --- URIs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "spec"),
    [
        ("builtin:tiny", CorpusSpec("builtin", "tiny")),
        ("file:data/*.txt", CorpusSpec("file", "data/*.txt")),
        ("file:///abs/a:b.txt", CorpusSpec("file", "/abs/a:b.txt")),
        ("hf:wikitext", CorpusSpec("hf", "wikitext")),
        ("hf:wikitext:wikitext-2-raw-v1", CorpusSpec("hf", "wikitext", "wikitext-2-raw-v1")),
        ("hf:wikitext:w2:test", CorpusSpec("hf", "wikitext", "w2", "test")),
        ("hf:/data/local::validation", CorpusSpec("hf", "/data/local", None, "validation")),
    ],
)
def test_parse_uri(uri: str, spec: CorpusSpec) -> None:
    assert parse_uri(uri) == spec
    assert parse_uri(str(spec)) == spec


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("wikitext", "expected SCHEME:TARGET"),
        ("s3:bucket/x", "unknown corpus scheme 's3'"),
        ("builtin:nope", "expected one of python-docs, tiny"),
        ("hf:a:b:c:d", "expected hf:NAME[:CONFIG[:SPLIT]]"),
        ("hf::cfg", "expected hf:NAME"),
        ("file:", "expected file:PATH_OR_GLOB"),
    ],
)
def test_parse_uri_rejects_malformed(uri: str, expected: str) -> None:
    with pytest.raises(CorpusError) as info:
        parse_uri(uri)
    assert repr(uri) in str(info.value) and expected in str(info.value)
    assert isinstance(info.value, ValueError)


# --- builtin: -----------------------------------------------------------------------------------


def test_python_docs_is_deterministic_text(python_docs: list[Document]) -> None:
    ids = [d.doc_id for d in python_docs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and len(ids) > 100
    assert all(i.endswith(".py") and not i.startswith("/") for i in ids)
    assert not any(set(i.split("/")[:-1]) & builtin.SKIPPED_DIRS for i in ids)
    data = stream(python_docs)
    assert len(data) > 1_000_000
    text = data.decode("utf-8")
    assert "\x00" not in text and all(d.text.endswith("\n") for d in python_docs)
    assert sum(c.isascii() for c in text) / len(text) > 0.999
    # A second pass gives the same files in the same order and, for a sample of files (a full
    # pass costs seconds), the same text.
    sources = dict(builtin.stdlib_sources())
    assert list(sources) == [rel for rel, _ in builtin.stdlib_sources()]
    assert set(ids) <= set(sources)
    for doc in python_docs[:: len(python_docs) // 8]:
        assert "\n\n".join(builtin.file_docstrings(sources[doc.doc_id])) + "\n" == doc.text


def test_python_docs_extracts_docstrings_in_order(tmp_path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "test").mkdir()
    source = '"""Module."""\nclass A:\n    """Class A."""\n    def f(self):\n        """F."""\n'
    (tmp_path / "pkg" / "m.py").write_text(source)
    (tmp_path / "pkg" / "bad.py").write_text("def (:\n")
    (tmp_path / "pkg" / "nodoc.py").write_text("x = 1\n")
    (tmp_path / "test" / "t.py").write_text('"""Skipped."""\n')
    docs = list(builtin.python_docs(tmp_path))
    assert docs == [Document("pkg/m.py", "Module.\n\nClass A.\n\nF.\n")]


def test_tiny() -> None:
    docs = list(iter_documents("builtin:tiny"))
    assert len(docs) == len(builtin.TINY_PARAGRAPHS) and len({d.doc_id for d in docs}) == len(docs)
    assert 2_000 < len(stream(docs)) < 8_000
    assert docs == list(iter_documents("builtin:tiny"))


# --- file: --------------------------------------------------------------------------------------


def test_txt_files_by_glob_and_path(tmp_path) -> None:
    (tmp_path / "b.txt").write_text("second file\n")
    (tmp_path / "a.txt").write_text("first file\n\nstill first\n")
    docs = list(iter_documents(f"file:{tmp_path}/*.txt"))
    assert docs == [
        Document("a.txt", "first file\n\nstill first\n"),
        Document("b.txt", "second file\n"),
    ]
    assert list(iter_documents(f"file:{tmp_path / 'b.txt'}")) == [
        Document("b.txt", "second file\n")
    ]


def test_txt_wikitext_articles(tmp_path) -> None:
    text = (
        " \n = Alpha = \n\n Alpha text .\n\n = = Part = = \n\n more .\n = Beta = \n\n Beta text .\n"
    )
    (tmp_path / "wiki.train.txt").write_text(text)
    docs = list(iter_documents(f"file:{tmp_path}/wiki.train.txt"))
    assert [d.doc_id for d in docs] == ["wiki.train.txt#1", "wiki.train.txt#2"]
    assert docs[0].text.startswith(" = Alpha = ") and "= = Part = =" in docs[0].text
    assert docs[1].text == " = Beta = \n\n Beta text .\n"
    # WikiText's raw release (wiki.train.raw ...) is the same plain text.
    (tmp_path / "wiki.valid.raw").write_text(text)
    raw = list(iter_documents(f"file:{tmp_path}/wiki.*.raw"))
    assert [d.text for d in raw] == [d.text for d in docs]


@pytest.mark.parametrize("chunk", [1, 7, 40, 1 << 20])
def test_txt_read_in_chunks_is_the_whole_file_read_at_once(tmp_path, monkeypatch, chunk) -> None:
    """A text file is streamed in chunks of whole lines: any chunk size gives the documents of
    the whole text read at once (a preamble, CRLF lines, a stray byte, a heading at the start
    of a chunk; and a file without headings, cut by blank lines)."""
    article = " = Alpha = \r\n\r\n Alpha text \xff .\r\n = = Part = = \r\n more \xc3\n"
    texts = {
        # latin-1: the \xff and \xc3 are raw bytes that are not UTF-8.
        "wiki.txt": b"preamble line\n\n" + article.encode("latin-1") + b" = Beta = \n b .\n\n",
        "starts.txt": b" = Gamma = \n g\n = Delta = \n d\n",
        "plain.txt": b"one\ntwo\n\n\nthree\n  \nfour\n\n",
    }
    monkeypatch.setattr(files, "TXT_BLOCK_BYTES", 10)
    whole = {}
    for name, data in texts.items():
        (tmp_path / name).write_bytes(data)
        whole[name] = list(iter_documents(f"file:{tmp_path}/{name}"))
    monkeypatch.setattr(files, "_TXT_CHUNK_CHARS", chunk)
    for name in texts:
        assert list(iter_documents(f"file:{tmp_path}/{name}")) == whole[name]
    wiki = whole["wiki.txt"]
    assert [d.doc_id for d in wiki] == ["wiki.txt#0", "wiki.txt#1", "wiki.txt#2"]
    assert wiki[1].text.startswith(" = Alpha = \n\n") and "\r" not in wiki[1].text
    assert wiki[1].text.encode("utf-8", "surrogateescape").count(b"\xff") == 1
    assert [d.doc_id for d in whole["starts.txt"]] == ["starts.txt#0", "starts.txt#1"]
    assert [d.text for d in whole["plain.txt"]] == ["one\ntwo\n", "three\n", "four\n"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([" = ", "=", " ", "\n", "a", "= ", " =", "\r"]), max_size=40))
def test_heading_scan_finds_what_the_pattern_finds(parts: list[str]) -> None:
    text = "".join(parts)
    expected = [m.start() for m in files._WIKI_HEADING.finditer(text)]
    assert list(files._heading_starts(text)) == expected


def test_big_txt_splits_into_blocks(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(files, "TXT_BLOCK_BYTES", 10)
    (tmp_path / "big.txt").write_text("one\ntwo\n\n\nthree\n  \nfour\n\n")
    docs = list(iter_documents(f"file:{tmp_path}/big.txt"))
    assert [d.text for d in docs] == ["one\ntwo\n", "three\n", "four\n"]


def test_jsonl_recursive_glob(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    lines = [json.dumps({"text": "hello"}), "", json.dumps({"text": "", "x": 1}), '{"text": "x"}']
    (tmp_path / "sub" / "d.jsonl").write_text("\n".join(lines) + "\n")
    docs = list(iter_documents(f"file:{tmp_path}/**/*.jsonl"))
    assert docs == [Document("sub/d.jsonl#1", "hello"), Document("sub/d.jsonl#4", "x")]


def test_parquet(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [1, 2, 3], "text": ["alpha\n", None, "gamma"]})
    pq.write_table(table, tmp_path / "p.parquet")
    docs = list(iter_documents(f"file:{tmp_path}/p.parquet"))
    assert docs == [Document("p.parquet#0", "alpha\n"), Document("p.parquet#2", "gamma")]


def test_saved_dataset_directory(tmp_path) -> None:
    import datasets

    ds = datasets.Dataset.from_dict({"text": ["one", "two"], "n": [1, 2]})
    ds.save_to_disk(str(tmp_path / "saved"))
    docs = list(iter_documents(f"file:{tmp_path / 'saved'}"))
    assert docs == [Document("saved#0", "one"), Document("saved#1", "two")]
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(CorpusError, match="DatasetDict with splits"):
        list(iter_documents(f"file:{tmp_path / 'dict'}"))


def _bad(uri: str) -> str:
    with pytest.raises(CorpusError) as info:
        list(iter_documents(uri))
    return str(info.value)


def test_file_errors_name_the_path(tmp_path) -> None:
    missing = tmp_path / "missing.txt"
    assert str(missing) in _bad(f"file:{missing}") and "not found" in _bad(f"file:{missing}")
    assert "no files match" in _bad(f"file:{tmp_path}/*.jsonl")
    (tmp_path / "x.csv").write_text("text\nhi\n")
    message = _bad(f"file:{tmp_path}/x.csv")
    assert "x.csv" in message and ".parquet" in message
    (tmp_path / "plain").mkdir()
    assert "save_to_disk" in _bad(f"file:{tmp_path}/plain")
    (tmp_path / "a.jsonl").write_text('{"body": "hi"}\n')
    assert f"{tmp_path}/a.jsonl:1" in _bad(f"file:{tmp_path}/a.jsonl")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    assert "invalid JSON" in _bad(f"file:{tmp_path}/bad.jsonl")

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["hi"]}), tmp_path / "p.parquet")
    message = _bad(f"file:{tmp_path}/p.parquet")
    assert "p.parquet" in message and "no 'text' column" in message and "body" in message


# --- hf: ----------------------------------------------------------------------------------------


@pytest.fixture
def offline_hf(tmp_path, monkeypatch):
    """Offline Hub and a throwaway cache; datasets reads both settings at import time."""
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path


def test_hf_local_dataset_through_load_dataset(offline_hf) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = offline_hf / "local"
    root.mkdir()
    pq.write_table(pa.table({"text": ["a b c\n", "", "d e\n"]}), root / "train.parquet")
    pq.write_table(pa.table({"text": ["held\n"]}), root / "validation.parquet")
    assert list(iter_documents(f"hf:{root}")) == [
        Document("train#0", "a b c\n"),
        Document("train#2", "d e\n"),
    ]
    assert list(iter_documents(f"hf:{root}::validation")) == [Document("validation#0", "held\n")]
    message = _bad(f"hf:{root}::test")
    assert f"hf:{root}::test" in message and "test" in message


def test_hf_saved_dataset_and_offline_errors(offline_hf) -> None:
    import datasets

    ds = datasets.Dataset.from_dict({"text": ["x\n"]})
    datasets.DatasetDict({"train": ds}).save_to_disk(str(offline_hf / "dd"))
    assert list(iter_documents(f"hf:{offline_hf / 'dd'}")) == [Document("train#0", "x\n")]
    message = _bad("hf:geolip-no-such-dataset:cfg")
    assert "hf:geolip-no-such-dataset:cfg" in message and "unreachable" in message


# --- splits -------------------------------------------------------------------------------------


def test_assign_split_is_a_salted_sha256() -> None:
    ids = [f"doc-{i}" for i in range(20_000)]
    held = [i for i in ids if assign_split(i, None, 0.05) == "validation"]
    assert 0.04 < len(held) / len(ids) < 0.06
    for i in ids[:50]:
        u = int.from_bytes(hashlib.sha256(f"geolip\0{i}".encode()).digest()[:8], "big") / 2**64
        assert assign_split(i, "any text") == ("validation" if u < 0.05 else "train")
    assert held != [i for i in ids if assign_split(i, None, 0.05, salt="other") == "validation"]


def test_document_split_partitions_python_docs(python_docs: list[Document]) -> None:
    parts = {}
    for split in ("train", "validation"):
        stats = SplitStats()
        parts[split] = list(split_documents(python_docs, split, 0.05, stats=stats))
        assert stats.mode == "document"
    train_ids = {d.doc_id for d in parts["train"]}
    held_ids = {d.doc_id for d in parts["validation"]}
    assert not train_ids & held_ids
    assert train_ids | held_ids == {d.doc_id for d in python_docs}
    assert 0.01 < len(held_ids) / len(python_docs) < 0.12
    # Order within a side is the source order.
    order = [d.doc_id for d in python_docs]
    assert [d.doc_id for d in parts["train"]] == [i for i in order if i in train_ids]


def test_corpus_bytes_record_and_coverage() -> None:
    train, rec = corpus_bytes("builtin:tiny", "train")
    held, rec_v = corpus_bytes("builtin:tiny", "validation")
    assert (train, rec) == corpus_bytes("builtin:tiny", "train")
    assert rec["fingerprint"] == hashlib.sha256(train).hexdigest()[:16] == fingerprint(train)
    assert rec["n_bytes"] == len(train) and rec["uri"] == "builtin:tiny"
    assert rec.keys() == {
        "uri",
        "split",
        "n_docs",
        "n_bytes",
        "heldout_fraction",
        "split_mode",
        "fingerprint",
    }
    docs = list(iter_documents("builtin:tiny"))
    assert rec["n_docs"] + rec_v["n_docs"] == len(docs) and held
    assert sorted(stream(docs).splitlines()) == sorted((train + held).splitlines())


def test_bytes_mode_fallback_for_few_documents() -> None:
    docs = [Document(f"d{i}", f"line {i} of a small corpus\n" * 20) for i in range(3)]
    ids = [d.doc_id for d in docs]
    assert all(assign_split(i, None, 0.05) == "train" for i in ids)  # why the fallback is needed
    sides = {}
    for split in ("train", "validation"):
        stats = SplitStats()
        sides[split] = stream(list(split_documents(docs, split, 0.05, stats=stats)))
        assert stats.mode == "bytes"
    assert sides["train"] + sides["validation"] == stream(docs)
    assert 0.03 < len(sides["validation"]) / len(stream(docs)) < 0.08
    assert sides["validation"].startswith(b"line 2")


def test_bytes_mode_single_line_cuts_on_a_character() -> None:
    docs = [Document("only", "é" * 100)]
    train = stream(list(split_documents(docs, "train", 0.05)))
    held = stream(list(split_documents(docs, "validation", 0.05)))
    assert train + held == ("é" * 100 + "\n").encode() and held and train
    held.decode("utf-8")


def test_zero_heldout_and_bad_arguments(tmp_path) -> None:
    data, rec = corpus_bytes("builtin:tiny", "train", heldout_fraction=0)
    assert data == stream(list(split_documents(iter_documents("builtin:tiny"), "train", 0)))
    assert corpus_bytes("builtin:tiny", "validation", 0)[1]["n_bytes"] == 0
    with pytest.raises(CorpusError, match="unknown split 'test'"):
        iter_split("builtin:tiny", "test")
    with pytest.raises(CorpusError, match=r"heldout_fraction must be in \[0, 1\)"):
        iter_split("builtin:tiny", "train", 1.0)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(CorpusError, match="has no documents"):
        corpus_bytes(f"file:{tmp_path}/empty.jsonl", "train")


def test_atlas_corpus_does_not_import_torch() -> None:
    code = (
        "import sys, atlas.corpus as c; c.corpus_bytes('builtin:tiny', 'train'); "
        "assert 'torch' not in sys.modules, 'atlas imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
