"""Bad input to ``geolip aleph sample``: one error line, exit 2, nothing on stdout and every file
of the case's directory (the checkpoint included) unchanged.

One tiny pmix checkpoint is saved per module (no Ray) and copied into each case's directory by
the case's setup, so the harness's tree digest proves the bad run left the checkpoint as it was.
Flag mistakes are usage errors (``argument --FLAG: ...``) raised before the checkpoint is read:
the ``*-before-checkpoint`` cases aim them at a missing one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
from pathlib import Path

import pytest
from battery_harness import Case, check_case

CK = "{tmp}/ck"
SAMPLE = ("aleph", "sample", "--checkpoint", CK)
MISSING = ("aleph", "sample", "--checkpoint", "{tmp}/nope")
# argv bytes b"\xff\xfe": subprocess encodes a str argument with os.fsencode (surrogateescape),
# so these surrogate escapes reach the command as exactly those two bytes, not valid UTF-8.
BAD_UTF8 = "\udcff\udcfe"


def copy(source: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(source, tmp / "ck"))


def edited(edit):
    """A setup: the checkpoint copied under the case's directory, then ``edit(ck)``."""

    def setup(source: Path, tmp: Path) -> None:
        edit(copy(source, tmp))

    return setup


def write(name: str, data: str | bytes):
    def edit(ck: Path) -> None:
        if isinstance(data, bytes):
            (ck / name).write_bytes(data)
        else:
            (ck / name).write_text(data, encoding="utf-8")

    return edited(edit)


def remove(name: str):
    return edited(lambda ck: (ck / name).unlink())


def truncate(name: str):
    def edit(ck: Path) -> None:
        f = ck / name
        f.write_bytes(f.read_bytes()[:1000])

    return edited(edit)


def edit_json(name: str, change):
    def edit(ck: Path) -> None:
        data = json.loads((ck / name).read_text())
        change(data)
        (ck / name).write_text(json.dumps(data))

    return edited(edit)


def other_bank(source: Path, tmp: Path) -> None:
    """The checkpoint with another bank file in place of its own."""
    ck = copy(source, tmp)
    shutil.copyfile(f"{source}-other-bank.safetensors", ck / "bank.safetensors")


def a_file(source: Path, tmp: Path) -> None:
    (tmp / "notes.txt").write_text("not a checkpoint\n")


checkpoint = edited(lambda ck: None)


def flag(name: str, value: str, expect: str, *, before: bool = False) -> Case:
    """A bad ``--FLAG=VALUE``, at a real checkpoint (or, ``before``, at a missing one); the
    ``=`` form, so that values such as ``-inf`` reach the flag's check."""
    slug = value.lower().replace("-", "minus").replace(".", "_")[:12]
    argv = (f"{name}={value}",)
    if before:
        return Case(f"{name.strip('-')}-{slug}-before-checkpoint", (*MISSING, *argv), expect)
    return Case(f"{name.strip('-')}-{slug}", (*SAMPLE, *argv), expect, setup=checkpoint)


LONG_PROMPT = "x" * 200  # 67 trigrams > the tiny model's 32 positions, trained without streaming

CASES = [
    # the checkpoint path
    Case("missing-checkpoint", MISSING, "checkpoint {tmp}/nope does not exist"),
    Case(
        "checkpoint-is-a-file",
        ("aleph", "sample", "--checkpoint", "{tmp}/notes.txt"),
        "notes.txt is a file, not a directory",
        setup=a_file,
    ),
    Case("no-checkpoint-flag", ("aleph", "sample"), "required: --checkpoint"),
    # meta.json
    Case("meta-missing", SAMPLE, "meta.json is missing", setup=remove("meta.json")),
    Case("meta-not-json", SAMPLE, "meta.json is not valid JSON", setup=write("meta.json", "{no")),
    Case(
        "meta-array",
        SAMPLE,
        "meta.json holds a JSON array; expected a JSON object",
        setup=write("meta.json", "[1]"),
    ),
    Case(
        "meta-string",
        SAMPLE,
        "meta.json holds a JSON string; expected a JSON object",
        setup=write("meta.json", '"x"'),
    ),
    Case(
        "meta-not-utf8",
        SAMPLE,
        "meta.json is not UTF-8 text (byte 0xff at position 0)",
        setup=write("meta.json", b"\xff\xfe{}"),
    ),
    Case(
        "meta-wrong-format",
        SAMPLE,
        "meta.json: expected format 'geolip-aleph-checkpoint/1', got 3",
        setup=edit_json("meta.json", lambda d: d.update(format=3)),
    ),
    # config.json
    Case("config-missing", SAMPLE, "config.json is missing", setup=remove("config.json")),
    Case(
        "config-array",
        SAMPLE,
        "config.json holds a JSON array; expected a JSON object",
        setup=write("config.json", "[1]"),
    ),
    Case(
        "config-section-not-object",
        SAMPLE,
        "config.json: section 'model' holds a JSON number; expected a JSON object",
        setup=write("config.json", '{"model": 5}'),
    ),
    Case(
        "config-unknown-key",
        SAMPLE,
        "unknown model config keys ['d_modle']",
        setup=edit_json("config.json", lambda d: d["model"].update(d_modle=64)),
    ),
    Case(
        "config-hash-mismatch",
        SAMPLE,
        "config.json was changed after saving",
        setup=edit_json("config.json", lambda d: d["model"].update(tau=0.3)),
    ),
    # the weights and the bank
    Case(
        "weights-missing",
        SAMPLE,
        "model.safetensors are missing",
        setup=remove("model.safetensors"),
    ),
    Case(
        "weights-corrupt",
        SAMPLE,
        "model.safetensors are corrupt",
        setup=truncate("model.safetensors"),
    ),
    Case(
        "bank-corrupt",
        SAMPLE,
        "bank.safetensors is not a readable safetensors bank",
        setup=write("bank.safetensors", b"junk"),
    ),
    Case("bank-missing", SAMPLE, "has head 'pmix' but no bank", setup=remove("bank.safetensors")),
    Case(
        "bank-swapped",
        SAMPLE,
        "bank.safetensors does not match the bank recorded in meta.json",
        setup=other_bank,
    ),
    # the flags
    flag("--bytes", "0", "argument --bytes: must be >= 1, got 0"),
    flag("--bytes", "-1", "argument --bytes: must be >= 1, got -1"),
    Case(
        "bytes-minus1-spaced",
        (*SAMPLE, "--bytes", "-1"),
        "argument --bytes: must be >= 1, got -1",
        setup=checkpoint,
    ),
    flag("--bytes", "10000001", "argument --bytes: must be <= 10,000,000, got 10,000,001"),
    flag("--bytes", "99999999999999999999", "argument --bytes: must be <= 10,000,000"),
    flag("--bytes", "99999999999999999999", "argument --bytes: must be <=", before=True),
    flag("--bytes", "lots", "argument --bytes: expected a whole number, got 'lots'"),
    flag("--bytes", "1.5", "argument --bytes: expected a whole number, got '1.5'"),
    flag("--temperature", "nan", "argument --temperature: must be a finite number > 0, got 'nan'"),
    flag("--temperature", "inf", "argument --temperature: must be a finite number > 0, got 'inf'"),
    flag("--temperature", "-inf", "argument --temperature: must be a finite number > 0"),
    flag("--temperature", "-1", "argument --temperature: must be a finite number > 0, got '-1'"),
    flag("--temperature", "0", "argument --temperature: must be a finite number > 0, got '0'"),
    flag("--temperature", "hot", "argument --temperature: expected a number, got 'hot'"),
    flag("--temperature", "nan", "argument --temperature:", before=True),
    flag("--seed", "x", "argument --seed: invalid int value: 'x'"),
    Case(
        "prompt-not-utf8",
        (*SAMPLE, "--prompt", BAD_UTF8),
        "argument --prompt: not valid UTF-8 (byte 0xff at position 0)",
        setup=checkpoint,
    ),
    Case(
        "prompt-not-utf8-later",
        (*SAMPLE, "--prompt", "ok \udce9"),
        "argument --prompt: not valid UTF-8 (byte 0xe9 at position 3)",
        setup=checkpoint,
    ),
    Case(
        "prompt-not-utf8-before-checkpoint",
        (*MISSING, "--prompt", BAD_UTF8),
        "argument --prompt: not valid UTF-8",
    ),
    Case(
        "prompt-too-long",
        (*SAMPLE, "--prompt", LONG_PROMPT),
        "the position table holds 32 trigrams",
        setup=checkpoint,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_sample_bad_input(case, source, tmp_path):
    if case.setup is not None:
        case = dataclasses.replace(case, setup=functools.partial(case.setup, source))
    case = dataclasses.replace(case, expect=case.expect.replace("{tmp}", str(tmp_path)))
    check_case(case, "aleph sample", tmp_path)


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)
