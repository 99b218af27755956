"""Bad input to ``geolip atlas build``: one error line, exit 2, nothing on stdout and every file
of the case's directory unchanged (no ``--out``, no ``--out.tmp-*`` staging directory, no parent
of ``--out`` made for it; an atlas already at ``--out`` byte-identical).

Every case is refused before Ray starts (the corpus is read up to its first document, ``--out``
and the flags are checked first), so each must finish within ``FAST_S`` seconds: a case that
started Ray would take tens. Atlases already at ``--out`` are written with
``atlas_testdata.write_atlas`` (pyarrow, no Ray). Flag mistakes are usage errors
(``argument --FLAG: ...``); size flags read ``atlas.config.parse_size`` (k = 1000, Ki = 1024).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from atlas_testdata import write_atlas
from battery_harness import Case, check_case

from atlas.config import AtlasConfig

FAST_S = 10
CORPUS = "file:{tmp}/corpus.txt"
BUILD = ("atlas", "build", "--corpus", CORPUS, "--out", "{tmp}/out")
SIZE_UNITS = "expected a number with optional k, M, G (x1000) or Ki, Mi, Gi (x1024)"


def corpus(tmp: Path) -> None:
    (tmp / "corpus.txt").write_text("the cat sat on the mat.\n" * 50, encoding="utf-8")


def empty_files(tmp: Path) -> None:
    corpus(tmp)
    (tmp / "empty.txt").write_text("")
    (tmp / "texts").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp / "texts" / name).write_text("")


def empty_dir(tmp: Path) -> None:
    corpus(tmp)
    (tmp / "emptydir").mkdir()


def unsupported(tmp: Path) -> None:
    corpus(tmp)
    (tmp / "notes.csv").write_text("a,b\n1,2\n")


def a_file(tmp: Path) -> None:
    corpus(tmp)
    (tmp / "afile").write_text("in the way\n")


def atlas_at_out(tmp: Path) -> None:
    """An atlas of another config at ``--out`` (``write_atlas``'s hash is not a real config's)."""
    corpus(tmp)
    write_atlas(tmp / "out")


def atlas_of_other_corpus(tmp: Path) -> None:
    """An atlas at ``--out`` with the default config's hash, of other text (its fingerprint)."""
    atlas_at_out(tmp)
    manifest_path = tmp / "out" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config_hash"] = AtlasConfig().config_hash()
    manifest_path.write_text(json.dumps(manifest, indent=2))


def not_an_atlas(tmp: Path) -> None:
    corpus(tmp)
    (tmp / "out").mkdir()
    (tmp / "out" / "keep.txt").write_text("mine\n")


def corrupt_manifest(tmp: Path) -> None:
    atlas_at_out(tmp)
    (tmp / "out" / "manifest.json").write_text("{nope")


def uri(name: str, corpus_uri: str, expect: str, setup=corpus) -> Case:
    """A case whose ``--corpus`` is ``corpus_uri``."""
    return Case(
        f"corpus-{name}",
        ("atlas", "build", "--corpus", corpus_uri, "--out", "{tmp}/out"),
        expect,
        setup=setup,
    )


def out(name: str, target: str, expect: str, setup, *more: str) -> Case:
    """A case whose ``--out`` is ``target``."""
    return Case(
        f"out-{name}",
        ("atlas", "build", "--corpus", CORPUS, "--out", target, *more),
        expect,
        setup=setup,
    )


def flag(name: str, value: str, expect: str, slug: str | None = None) -> Case:
    """``BUILD`` with a bad ``--FLAG=VALUE`` (the ``=`` form, so a negative value reaches the
    check), named ``FLAG-SLUG``; ``slug`` defaults to the value."""
    slug = slug or value.lower().replace("-", "minus")
    return Case(f"{name.strip('-')}-{slug}", (*BUILD, f"{name}={value}"), expect, setup=corpus)


def quotas(value: str, expect: str, slug: str) -> Case:
    """A bad ``--quotas=VALUE``: the line must say ``argument --quotas: EXPECT``."""
    return flag("--quotas", value, f"argument --quotas: {expect}", slug)


CORPUS_CASES = [
    uri("file-missing", "file:{tmp}/missing.txt", "corpus file not found"),
    uri(
        "empty-dir",
        "file:{tmp}/emptydir",
        "emptydir' is a directory but not one written by datasets' save_to_disk",
        setup=empty_dir,
    ),
    uri("empty-file", "file:{tmp}/empty.txt", "has no documents", setup=empty_files),
    uri("glob-of-empty-files", "file:{tmp}/texts/*.txt", "has no documents", setup=empty_files),
    uri("glob-empty", "file:{tmp}/*.nope", "no files match the glob"),
    uri("unsupported-file", "file:{tmp}/notes.csv", "unsupported corpus file", setup=unsupported),
    uri("malformed", "bogus", "malformed corpus URI 'bogus': expected SCHEME:TARGET"),
    uri("file-no-path", "file:", "malformed corpus URI 'file:': expected file:PATH_OR_GLOB"),
    uri("hf-no-name", "hf:", "malformed corpus URI 'hf:': expected hf:NAME[:CONFIG[:SPLIT]]"),
    uri("unknown-scheme", "ftp:corpus.txt", "unknown corpus scheme 'ftp'"),
    uri("unknown-builtin", "builtin:nope", "unknown builtin corpus 'nope'"),
    uri("hf-offline-not-cached", "hf:nope/nope", "the Hugging Face Hub is unreachable"),
    Case("corpus-missing-flag", ("atlas", "build", "--out", "{tmp}/out"), "required: --corpus"),
]

OUT_CASES = [
    out(
        "under-a-file",
        "{tmp}/afile/atlas",
        "which is a regular file; expected a directory",
        a_file,
    ),
    out("is-a-file", "{tmp}/afile", "afile is a regular file; expected a directory", a_file),
    out(
        "holds-atlas-of-other-config",
        "{tmp}/out",
        "holds an atlas built with another config (hash cafef00d1234",
        atlas_at_out,
    ),
    out(
        "holds-atlas-of-other-corpus",
        "{tmp}/out",
        "holds an atlas of other corpus data",
        atlas_of_other_corpus,
    ),
    out(
        "not-an-atlas",
        "{tmp}/out",
        "exists and is not an atlas; choose another --out",
        not_an_atlas,
    ),
    out(
        "not-an-atlas-overwrite",
        "{tmp}/out",
        "exists and is not an atlas; choose another --out",
        not_an_atlas,
        "--overwrite",
    ),
    out("manifest-corrupt", "{tmp}/out", "exists and is not an atlas", corrupt_manifest),
    Case("out-missing-flag", ("atlas", "build", "--corpus", CORPUS), "required: --out"),
]

FLAG_CASES = [
    flag("--target-size", "12x", f"argument --target-size: malformed size '12x': {SIZE_UNITS}"),
    flag("--target-size", "-5", "argument --target-size: malformed size '-5'"),
    flag("--target-size", "0", "argument --target-size: size '0' is not a positive whole number"),
    flag("--target-size", "1.5", "argument --target-size: size '1.5' is not a positive whole"),
    flag("--target-size", "12.9MB", "argument --target-size: malformed size '12.9MB'"),
    flag("--block-bytes", "0", "argument --block-bytes: size '0' is not a positive whole number"),
    flag("--block-bytes", "4X", f"argument --block-bytes: malformed size '4X': {SIZE_UNITS}"),
    flag("--block-bytes", "-4Mi", "argument --block-bytes: malformed size '-4Mi'"),
    quotas("char=1", "malformed quotas 'char=1': missing word, unicode", "missing"),
    quotas("bogus", "malformed quotas 'bogus': expected STRATUM=SHARE pairs", "not-pairs"),
    quotas(
        "char=a,word=0.5,unicode=a",
        "malformed quotas 'char=a,word=0.5,unicode=a': 'a' is not",
        "not-a-number",
    ),
    quotas("chars=1,word=0,unicode=0", "malformed quotas 'chars=1", "unknown-stratum"),
    quotas("char=0.5,word=0.6,unicode=0.1", "quotas must sum to 1", "sum-over-1"),
    quotas("char=-0.5,word=1.5,unicode=0", "char=-0.5 is not a share in [0, 1]", "negative"),
    flag("--cpus", "0", "argument --cpus: must be >= 1, got 0"),
    flag("--cpus", "two", "argument --cpus: expected a whole number, got 'two'"),
    flag("--partitions", "0", "argument --partitions: must be >= 1, got 0"),
    flag("--min-count", "0", "argument --min-count: must be >= 1, got 0"),
    flag("--min-count", "-2", "argument --min-count: must be >= 1, got -2"),
    flag("--heldout-fraction", "1.5", "argument --heldout-fraction: must be in [0, 1), got '1.5'"),
    flag("--heldout-fraction", "-0.1", "argument --heldout-fraction: must be in [0, 1)"),
    flag("--heldout-fraction", "nan", "argument --heldout-fraction: must be in [0, 1), got 'nan'"),
    flag("--heldout-fraction", "x", "argument --heldout-fraction: expected a number in [0, 1)"),
    flag("--split", "test", "argument --split: invalid choice: 'test'"),
]

CASES = CORPUS_CASES + OUT_CASES + FLAG_CASES


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_atlas_build_bad_input(case, tmp_path):
    started = time.monotonic()
    check_case(case, "atlas build", tmp_path, timeout=60)
    elapsed = time.monotonic() - started
    assert elapsed < FAST_S, f"{case.id}: {elapsed:.1f} s; was it refused before Ray started?"


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)
