"""The error a ``geolip`` command printed, as a test captured it.

Once any test has started the session's Ray, Ray's log monitor forwards its processes' log lines
(``(pid=gcs_server) ...``, ``(TrainController pid=...) ...``) to this process's stderr whenever
they arrive, so they can land in the capture of a later test that never touched Ray. They are
not the command's output and are dropped here.
"""

from __future__ import annotations

import re

_RAY_LOG = re.compile(r"^(\x1b\[[0-9;]*m)?\([^)\n]*pid=[^)\n]*\)")


def cli_error(capsys) -> str:
    """The command's stderr without Ray's forwarded log lines; it must be one ``geolip: error:``
    line."""
    lines = capsys.readouterr().err.splitlines()
    err = "\n".join(line for line in lines if not _RAY_LOG.match(line)).strip()
    assert err.startswith("geolip: error:") and "\n" not in err, err
    return err
