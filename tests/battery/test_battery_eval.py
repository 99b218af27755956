"""Bad input to ``geolip eval aleph`` and ``geolip eval contrast``: one error line, exit 2, nothing on stdout and every file of the case's directory unchanged
(no ``data/`` with shards, no ``mlflow.db``: each case fails before any scoring or tracking).

One tiny pmix checkpoint is saved per module (no Ray) and copied, with a small corpus file, into
each case's directory by its setup. Flag mistakes are usage errors (``argument --FLAG: ...``).
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
from pathlib import Path

import pytest
from battery_harness import Case, check_case

CORPUS = "file:{tmp}/corpus.txt"
EVAL = ("eval", "aleph", "{tmp}/ck", "--corpus", CORPUS, "--no-compressors")
CONTRAST = ("eval", "contrast", "{tmp}/ck", "--corpus", CORPUS)


def corpus(tmp: Path) -> None:
    (tmp / "corpus.txt").write_text("the cat sat on the mat.\n" * 200, encoding="utf-8")


def checkpoint(source: Path, tmp: Path) -> None:
    """The checkpoint and the corpus under the case's directory."""
    shutil.copytree(source, tmp / "ck")
    corpus(tmp)


def no_checkpoint(source: Path, tmp: Path) -> None:
    corpus(tmp)


def checkpoint_is_a_file(source: Path, tmp: Path) -> None:
    corpus(tmp)
    (tmp / "ck").write_text("not a checkpoint\n")


def corrupt_meta(source: Path, tmp: Path) -> None:
    checkpoint(source, tmp)
    (tmp / "ck" / "meta.json").write_text("[1]")


def flag(argv: tuple[str, ...], name: str, value: str, expect: str) -> Case:
    """``argv`` with a bad ``--FLAG=VALUE`` (the ``=`` form: a negative value reaches the check)."""
    slug = value.lower().replace("-", "minus").replace(",", "_")[:16] or "empty"
    command = "-".join(argv[:2])
    return Case(
        f"{command}-{name.strip('-')}-{slug}",
        (*argv, f"{name}={value}"),
        expect,
        setup=checkpoint,
    )


VALID_OPS = "valid ones: permute, randomize, rotate, signflip"
TWO_TRIGRAMS = "must be >= 6 (the evaluation scores at least 2 trigrams)"

EVAL_CASES = [
    flag(EVAL, "--eval-bytes", "-1", f"argument --eval-bytes: {TWO_TRIGRAMS}, got -1"),
    flag(EVAL, "--eval-bytes", "0", f"argument --eval-bytes: {TWO_TRIGRAMS}, got 0"),
    flag(EVAL, "--eval-bytes", "5", f"argument --eval-bytes: {TWO_TRIGRAMS}, got 5"),
    flag(EVAL, "--eval-bytes", "1e6", "argument --eval-bytes: expected a whole number, got '1e6'"),
    flag(EVAL, "--streams", "0", "argument --streams: must be >= 1, got 0"),
    flag(EVAL, "--streams", "-3", "argument --streams: must be >= 1, got -3"),
    flag(EVAL, "--prime-bytes", "-1", "argument --prime-bytes: must be >= 0, got -1"),
    flag(EVAL, "--format", "xml", "argument --format: invalid choice: 'xml'"),
    Case(
        "eval-aleph-eval-bytes-too-few-for-streams",
        (*EVAL, "--eval-bytes", "20"),
        "--eval-bytes 20 is too few for --streams 8: each stream scores at least 2 trigrams, "
        "so --eval-bytes must be >= 48",
        setup=checkpoint,
    ),
    Case(
        "eval-aleph-corpus-malformed",
        ("eval", "aleph", "{tmp}/ck", "--corpus", "bogus"),
        "malformed corpus URI 'bogus': expected SCHEME:TARGET",
        setup=checkpoint,
    ),
    Case(
        "eval-aleph-corpus-unknown-scheme",
        ("eval", "aleph", "{tmp}/ck", "--corpus", "ftp:corpus.txt"),
        "unknown corpus scheme 'ftp'",
        setup=checkpoint,
    ),
    Case(
        "eval-aleph-corpus-unknown-builtin",
        ("eval", "aleph", "{tmp}/ck", "--corpus", "builtin:nope"),
        "unknown builtin corpus 'nope'",
        setup=checkpoint,
    ),
    Case(
        "eval-aleph-corpus-file-missing",
        ("eval", "aleph", "{tmp}/ck", "--corpus", "file:{tmp}/missing.txt"),
        "corpus file not found",
        setup=checkpoint,
    ),
    Case(
        "eval-aleph-corpus-glob-empty",
        ("eval", "aleph", "{tmp}/ck", "--corpus", "file:{tmp}/*.nope"),
        "no files match the glob",
        setup=checkpoint,
    ),
    Case("eval-aleph-no-corpus", ("eval", "aleph", "{tmp}/ck"), "required: --corpus"),
    Case("eval-aleph-missing-checkpoint", EVAL, "ck does not exist", setup=no_checkpoint),
    Case(
        "eval-aleph-checkpoint-is-a-file",
        EVAL,
        "ck is a file, not a directory",
        setup=checkpoint_is_a_file,
    ),
    Case(
        "eval-aleph-meta-not-object",
        EVAL,
        "meta.json holds a JSON array; expected a JSON object",
        setup=corrupt_meta,
    ),
]

CONTRAST_CASES = [
    flag(CONTRAST, "--seeds", "0", "argument --seeds: must be >= 1, got 0"),
    flag(CONTRAST, "--windows", "0", "argument --windows: must be >= 1, got 0"),
    flag(CONTRAST, "--ops", "bogus", f"argument --ops: unknown ablation 'bogus'; {VALID_OPS}"),
    flag(CONTRAST, "--ops", "permute,bogus", "argument --ops: unknown ablation 'bogus'"),
    flag(CONTRAST, "--ops", ",", f"argument --ops: no ablation given; {VALID_OPS}"),
    flag(CONTRAST, "--scope", "nope", "argument --scope: invalid choice: 'nope'"),
    flag(CONTRAST, "--eval-bytes", "0", f"argument --eval-bytes: {TWO_TRIGRAMS}, got 0"),
    Case(
        "eval-contrast-eval-bytes-under-one-window",
        (*CONTRAST, "--eval-bytes", "50"),
        "--eval-bytes 50 is shorter than one contrast window of this model (33 trigrams, 99 "
        "bytes); use --eval-bytes >= 99",
        setup=checkpoint,
    ),
    Case(
        "eval-contrast-corpus-file-missing",
        ("eval", "contrast", "{tmp}/ck", "--corpus", "file:{tmp}/missing.txt"),
        "corpus file not found",
        setup=checkpoint,
    ),
    Case("eval-contrast-missing-checkpoint", CONTRAST, "ck does not exist", setup=no_checkpoint),
]

CASES = EVAL_CASES + CONTRAST_CASES


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_eval_bad_input(case, source, tmp_path):
    if case.setup is not None:
        case = dataclasses.replace(case, setup=functools.partial(case.setup, source))
    check_case(case, " ".join(case.argv[:2]), tmp_path)


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)
