"""Bad input to ``geolip ui``: one error line, exit 2, nothing on stdout and every file of the
case's directory unchanged (no ``ui.log``, no ``served-artifacts``: each case fails before the
MLflow server starts, so none needs one).

A store is a SQLite file made with ``sqlite3`` (the checks read its header, not its tables). A
port in use is a socket this test binds and listens on (``{held}`` in the argv is its port).
"""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest
from battery_harness import Case, check_case

STORE = "{tmp}/data/mlflow/mlflow.db"
PORT_RANGE = "argument --port: expected a port number from 1 to 65535"


def store(tmp: Path) -> None:
    """A SQLite database where ``geolip ui`` looks for the store by default."""
    (tmp / "data" / "mlflow").mkdir(parents=True)
    with sqlite3.connect(tmp / "data" / "mlflow" / "mlflow.db") as db:
        db.execute("CREATE TABLE t (x)")


def a_file(tmp: Path) -> None:
    (tmp / "f").write_text("not a directory\n")


def mlflow_dir_is_a_file(tmp: Path) -> None:
    (tmp / "data").mkdir()
    (tmp / "data" / "mlflow").write_text("not a directory\n")


def store_is_a_dir(tmp: Path) -> None:
    (tmp / "data" / "mlflow" / "mlflow.db").mkdir(parents=True)


def store_not_sqlite(tmp: Path) -> None:
    (tmp / "data" / "mlflow").mkdir(parents=True)
    (tmp / "data" / "mlflow" / "mlflow.db").write_text("not a database\n" * 4)


def port(value: str, expect: str) -> Case:
    slug = value.replace("-", "minus") or "empty"
    return Case(f"port-{slug}", ("ui", f"--port={value}"), expect, setup=store)


CASES = [
    port("abc", f"{PORT_RANGE}, got 'abc'"),
    port("", f"{PORT_RANGE}, got ''"),
    port("0", f"{PORT_RANGE}, got '0'"),
    port("-1", f"{PORT_RANGE}, got '-1'"),
    port("65536", f"{PORT_RANGE}, got '65536'"),
    port("5000.5", f"{PORT_RANGE}, got '5000.5'"),
    Case(
        "port-in-use",
        ("ui", "--port", "{held}"),
        "--port {held}: 127.0.0.1:{held} is already in use; pass --port N",
        setup=store,
    ),
    Case(
        "port-in-use-on-every-interface",
        ("ui", "--host", "0.0.0.0", "--port", "{held}"),
        "is already in use",
        setup=store,
    ),
    Case(
        "host-unknown",
        ("ui", "--host", "nohost.invalid"),
        "--host 'nohost.invalid': no such host name or address",
        setup=store,
    ),
    Case(
        "host-not-this-machine",
        ("ui", "--host", "203.0.113.7"),
        "--host 203.0.113.7: not an address of this machine",
        setup=store,
    ),
    Case("no-store", ("ui",), f"no MLflow store at {STORE}; run `geolip demo`"),
    Case(
        "data-dir-under-file",
        ("ui", "--data-dir", "{tmp}/f/data"),
        "--data-dir {tmp}/f/data lies under {tmp}/f, which is a regular file",
        setup=a_file,
    ),
    Case(
        "geolip-data-under-file",
        ("ui",),
        "--data-dir ($GEOLIP_DATA or ./data) {tmp}/f/data lies under {tmp}/f",
        setup=a_file,
        env={"GEOLIP_DATA": "{tmp}/f/data"},
    ),
    Case(
        "store-dir-is-a-file",
        ("ui",),
        f"--data-dir: the MLflow store {STORE} lies under {{tmp}}/data/mlflow, which is a "
        "regular file",
        setup=mlflow_dir_is_a_file,
    ),
    Case(
        "store-is-a-dir",
        ("ui",),
        f"--data-dir: the MLflow store {STORE} is a directory",
        setup=store_is_a_dir,
    ),
    Case(
        "store-not-sqlite",
        ("ui",),
        f"--data-dir: the MLflow store {STORE} is not an SQLite database",
        setup=store_not_sqlite,
    ),
    Case(
        "tracking-uri-under-file",
        ("ui", "--tracking-uri", "sqlite:///{tmp}/f/mlflow.db"),
        "--tracking-uri: the MLflow store {tmp}/f/mlflow.db lies under {tmp}/f",
        setup=a_file,
    ),
    Case(
        "tracking-uri-missing",
        ("ui", "--tracking-uri", "sqlite:///{tmp}/nope.db"),
        "no MLflow store at {tmp}/nope.db",
    ),
    Case("tracking-uri-file-store", ("ui", "--tracking-uri", "file:/x"), "is a file store"),
    Case(
        "tracking-uri-memory",
        ("ui", "--tracking-uri", "sqlite:///:memory:"),
        "is not a SQLite file",
    ),
    Case(
        "tracking-uri-unsupported",
        ("ui", "--tracking-uri", "ftp://host/x"),
        "unsupported tracking URI 'ftp://host/x'",
    ),
    Case(
        "tracking-uri-databricks",
        ("ui", "--tracking-uri", "databricks"),
        "`geolip ui` serves SQLite stores; databricks has its own UI",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_ui_bad_input(case, tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        check_case(case, "ui", tmp_path, values={"held": held.getsockname()[1]})


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)
