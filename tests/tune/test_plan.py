"""``tune.plan``: a sweep's checks run before anything is written, and without Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipelines.errors import GeolipError
from pipelines.runtime import RunContext
from tune.plan import SweepJob, plan_sweep
from tune.spec import SweepError, read_json_object


def _job(tmp_path, program="ladder", **kw) -> SweepJob:
    ctx = RunContext.create("geolip-sweeps", tmp_path / "data")
    return SweepJob(program, ctx, scale="smoke", **kw)


def test_planning_imports_neither_ray_nor_torch():
    code = (
        "import sys, tune.plan, tune.cli, demo.checks\n"
        "print(sorted({'ray', 'torch'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"seeds": 0}, "--seeds must be >= 1, got 0"),
        ({"arms": ("nope",)}, r"unknown arm\(s\) \['nope'\]"),
        ({"donor": "x"}, "--donor is for `geolip sweep graft`"),
        ({"name": "a/b"}, "expected a plain name"),
        ({"corpus": "file:/no/such/file.txt"}, "--corpus: corpus file not found"),
    ],
)
def test_bad_options_write_nothing(tmp_path, kw, expected):
    with pytest.raises(SweepError, match=expected):
        plan_sweep(_job(tmp_path, **kw), progress=lambda s: None)
    assert not (tmp_path / "data").exists()


def test_a_contrast_dry_run_does_not_create_the_store(tmp_path):
    sweep = plan_sweep(_job(tmp_path, "contrast", dry_run=True), progress=lambda s: None)
    assert [p.name for p in sweep.phases] == ["battery", "contrast"]
    assert not (tmp_path / "data").exists()


def test_a_run_id_donor_or_source_is_not_looked_up_in_a_missing_store(tmp_path):
    run_id = "0123456789abcdef0123456789abcdef"
    with pytest.raises(SweepError, match=f"--donor {run_id}: no MLflow store at"):
        plan_sweep(_job(tmp_path, "graft", donor=run_id), progress=lambda s: None)
    with pytest.raises(SweepError, match=f"--from {run_id}: no MLflow store at"):
        plan_sweep(_job(tmp_path, "contrast", source=run_id), progress=lambda s: None)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[1]", "holds a JSON array; expected a JSON object"),
        ("null", "holds a JSON null; expected a JSON object"),
        ('"x"', "holds a JSON string; expected a JSON object"),
        ("{", r"is not readable JSON \(Expecting property name"),
    ],
)
def test_json_files_must_hold_an_object(tmp_path, text, expected):
    path = tmp_path / "sweep.json"
    path.write_text(text)
    with pytest.raises(GeolipError, match=f"^{path} {expected}"):
        read_json_object(path)
    path.write_text('{"a": 1}')
    assert read_json_object(path) == {"a": 1}
