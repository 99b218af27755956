"""Read-only SQL over a built atlas: DuckDB views on the Parquet, and summary statistics.

An atlas directory holds ``manifest.json`` and ``grams/stratum=<char|word|unicode>/part-*.parquet``
(hive layout) with columns ``gram`` (exact bytes), ``text``, ``n``, ``count``, ``doc_freq`` and
``rank`` (1 = most frequent within its stratum). ``open_atlas`` exposes it as the view ``atlas``
(with a ``stratum`` column) plus one view per stratum, ``atlas_char``, ``atlas_word`` and
``atlas_unicode``:

>>> con = open_atlas("atlases/wikitext")                                  # doctest: +SKIP
>>> query("atlases/wikitext", "SELECT text, count FROM atlas_word LIMIT 3")  # doctest: +SKIP

Read-only by construction. DuckDB never opens a file of the atlas: the part files are read by
a ``pyarrow.dataset`` registered into an in-memory connection (DuckDB's Arrow scan pushes
projections and filters into it and streams its batches, so nothing is materialised), and the
connection runs with ``enable_external_access = false`` and empty ``allowed_paths`` (DuckDB
otherwise allow-lists ``<cwd>/:memory:``) and ``allowed_directories``, so DuckDB can open no file
of its own accord. ``COPY ... TO``, ``EXPORT DATABASE``, ``ATTACH`` of a
file, ``INSTALL``/``LOAD``, persistent secrets and ``read_csv('/etc/passwd')`` all fail with a
permission error, whatever text reaches the engine, and the configuration is locked so no
``SET``/``PRAGMA``/``RESET`` can turn access back on or point a profiling or query log at a file.
(The alternative, ``allowed_directories = [atlas]``, lets DuckDB read the Parquet itself but also
lets it *write* there: DuckDB's path allow-list covers reads and writes alike, which is how
``EXPLAIN ANALYZE COPY ... TO '<atlas>/manifest.json'`` overwrote a manifest. ``access_mode =
read_only`` only applies to database files, not to ``COPY``.) The one place DuckDB may still write is
its spill directory, a fresh private path outside the atlas that it creates only when a query
outgrows memory and removes on close.

As defence in depth, ``run_query`` and ``query`` accept exactly one statement of type ``SELECT``
(``WITH``, ``FROM``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE`` are SELECTs to DuckDB), or
an ``EXPLAIN [ANALYZE]`` of such a statement; everything else is refused with an ``AtlasError``
before it reaches DuckDB. The views belong to the connection ``open_atlas`` returns (a
``cursor()`` of it does not see them).
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

ATLAS_FORMAT = "geolip-atlas/1"
STRATA = ("char", "word", "unicode")
COLUMNS = ("gram", "text", "n", "count", "doc_freq", "rank")
ALLOWED = "use one SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE, or EXPLAIN [ANALYZE] of one"
_PARTITIONING = ds.partitioning(pa.schema([("stratum", pa.string())]), flavor="hive")


class AtlasError(ValueError):
    """An atlas (or a request against it) that cannot be served; the message says why.

    A ``ValueError`` so that the CLI reports it on one line without ``atlas`` importing from the
    layers above it.
    """


def one_line(error: BaseException) -> str:
    """An exception's message on a single line (DuckDB's messages span several)."""
    return " ".join(str(error).split()) or type(error).__name__


def read_manifest(atlas_dir: str | Path) -> dict:
    """The atlas's ``manifest.json``, checked for presence and format."""
    root = Path(atlas_dir)
    if root.exists() and not root.is_dir():
        raise AtlasError(f"{root} is a file, not a directory; expected an atlas directory")
    if not root.is_dir():
        raise AtlasError(
            f"atlas directory {root} does not exist (build it with `geolip atlas build`)"
        )
    path = root / "manifest.json"
    if not path.is_file():
        raise AtlasError(
            f"{root} is not an atlas: {path.name} is missing (an unfinished or foreign directory?)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AtlasError(f"atlas manifest {path} is not readable JSON: {one_line(exc)}") from exc
    if not isinstance(manifest, dict):
        kind = type(manifest).__name__
        raise AtlasError(f"atlas manifest {path} is not a JSON object (it holds a {kind})")
    if manifest.get("format") != ATLAS_FORMAT:
        found = manifest.get("format")
        raise AtlasError(f"atlas manifest {path} has format {found!r}, expected {ATLAS_FORMAT!r}")
    return manifest


def part_files(atlas_dir: str | Path) -> list[Path]:
    """Every Parquet part of the atlas, each checked to be a readable file with the contract's
    columns (reading the footer only, so this is cheap even for large atlases)."""
    root = Path(atlas_dir)
    files = sorted((root / "grams").glob("stratum=*/*.parquet"))
    if not files:
        raise AtlasError(f"atlas {root} has no Parquet files under {root / 'grams'}/stratum=*/")
    for file in files:
        stratum = file.parent.name.partition("=")[2]
        if stratum not in STRATA:
            raise AtlasError(f"atlas file {file}: unknown stratum {stratum!r}, expected {STRATA}")
        try:
            names = pq.ParquetFile(file).schema_arrow.names
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... on corrupt footers
            raise AtlasError(f"atlas file {file} is not readable Parquet: {one_line(exc)}") from exc
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise AtlasError(f"atlas file {file} lacks column(s) {missing}; it has {names}")
    return files


def _dataset(root: Path, files: list[Path]) -> ds.Dataset:
    """The part files as one Arrow dataset with the hive ``stratum`` column (read lazily)."""
    return ds.dataset(
        [str(f) for f in files],
        format="parquet",
        partitioning=_PARTITIONING,
        partition_base_dir=str(root / "grams"),
    )


def _engine_config(threads: int | None) -> dict:
    """DuckDB settings fixed when the connection is created (the sandbox itself is ``_seal``)."""
    config = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_persistent_secrets": False,
        "python_enable_replacements": False,  # SQL names resolve to our views only
        # Spill files only, in a private directory DuckDB creates on demand and removes on close
        # (the default, ".tmp", is relative to the working directory, which may be the atlas).
        "temp_directory": os.path.join(
            tempfile.gettempdir(), f"geolip-duckdb-{os.getpid()}-{secrets.token_hex(4)}"
        ),
    }
    if threads is not None:
        config["threads"] = int(threads)
    return config


# DuckDB allow-lists the database's own paths: for ":memory:" that is "<cwd>/:memory:" and its
# ".wal" files, so with the working directory inside the atlas, COPY ... TO ':memory:' would
# create a file there even with external access off. Emptied first (they can only be changed
# while access is on), then access is turned off and the configuration locked. Only the spill
# directory stays allowed (DuckDB re-adds it); it is outside the atlas and exists only while
# DuckDB spills.
_SEAL = (
    "SET allowed_paths = []",
    "SET allowed_directories = []",
    "SET enable_external_access = false",
)


def open_atlas(atlas_dir: str | Path, *, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views ``atlas`` and ``atlas_<stratum>``.

    Validates the manifest and every part file first; a corrupt file raises ``AtlasError`` naming
    it. ``threads`` caps DuckDB's threads (it must be set here: the configuration is then locked).
    DuckDB reads the atlas through Arrow and has no file access (see the module docstring). One
    connection per thread (DuckDB's rule); close it when done.
    """
    root = Path(atlas_dir).resolve()
    read_manifest(root)
    files = part_files(root)
    try:
        dataset = _dataset(root, files)
    except (pa.ArrowException, OSError) as exc:
        raise AtlasError(f"atlas {root}: cannot read its Parquet parts: {one_line(exc)}") from exc
    con = duckdb.connect(":memory:", config=_engine_config(threads))
    try:
        for statement in _SEAL:
            con.execute(statement)
        con.register("atlas_parts", dataset)
        con.execute("CREATE VIEW atlas AS SELECT * FROM atlas_parts")
        for stratum in STRATA:
            con.execute(
                f"CREATE VIEW atlas_{stratum} AS SELECT * FROM atlas WHERE stratum = '{stratum}'"
            )
        con.execute("SET lock_configuration = true")  # no SET/PRAGMA/RESET can undo the above
    except Exception:
        con.close()
        raise
    return con


def _explained(statement) -> str | None:
    """The text an ``EXPLAIN [ANALYZE] [(options)]`` statement explains (None if not found)."""
    text = statement.query
    tokens = duckdb.tokenize(text)
    words = [(pos, tt) for pos, tt in tokens if tt != duckdb.token_type.comment]
    i = 0
    if i < len(words) and text[words[i][0] :].upper().startswith("EXPLAIN"):
        i += 1
    else:
        return None
    if i < len(words) and text[words[i][0] :].upper().startswith("ANALYZE"):
        i += 1
    if i < len(words) and text[words[i][0]] == "(":  # EXPLAIN (FORMAT json) ...
        depth = 0
        while i < len(words):
            char = text[words[i][0]]
            depth += (char == "(") - (char == ")")
            i += 1
            if depth == 0:
                break
    return text[words[i][0] :] if i < len(words) else None


def check_read_only(sql: str) -> None:
    """Refuse anything but one SELECT-like statement or an ``EXPLAIN [ANALYZE]`` of one."""
    statements = _parse(sql)
    if len(statements) != 1:
        raise AtlasError(
            f"the atlas is read-only: expected exactly one SQL statement, got {len(statements)} "
            f"({ALLOWED})"
        )
    statement = statements[0]
    kind = statement.type.name
    if kind == "EXPLAIN":
        inner_sql = _explained(statement)
        inner = _parse(inner_sql) if inner_sql else []
        if len(inner) != 1 or inner[0].type.name != "SELECT":
            what = _label(inner[0]) if len(inner) == 1 else "something else"
            raise AtlasError(f"the atlas is read-only: EXPLAIN of {what} is refused ({ALLOWED})")
    elif kind != "SELECT":
        raise AtlasError(
            f"the atlas is read-only: {_label(statement)} statements are refused ({ALLOWED})"
        )


def _label(statement) -> str:
    """The statement's kind for a message: INSTALL and RESET are LOAD and SET to DuckDB."""
    kind = statement.type.name
    if kind in ("LOAD", "SET"):
        text = statement.query
        words = [
            text[pos:].split(None, 1)[0].upper()
            for pos, tt in duckdb.tokenize(text)
            if tt == duckdb.token_type.keyword
        ]
        if words[:1] == ["RESET"] or "INSTALL" in words[:2]:
            return "RESET" if words[0] == "RESET" else "INSTALL"
    return kind


def _parse(sql: str) -> list:
    try:
        return duckdb.extract_statements(sql)
    except Exception as exc:  # duckdb.ParserException and friends
        raise AtlasError(f"invalid SQL: {one_line(exc)}") from exc


def run_query(
    con: duckdb.DuckDBPyConnection, sql: str, limit: int | None = None
) -> tuple[pa.Table, bool]:
    """Run one read statement on an atlas connection: ``(table, truncated)``.

    With ``limit``, at most ``limit`` rows are fetched (streamed, so a huge result is never
    materialised) and ``truncated`` says whether more rows existed.
    """
    check_read_only(sql)
    if limit is not None and limit < 0:
        raise AtlasError(f"limit must be >= 0, got {limit}")
    reader = None
    try:
        batch = max(1, min(limit or 65536, 65536))
        reader = con.sql(sql).to_arrow_reader(batch_size=batch)
        if limit is None:
            return reader.read_all(), False
        batches, rows = [], 0
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if rows > limit:
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
    except (duckdb.Error, pa.ArrowException) as exc:
        raise AtlasError(f"query failed: {one_line(exc)}") from exc
    finally:
        if reader is not None:
            # An early stop leaves the result undrained; closing it frees the connection
            # ("connection has an open result") for the caller's next query.
            reader.close()
    return table.slice(0, limit), table.num_rows > limit


def query(atlas_dir: str | Path, sql: str, limit: int | None = None) -> pa.Table:
    """The result of one read-only SQL statement over the atlas's views, as an Arrow table."""
    con = open_atlas(atlas_dir)
    try:
        return run_query(con, sql, limit)[0]
    finally:
        con.close()


def _fetch(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    try:
        return con.sql(sql).fetchall()
    except duckdb.Error as exc:
        raise AtlasError(f"atlas query failed: {one_line(exc)}") from exc


def stats(atlas_dir: str | Path, top: int = 10) -> dict:
    """Per-stratum summary: kept rows and tokens from the Parquet, coverage and totals from the
    manifest, the ``n`` distribution and the ``top`` grams by count (ties by bytes).

    Returns ``{"atlas", "corpus", "config_hash", "build_seconds", "strata": {name: {...}}}``.
    """
    root = Path(atlas_dir).resolve()
    manifest = read_manifest(root)
    con = open_atlas(root)
    try:
        totals = _fetch(
            con,
            "SELECT stratum, count(*), sum(count), min(n), max(n) FROM atlas GROUP BY stratum",
        )
        ns = _fetch(con, "SELECT stratum, n, count(*) FROM atlas GROUP BY ALL ORDER BY ALL")
        tops = _fetch(
            con,
            "SELECT stratum, gram, text, count FROM atlas QUALIFY row_number() OVER "
            f"(PARTITION BY stratum ORDER BY count DESC, gram) <= {int(top)} "
            "ORDER BY stratum, count DESC, gram",
        )
    finally:
        con.close()
    recorded = manifest.get("strata", {})
    strata: dict[str, dict] = {}
    for stratum, rows, tokens, n_min, n_max in totals:
        entry = {k: recorded.get(stratum, {}).get(k) for k in _MANIFEST_KEYS}
        entry.update(rows=int(rows), tokens=int(tokens or 0), n_range=[int(n_min), int(n_max)])
        entry["n_distribution"] = {int(n): int(c) for s, n, c in ns if s == stratum}
        entry["top"] = [
            {"gram": bytes(g), "text": t, "count": int(c)} for s, g, t, c in tops if s == stratum
        ]
        strata[stratum] = entry
    return {
        "atlas": str(root),
        "corpus": manifest.get("corpus", {}),
        "config_hash": manifest.get("config_hash"),
        "build_seconds": manifest.get("build_seconds"),
        "strata": {s: strata[s] for s in STRATA if s in strata},
    }


_MANIFEST_KEYS = ("distinct_total", "kept", "tokens_total", "tokens_kept", "coverage")
