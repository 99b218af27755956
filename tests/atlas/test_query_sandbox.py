"""The atlas query sandbox: no statement, however wrapped, can change a file of the atlas.

A hypothesis fuzz throws statement mixes at ``run_query``/``query`` and checks, after every
example, that every file of the atlas (and the listing of the directory beside it) is unchanged;
regression tests pin the reported ``EXPLAIN ANALYZE COPY`` cases, and one test bypasses the text
filter to show that the connection itself cannot write (the by-construction proof).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import duckdb
import pytest
from atlas_testdata import write_atlas
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlas.query import AtlasError, open_atlas, query, run_query

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """``(atlas root, digest function)``: an atlas the tests try to damage, cwd inside it."""
    root = write_atlas(tmp_path_factory.mktemp("sandbox") / "atlas")

    def digest() -> dict[str, str]:
        out = {f"../{p.name}": "entry" for p in root.parent.iterdir()}
        for path in sorted(root.rglob("*")):
            rel = str(path.relative_to(root))
            out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        return out

    cwd = os.getcwd()
    os.chdir(root)  # relative targets ('x.csv', ':memory:') then land inside the atlas
    try:
        yield root, digest
    finally:
        os.chdir(cwd)


def _targets(root: Path) -> list[str]:
    parts = sorted(str(p) for p in root.glob("grams/*/*.parquet"))
    return [
        str(root / "manifest.json"),
        "manifest.json",
        *parts,
        parts[0].replace(str(root) + "/", ""),
        str(root / "new.csv"),
        str(root / "grams" / "stratum=word" / "part-99999.parquet"),
        "x.csv",
        ":memory:",
        ":memory:.wal",
        str(root / "export"),
        str(root.parent / "beside.db"),
        str(root / "grams" / ".." / "escape.csv"),
    ]


WRITES = [
    "COPY (SELECT 1 AS x) TO '{t}' (FORMAT csv)",
    "COPY atlas TO '{t}' (FORMAT parquet)",
    "COPY (FROM atlas_word) TO '{t}'",
    "EXPORT DATABASE '{t}'",
    "ATTACH '{t}' AS other",
    "ATTACH '{t}' AS other (TYPE sqlite)",
    "INSTALL httpfs",
    "LOAD httpfs",
    "LOAD '{t}'",
    "SET profiling_output = '{t}'",
    "SET log_query_path = '{t}'",
    "SET enable_external_access = true",
    "SET allowed_directories = ['/']",
    "SET allowed_paths = ['{t}']",
    "SET temp_directory = '{t}'",
    "RESET enable_external_access",
    "RESET lock_configuration",
    "SET lock_configuration = false",
    "PRAGMA enable_profiling",
    "PRAGMA profiling_output = '{t}'",
    "CREATE TABLE t AS SELECT * FROM atlas",
    "CREATE OR REPLACE VIEW atlas AS SELECT 1",
    "CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "INSERT INTO atlas VALUES (1)",
    "UPDATE atlas SET count = 0",
    "DELETE FROM atlas_char",
    "DROP VIEW atlas",
    "ALTER VIEW atlas RENAME TO gone",
    "CALL enable_logging()",
    "CHECKPOINT",
    "VACUUM",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_parquet('{t}')",
    "SELECT * FROM query('COPY (SELECT 1) TO ''{t}''')",
    "SELECT * FROM glob('{t}')",
]
READS = [
    "SELECT count(*) FROM atlas",
    "SELECT text, count FROM atlas_word ORDER BY count DESC LIMIT 3",
    "FROM atlas_unicode",
    "WITH w AS (SELECT * FROM atlas_char) SELECT max(n) FROM w",
    "DESCRIBE atlas",
    "SUMMARIZE atlas_unicode",
    "SELECT (SELECT count(*) FROM atlas_char WHERE gram IN (SELECT gram FROM atlas))",
]
WRAPS = ["{s}", "EXPLAIN {s}", "EXPLAIN ANALYZE {s}", "explain analyze /* c */ {s}"]
DECOR = ["{s}", "{s};", "/* note */ {s}", "-- note\n{s}", "  {s}  ", "({s})"]


def _case(text: str, mode: int) -> str:
    return {0: text, 1: text.lower(), 2: text.upper()}.get(mode, text.swapcase())


@st.composite
def statements(draw, root: Path) -> str:
    targets = _targets(root)
    pieces = []
    for _ in range(draw(st.integers(1, 3))):
        base = draw(st.sampled_from(WRITES + READS)).replace("{t}", draw(st.sampled_from(targets)))
        text = draw(st.sampled_from(WRAPS)).format(s=base)
        text = draw(st.sampled_from(DECOR)).format(s=text)
        # Casing the whole text also mangles the targets: still a statement worth trying.
        pieces.append(_case(text, draw(st.integers(0, 5))))
    return draw(st.sampled_from([";", "; ", ";\n"])).join(pieces)


TRIED = {"statements": 0, "refused": 0, "answered": 0}


def test_fuzz_no_statement_changes_the_atlas(sandbox):
    root, digest = sandbox
    before = digest()
    con = open_atlas(root)

    @FUZZ
    @given(sql=statements(root), via_query=st.booleans())
    def attempt(sql, via_query):
        TRIED["statements"] += 1
        try:
            if via_query and TRIED["statements"] % 10 == 0:  # a fresh connection now and then
                query(root, sql, limit=5)
            else:
                run_query(con, sql, limit=5)
            TRIED["answered"] += 1
        except AtlasError as exc:
            assert "\n" not in str(exc)
            TRIED["refused"] += 1
        assert digest() == before, f"atlas changed by {sql!r}"

    try:
        attempt()
    finally:
        con.close()
    print(f"\nsandbox fuzz: {TRIED} - atlas unchanged")
    assert TRIED["statements"] >= 1000 and TRIED["refused"] > 0 and TRIED["answered"] > 0


@pytest.mark.parametrize("target", ["manifest.json", "grams/stratum=word/part-00000.parquet"])
@pytest.mark.parametrize("explain", ["EXPLAIN ANALYZE", "EXPLAIN", "explain analyze /* x */"])
def test_reported_explain_analyze_copy_is_refused(sandbox, target, explain):
    root, digest = sandbox
    before = digest()
    sql = f"{explain} COPY (select 1 as x) TO '{root / target}' (format csv)"
    with pytest.raises(AtlasError, match="read-only: EXPLAIN of COPY is refused"):
        query(root, sql)
    assert digest() == before


def test_the_connection_cannot_write_even_past_the_filter(sandbox):
    """The by-construction proof: SQL sent straight to DuckDB, skipping ``check_read_only``."""
    root, digest = sandbox
    before = digest()
    con = open_atlas(root)
    try:
        for target in _targets(root):
            for sql in (
                f"COPY (SELECT 1 AS x) TO '{target}' (FORMAT csv)",
                f"EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{target}' (FORMAT csv)",
                f"EXPORT DATABASE '{target}'",
                f"ATTACH '{target}' AS other",
            ):
                if sql == "ATTACH ':memory:' AS other":
                    continue  # a database without a file: allowed, and harmless
                with pytest.raises(duckdb.Error, match="Permission Error|Cannot access"):
                    con.execute(sql)
        for sql in ("SET enable_external_access = true", "SET allowed_directories = ['/']"):
            with pytest.raises(duckdb.Error, match="configuration has been locked"):
                con.execute(sql)
        with pytest.raises(duckdb.Error, match="Permission Error"):
            con.execute("INSTALL httpfs")
        # The atlas is still served: DuckDB reads it through Arrow, not the file system.
        assert con.execute("SELECT count(*) > 0 FROM atlas").fetchall() == [(True,)]
    finally:
        con.close()
    assert digest() == before
