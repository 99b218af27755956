"""``geolip atlas query|stats``: read an atlas with DuckDB, as a table, CSV or JSON.

Binary cells (the ``gram`` column) are written as UTF-8 text with ``\\xNN`` escapes for bytes
that are not valid UTF-8 (quoted in tables, so spaces show); select ``hex(gram)`` when the exact
bytes matter.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from decimal import Decimal

from pipelines.cli import Command, int_at_least

FORMATS = ("table", "csv", "json")
TABLE_DEFAULT_LIMIT = 50


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _display(value) -> str:
    """A table cell: byte strings quoted, so that spaces and newlines in grams stay visible."""
    if isinstance(value, bytes | bytearray | memoryview):
        return repr(bytes(value).decode("utf-8", "backslashreplace"))
    return _cell(value)


def json_value(value):
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, Decimal):  # DuckDB's sum() over BIGINT is a HUGEINT -> decimal128
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def print_table(title: str, columns: list[str], rows: list[list], caption: str | None = None):
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, caption=caption)
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        # Text, not str: a gram such as "[b]" must not be read as rich markup.
        table.add_row(*(Text(_display(v)) for v in row))
    Console().print(table)


def write_result(table, fmt: str, truncated: bool = False, out=None) -> None:
    """Write an Arrow table to ``out`` (stdout) as a rich table, CSV or a JSON array of rows."""
    out = sys.stdout if out is None else out
    rows = table.to_pylist()
    if fmt == "json":
        out.write(json.dumps(rows, ensure_ascii=False, default=json_value, indent=1) + "\n")
    elif fmt == "csv":
        import csv

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(table.column_names)
        writer.writerows([[_cell(v) for v in row.values()] for row in rows])
        out.write(buffer.getvalue())
    else:
        more = " (more rows not shown: raise --limit)" if truncated else ""
        caption = f"{len(rows)} row{'s' * (len(rows) != 1)}{more}"
        print_table("", table.column_names, [list(r.values()) for r in rows], caption)


def _add_query(p: argparse.ArgumentParser) -> None:
    p.add_argument("atlas", metavar="DIR", help="atlas directory (from `geolip atlas build`)")
    p.add_argument("sql", metavar="SQL", help="one SELECT over the views atlas, atlas_char, ...")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format")
    p.add_argument(
        "--limit",
        type=int_at_least(0),
        default=None,
        help=f"at most N rows (default: all for csv/json, {TABLE_DEFAULT_LIMIT} for table)",
    )


def _run_query(args: argparse.Namespace) -> int:
    from atlas.query import open_atlas, run_query
    from pipelines.storage import readable

    limit = args.limit
    if limit is None and args.format == "table":
        limit = TABLE_DEFAULT_LIMIT
    con = open_atlas(readable(args.atlas, "atlas"))
    try:
        table, truncated = run_query(con, args.sql, limit)
    finally:
        con.close()
    write_result(table, args.format, truncated)
    if truncated and args.format != "table":
        print(f"geolip: note: output cut at --limit {limit} rows", file=sys.stderr)
    return 0


def _add_stats(p: argparse.ArgumentParser) -> None:
    p.add_argument("atlas", metavar="DIR", help="atlas directory")
    p.add_argument("--top", type=int, default=10, help="top grams shown per stratum")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")


def _run_stats(args: argparse.Namespace) -> int:
    from atlas.query import stats
    from pipelines.storage import readable

    out = stats(readable(args.atlas, "atlas"), top=args.top)
    out["atlas"] = str(args.atlas)  # a URI, not the local cache copy it was read from
    if args.json:
        print(json.dumps(out, ensure_ascii=False, default=json_value, indent=1))
        return 0
    corpus = out["corpus"]
    title = (
        f"atlas {out['atlas']} ({corpus.get('uri')}, split {corpus.get('split')}, "
        f"{corpus.get('n_bytes')} bytes, config {out['config_hash']})"
    )
    columns = ["stratum", "kept", "distinct total", "tokens kept", "coverage", "n: rows"]
    rows = [
        [
            name,
            s["rows"],
            s["distinct_total"],
            s["tokens"],
            s["coverage"],
            " ".join(f"{n}:{c}" for n, c in s["n_distribution"].items()),
        ]
        for name, s in out["strata"].items()
    ]
    print_table(title, columns, rows)
    for name, s in out["strata"].items():
        top = [[i + 1, t["gram"], t["count"]] for i, t in enumerate(s["top"])]
        print_table(f"top {len(top)} {name}", ["rank", "gram", "count"], top)
    return 0


COMMANDS = [
    Command("atlas query", "run one read-only SQL query over an atlas", _add_query, _run_query),
    Command("atlas stats", "per-stratum statistics of an atlas", _add_stats, _run_stats),
]
