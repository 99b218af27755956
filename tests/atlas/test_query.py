"""The atlas query layer: views over the Parquet contract, read-only SQL, stats, clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
from atlas_testdata import reference_counts

from atlas.query import AtlasError, open_atlas, query, read_manifest, run_query, stats


def test_views_expose_every_row_with_its_stratum(atlas_dir):
    ref = reference_counts()
    con = open_atlas(atlas_dir)
    try:
        cols = [r[0] for r in con.sql("DESCRIBE atlas").fetchall()]
        assert cols == ["gram", "text", "n", "count", "doc_freq", "rank", "stratum"]
        for stratum, (count, docs) in ref.items():
            rows = con.sql(f"SELECT gram, count, doc_freq FROM atlas_{stratum}").fetchall()
            assert {bytes(g): c for g, c, _ in rows} == dict(count)
            assert {bytes(g): d for g, _, d in rows} == dict(docs)
        total = con.sql("SELECT count(*) FROM atlas").fetchall()[0][0]
        assert total == sum(len(c) for c, _ in ref.values())
    finally:
        con.close()


def test_query_returns_arrow_with_exact_bytes_and_ranks(atlas_dir):
    table = query(
        atlas_dir, "SELECT gram, count, rank FROM atlas_word ORDER BY rank LIMIT 3"
    ).to_pylist()
    word = reference_counts()["word"][0]
    expected = sorted(word.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert [(r["gram"], r["count"], r["rank"]) for r in table] == [
        (g, c, i + 1) for i, (g, c) in enumerate(expected)
    ]
    assert table[0]["gram"] == b"the "  # word entries keep their trailing space


def test_run_query_limit_streams_and_reports_truncation(atlas_dir):
    con = open_atlas(atlas_dir)
    try:
        table, truncated = run_query(con, "SELECT * FROM atlas_char", limit=5)
        assert table.num_rows == 5 and truncated
        table, truncated = run_query(con, "SELECT * FROM atlas_unicode", limit=10_000)
        assert not truncated and table.num_rows == len(reference_counts()["unicode"][0])
        # The connection stays usable after an early stop.
        assert con.sql("SELECT 1").fetchall() == [(1,)]
    finally:
        con.close()


def test_stats_per_stratum(atlas_dir):
    ref = reference_counts()
    out = stats(atlas_dir)
    assert list(out["strata"]) == ["char", "word", "unicode"]
    assert out["config_hash"] == "cafef00d1234"
    for stratum, (count, _) in ref.items():
        entry = out["strata"][stratum]
        assert entry["rows"] == entry["kept"] == len(count)
        assert entry["tokens"] == sum(count.values())
        assert entry["coverage"] == 1.0
        assert sum(entry["n_distribution"].values()) == len(count)
        top = sorted(count.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        assert [(t["gram"], t["count"]) for t in entry["top"]] == top
    assert out["strata"]["char"]["n_distribution"].keys() == {1, 2, 3, 4}


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT 1) TO 'out.csv'",
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO atlas VALUES (1)",
        "ATTACH 'x.db'",
        "INSTALL httpfs",
        "SET threads = 1",
        "SELECT 1; SELECT 2",
    ],
)
def test_write_and_multi_statements_are_refused(atlas_dir, sql):
    with pytest.raises(AtlasError, match="read-only|exactly one"):
        query(atlas_dir, sql)
    assert sorted(p.name for p in atlas_dir.iterdir()) == ["grams", "manifest.json"]


def test_reading_outside_the_atlas_is_refused(atlas_dir, tmp_path):
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    with pytest.raises(AtlasError, match="Permission"):
        query(atlas_dir, f"SELECT * FROM read_csv('{outside}')")


@pytest.mark.parametrize(
    ("sql", "match"),
    [("SELEC gram FROM atlas", "invalid SQL: Parser Error"), ("SELECT nope FROM atlas", "Binder")],
)
def test_invalid_sql_is_one_line(atlas_dir, sql, match):
    with pytest.raises(AtlasError, match=match) as info:
        query(atlas_dir, sql)
    assert "\n" not in str(info.value)


def test_missing_or_foreign_atlas(tmp_path):
    with pytest.raises(AtlasError, match="does not exist"):
        open_atlas(tmp_path / "nope")
    with pytest.raises(AtlasError, match="manifest.json is missing"):
        open_atlas(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(AtlasError, match="format 'other/9'"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(AtlasError, match="not readable JSON"):
        read_manifest(tmp_path)


def test_atlas_without_parts(make_atlas):
    root = make_atlas()
    shutil.rmtree(root / "grams")
    with pytest.raises(AtlasError, match="no Parquet files"):
        open_atlas(root)


def test_corrupt_parquet_is_named(make_atlas):
    root = make_atlas()
    bad = root / "grams" / "stratum=word" / "part-00001.parquet"
    bad.write_bytes(b"this is not parquet at all" * 10)
    with pytest.raises(AtlasError, match=r"part-00001\.parquet is not readable Parquet"):
        open_atlas(root)
    with pytest.raises(AtlasError, match="stratum=word"):
        stats(root)


def test_missing_column_is_named(make_atlas):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = make_atlas()
    part = root / "grams" / "stratum=char" / "part-00000.parquet"
    pq.write_table(pa.table({"gram": pa.array([b"abc"])}), part)
    with pytest.raises(AtlasError, match="lacks column"):
        query(root, "SELECT 1")


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN SELECT * FROM atlas_word",
        "explain analyze /* c */ SELECT count(*) FROM atlas",
        "EXPLAIN (FORMAT json) SELECT 1",
        "-- lead\nDESCRIBE atlas",
        "SUMMARIZE atlas_unicode",
    ],
)
def test_explain_of_a_select_and_select_likes_are_allowed(atlas_dir, sql):
    assert query(atlas_dir, sql).num_rows > 0


@pytest.mark.parametrize(
    ("sql", "label"),
    [
        ("EXPLAIN ANALYZE COPY (SELECT 1) TO 'x.csv'", "EXPLAIN of COPY"),
        ("EXPLAIN CREATE TABLE t AS SELECT 1", "EXPLAIN of CREATE"),
        ("INSTALL httpfs", "INSTALL statements"),
        ("RESET threads", "RESET statements"),
        ("PRAGMA enable_profiling", "PRAGMA statements"),
        ("EXPORT DATABASE 'x'", "EXPORT statements"),
        ("CALL enable_logging()", "CALL statements"),
    ],
)
def test_refusals_name_the_statement_and_what_is_allowed(atlas_dir, sql, label):
    with pytest.raises(AtlasError, match=f"the atlas is read-only: {label}.*use one SELECT"):
        query(atlas_dir, sql)


def test_duckdb_has_no_writable_path_even_in_the_atlas_cwd(make_atlas, monkeypatch):
    """DuckDB allow-lists ``<cwd>/:memory:`` by default; the sandbox empties that list."""
    import duckdb

    root = make_atlas()
    monkeypatch.chdir(root)
    con = open_atlas(root)
    try:
        for target in (":memory:", ":memory:.wal", "manifest.json"):
            with pytest.raises(duckdb.Error, match="Permission Error"):
                con.execute(f"COPY (SELECT 1) TO '{target}' (FORMAT csv)")
        assert con.sql("SELECT current_setting('allowed_paths')").fetchall() == [([],)]
    finally:
        con.close()
    assert sorted(p.name for p in root.iterdir()) == ["grams", "manifest.json"]
