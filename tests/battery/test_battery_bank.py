"""Bad input to ``geolip bank build`` and ``geolip bank stats``: one error line, exit 2, nothing
on stdout and every file of the case's directory unchanged (an existing bank file byte-identical,
no bank and no temporary file written next to ``--out``).

Atlases are written with ``atlas_testdata.write_atlas`` (pyarrow, no Ray; 130 distinct trigrams)
and banks straight with safetensors, so each case's fixtures are under its own directory. No
case needs Ray: each must finish within ``FAST_S`` seconds. ``--size`` reads
``atlas.config.parse_size`` like every size flag (k = 1000, Ki = 1024): the ``size-64ki`` and
``size-64k`` cases get past the flag and are refused for the atlas being too small, with the size
the unit gave.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from atlas_testdata import write_atlas
from battery_harness import Case, check_case
from safetensors.numpy import save_file

FAST_S = 10
A = "{tmp}/atlas"
OUT = "{tmp}/bank.safetensors"
BUILD = ("bank", "build", "--atlas", A, "--size", "16", "--out", OUT)
BANK = OUT
NOT_A_BANK = "expected a .safetensors file written by `geolip bank build`"


def atlas(tmp: Path) -> None:
    write_atlas(tmp / "atlas")


def validation_atlas(tmp: Path) -> None:
    write_atlas(tmp / "atlas", split="validation")


def plain_dir(tmp: Path) -> None:
    (tmp / "plain").mkdir()
    (tmp / "plain" / "notes.txt").write_text("hello\n")


def empty_dir(tmp: Path) -> None:
    (tmp / "emptydir").mkdir()


def a_file(tmp: Path) -> None:
    atlas(tmp)
    (tmp / "afile").write_text("in the way\n")


def atlas_and_dir(tmp: Path) -> None:
    atlas(tmp)
    plain_dir(tmp)


def existing_bank(tmp: Path) -> None:
    atlas(tmp)
    (tmp / "bank.safetensors").write_bytes(b"an earlier bank, kept byte for byte\n")


def manifest(text: str):
    def setup(tmp: Path) -> None:
        atlas(tmp)
        (tmp / "atlas" / "manifest.json").write_text(text)

    return setup


def corrupt_part(tmp: Path) -> None:
    atlas(tmp)
    (tmp / "atlas" / "grams" / "stratum=word" / "part-00000.parquet").write_bytes(b"PAR1junk")


def bank_file(
    trigrams: np.ndarray | None = None,
    provenance: str = '{"source": "test"}',
    files: dict[str, str] | None = None,
):
    """A setup writing ``bank.safetensors`` (a valid 4-row bank by default) and ``files``."""
    rows = np.array([b"the", b" ca", b"at ", b"on "], dtype="S3").view(np.uint8).reshape(4, 3)
    trigrams = rows if trigrams is None else trigrams

    def setup(tmp: Path) -> None:
        arrays = {"trigrams": trigrams, "log_prior": np.full(len(trigrams), -2.0, np.float32)}
        save_file(arrays, str(tmp / "bank.safetensors"), metadata={"provenance": provenance})
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)

    return setup


def not_safetensors(tmp: Path) -> None:
    (tmp / "bank.safetensors").write_text("not a bank at all\n")


def no_trigrams(tmp: Path) -> None:
    save_file({"weights": np.zeros(3, np.float32)}, str(tmp / "bank.safetensors"))


def build(name: str, *argv: str, expect: str, setup=atlas) -> Case:
    return Case(f"build-{name}", ("bank", "build", *argv), expect, setup=setup)


def size(value: str, expect: str, slug: str) -> Case:
    """``bank build --size=VALUE`` (the ``=`` form, so a negative value reaches the check)."""
    argv = ("--atlas", A, f"--size={value}", "--out", OUT)
    return build(f"size-{slug}", *argv, expect=expect)


def atlas_flag(name: str, path: str, expect: str, setup=atlas) -> Case:
    """``bank build`` with ``--atlas PATH`` (and a good size and --out)."""
    return build(f"atlas-{name}", "--atlas", path, *BUILD[4:], expect=expect, setup=setup)


def stats(name: str, *argv: str, expect: str, setup=None) -> Case:
    return Case(f"stats-{name}", ("bank", "stats", *argv), expect, setup=setup)


BUILD_CASES = [
    atlas_flag("missing", "{tmp}/nope", "nope does not exist (build it with `geolip atlas build`)"),
    atlas_flag(
        "not-an-atlas", "{tmp}/plain", "plain is not an atlas: manifest.json is missing", plain_dir
    ),
    atlas_flag(
        "empty-dir",
        "{tmp}/emptydir",
        "emptydir is not an atlas: manifest.json is missing",
        empty_dir,
    ),
    atlas_flag(
        "is-a-file",
        "{tmp}/afile",
        "afile is a file, not a directory; expected an atlas directory",
        a_file,
    ),
    build("atlas-manifest-not-json", *BUILD[2:], expect="not readable JSON", setup=manifest("{")),
    build(
        "atlas-manifest-wrong-format",
        *BUILD[2:],
        expect="has format 'other/9', expected 'geolip-atlas/1'",
        setup=manifest(json.dumps({"format": "other/9"})),
    ),
    build(
        "atlas-corrupt-part",
        *BUILD[2:],
        expect="stratum=word/part-00000.parquet is not readable Parquet",
        setup=corrupt_part,
    ),
    build(
        "atlas-validation-split",
        *BUILD[2:],
        expect="banks come from the training split only",
        setup=validation_atlas,
    ),
    build("atlas-missing-flag", "--size", "16", "--out", OUT, expect="required: --atlas"),
    size("0", "argument --size: size '0' is not a positive whole number", "0"),
    size("-1", "argument --size: malformed size '-1'", "minus1"),
    size("64x", "argument --size: malformed size '64x': expected a number with optional k", "64x"),
    size("64kb", "argument --size: malformed size '64kb'", "64kb"),
    size("1.5", "argument --size: size '1.5' is not a positive whole number", "1_5"),
    size("64Ki", "bank size 65536 is larger than the 130 distinct trigrams", "64ki"),
    size("64k", "bank size 64000 is larger than the 130 distinct trigrams", "64k"),
    size("1Ki", "use --size 130 or less", "1ki"),
    build(
        "out-exists",
        *BUILD[2:],
        expect="bank.safetensors already exists (pass --overwrite to replace it)",
        setup=existing_bank,
    ),
    build(
        "out-under-a-file",
        *BUILD[2:6],
        "--out",
        "{tmp}/afile/bank.safetensors",
        expect="afile, which is a regular file",
        setup=a_file,
    ),
    build(
        "out-is-a-dir",
        *BUILD[2:6],
        "--out",
        "{tmp}/plain",
        expect="plain is a directory; expected a file path",
        setup=atlas_and_dir,
    ),
    build("quotas-malformed", *BUILD[2:], "--quotas", "bogus", expect="--quotas: malformed quotas"),
    build(
        "quotas-sum", *BUILD[2:], "--quotas", "char=0.5", expect="--quotas: quotas must sum to 1"
    ),
    build(
        "quotas-unknown-stratum",
        *BUILD[2:],
        "--quotas",
        "emoji=1",
        expect="--quotas: unknown stratum 'emoji' in quotas: expected some of char, word, unicode",
    ),
    build(
        "quotas-negative",
        *BUILD[2:],
        "--quotas",
        "char=-0.5,word=1.5",
        expect="--quotas: quota for 'char' must be a finite number >= 0",
    ),
]

STATS_CASES = [
    stats("missing", "{tmp}/nope.safetensors", expect="nope.safetensors does not exist"),
    stats(
        "directory",
        "{tmp}/plain",
        expect="plain is a directory; expected a .safetensors bank file",
        setup=plain_dir,
    ),
    stats("not-safetensors", BANK, expect=NOT_A_BANK, setup=not_safetensors),
    stats(
        "no-trigrams-tensor",
        BANK,
        expect="File does not contain tensor trigrams",
        setup=no_trigrams,
    ),
    stats("atlas-manifest", "{tmp}/atlas/manifest.json", expect=NOT_A_BANK, setup=atlas),
    stats(
        "provenance-not-object",
        BANK,
        expect="its provenance metadata is not a JSON object",
        setup=bank_file(provenance="[1]"),
    ),
    stats(
        "wrong-shape",
        BANK,
        expect="holds trigrams (4, 4) and log_prior (4,); expected [N, 3] and [N]",
        setup=bank_file(trigrams=np.zeros((4, 4), np.uint8)),
    ),
    stats(
        "corpus-malformed",
        BANK,
        "--corpus",
        "bogus",
        expect="malformed corpus URI 'bogus'",
        setup=bank_file(),
    ),
    stats(
        "corpus-file-missing",
        BANK,
        "--corpus",
        "file:{tmp}/missing.txt",
        expect="corpus file not found",
        setup=bank_file(),
    ),
    stats(
        "corpus-empty-file",
        BANK,
        "--corpus",
        "file:{tmp}/empty.txt",
        expect="has no documents",
        setup=bank_file(files={"empty.txt": ""}),
    ),
    stats(
        "heldout-out-of-range",
        BANK,
        "--heldout",
        "1.5",
        expect="argument --heldout: must be in [0, 1), got '1.5'",
        setup=bank_file(),
    ),
    stats(
        "top-negative",
        BANK,
        "--top=-1",
        expect="argument --top: must be >= 0, got -1",
        setup=bank_file(),
    ),
    stats(
        "split-unknown",
        BANK,
        "--split",
        "test",
        expect="argument --split: invalid choice",
        setup=bank_file(),
    ),
]

CASES = BUILD_CASES + STATS_CASES


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bank_bad_input(case, tmp_path):
    started = time.monotonic()
    check_case(case, " ".join(case.argv[:2]), tmp_path, timeout=60)
    elapsed = time.monotonic() - started
    assert elapsed < FAST_S, f"{case.id}: {elapsed:.1f} s"


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)
