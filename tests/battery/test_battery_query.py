"""Bad input to ``geolip atlas query`` and ``geolip atlas stats``: one error line, exit 2, nothing
on stdout and every file of the case's directory (the atlas included) unchanged.

Each case writes its atlas under its own directory with ``atlas_testdata.write_atlas`` (pyarrow,
no Ray), so the harness's tree digest covers the atlas the bad query is aimed at.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from atlas_testdata import write_atlas
from battery_harness import Case, check_case

A = "{tmp}/atlas"
PART = "grams/stratum=word/part-00000.parquet"


def atlas(tmp: Path) -> None:
    write_atlas(tmp / "atlas")


def _manifest(text: str):
    def setup(tmp: Path) -> None:
        write_atlas(tmp / "atlas")
        (tmp / "atlas" / "manifest.json").write_text(text, encoding="utf-8")

    return setup


def corrupt_part(tmp: Path) -> None:
    write_atlas(tmp / "atlas")
    (tmp / "atlas" / PART).write_bytes(b"not parquet " * 20)


def not_an_atlas(tmp: Path) -> None:
    (tmp / "plain").mkdir()
    (tmp / "plain" / "notes.txt").write_text("hello\n")


def query(sql: str, *more: str) -> tuple[str, ...]:
    return ("atlas", "query", A, sql, *more)


CASES = [
    Case("missing-dir", ("atlas", "query", "{tmp}/nope", "SELECT 1"), "nope does not exist"),
    Case("stats-missing-dir", ("atlas", "stats", "{tmp}/nope"), "nope does not exist"),
    Case(
        "not-an-atlas",
        ("atlas", "query", "{tmp}/plain", "SELECT 1"),
        "manifest.json is missing",
        setup=not_an_atlas,
    ),
    Case("manifest-not-json", query("SELECT 1"), "not readable JSON", setup=_manifest("{nope")),
    Case("manifest-not-object", query("SELECT 1"), "not a JSON object", setup=_manifest("[1]")),
    Case(
        "manifest-wrong-format",
        ("atlas", "stats", A),
        "format 'other/9'",
        setup=_manifest(json.dumps({"format": "other/9"})),
    ),
    Case(
        "corrupt-part",
        query("SELECT 1"),
        "part-00000.parquet is not readable Parquet",
        setup=corrupt_part,
    ),
    Case(
        "stats-corrupt-part",
        ("atlas", "stats", A),
        "stratum=word/part-00000.parquet",
        setup=corrupt_part,
    ),
    Case("invalid-sql", query("SELEC gram FROM atlas"), "invalid SQL", setup=atlas),
    Case("unknown-column", query("SELECT nope FROM atlas"), "query failed", setup=atlas),
    Case("two-statements", query("SELECT 1; SELECT 2"), "exactly one SQL statement", setup=atlas),
    Case(
        "copy-to",
        query(f"COPY (SELECT 1) TO '{A}/manifest.json'"),
        "read-only: COPY",
        setup=atlas,
    ),
    Case(
        "explain-analyze-copy-manifest",
        query(f"EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{A}/manifest.json' (FORMAT csv)"),
        "read-only: EXPLAIN of COPY",
        setup=atlas,
    ),
    Case(
        "explain-analyze-copy-part",
        query(f"EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{A}/{PART}' (FORMAT parquet)"),
        "read-only: EXPLAIN of COPY",
        setup=atlas,
    ),
    Case("attach", query(f"ATTACH '{A}/x.db'"), "read-only: ATTACH", setup=atlas),
    Case("install", query("INSTALL httpfs"), "read-only: INSTALL", setup=atlas),
    Case("set", query("SET enable_external_access = true"), "read-only: SET", setup=atlas),
    Case("pragma", query("PRAGMA enable_profiling"), "read-only: PRAGMA", setup=atlas),
    Case("create-table", query("CREATE TABLE t AS SELECT 1"), "read-only: CREATE", setup=atlas),
    Case(
        "read-outside",
        query("SELECT * FROM read_csv('/etc/passwd')"),
        'Cannot access file "/etc/passwd"',
        setup=atlas,
    ),
    Case("limit-negative", query("SELECT 1", "--limit", "-1"), "--limit", setup=atlas),
    Case("unknown-format", query("SELECT 1", "--format", "xml"), "--format", setup=atlas),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_query_bad_input(case, tmp_path):
    check_case(case, "atlas query", tmp_path)
