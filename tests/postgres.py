"""A real PostgreSQL server for tests: Debian's ``initdb`` / ``pg_ctl`` in a temp dir on 127.0.0.1.

PostgreSQL refuses to run as root: as root the cluster belongs to the ``postgres`` system user
(``runuser``). Trust authentication for its one superuser, ``geolip``, on a free port; the
server is stopped (``pg_ctl stop -m immediate``) and its directory removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipelines.runtime import free_port

BIN = Path("/usr/lib/postgresql")


def postgres_bin(name: str) -> str | None:
    """The newest installed PostgreSQL's ``name`` (initdb, pg_ctl), or None."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(BIN.glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    return next((str(v / name) for v in versions if (v / name).exists()), None)


@contextlib.contextmanager
def postgres(password: str | None = None) -> Iterator[str]:
    """Run PostgreSQL while the block runs; yields ``postgresql://geolip@127.0.0.1:PORT/postgres``.

    With ``password``, connections over TCP must give it (scram-sha-256), as on a team's server;
    the URI still carries none (clients pass it as ``PGPASSWORD``)."""
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    port, data = free_port(), root / "data"

    def run(*argv: str) -> None:
        subprocess.run([*as_user, *argv], check=True, capture_output=True, timeout=120)

    auth = ["-A", "trust"]
    if password is not None:
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        if as_user:
            shutil.chown(pwfile, "postgres", "postgres")
        auth = ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
    try:
        run(initdb, "-D", str(data), *auth, "-U", "geolip", "--no-sync")
        options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off"
        run(pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
        try:
            yield f"postgresql://geolip@127.0.0.1:{port}/postgres"
        finally:
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
