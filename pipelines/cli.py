"""The ``geolip`` command line: one entry point, one subcommand per task.

Adding a subcommand (e.g. ``geolip aleph sample`` or ``geolip demo``):

1. In its own module (say ``pipelines/aleph_cli.py``) define the two functions and a list::

       def add_arguments(parser: argparse.ArgumentParser) -> None:
           parser.add_argument("--preset", default="tiny")

       def run(args: argparse.Namespace) -> int:
           import torch  # heavy imports inside run(), so `geolip --help` stays fast
           ...
           return 0

       COMMANDS = [Command("aleph sample", "sample text from a checkpoint", add_arguments, run)]

2. Add ``"pipelines.aleph_cli"`` to ``COMMAND_MODULES`` below.

A name with spaces is a nested command: ``"aleph sample"`` creates the ``aleph`` group on first use.
``run`` returns the exit code (``None`` means 0). It reports mistakes by raising ``GeolipError``
or a ``ValueError`` subclass such as ``CorpusError``: ``main`` prints ``geolip: error: MESSAGE`` on
one line and returns 2 (``GEOLIP_DEBUG=1`` re-raises, for the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipelines.errors import USER_ERRORS


@dataclass(frozen=True)
class Command:
    """A subcommand: its (possibly nested, space-separated) name, help line and two hooks."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


# Modules exposing `COMMANDS: list[Command]`, imported when the parser is built.
COMMAND_MODULES: tuple[str, ...] = (
    "pipelines.aleph_cli",
    "pipelines.ui",
    "pipelines.atlas_query_cli",
    "pipelines.atlas_cli",
    "pipelines.train_cli",
    "pipelines.eval_cli",
    "pipelines.features_cli",
    "pipelines.svae_cli",
)

ENTRY_POINT_GROUP = "geolip.commands"
OPTIONAL_PACKAGES = ("ray", "mlflow", "duckdb", "pyarrow", "datasets", "transformers")


def geolip_version() -> str:
    """The installed distribution's version (``unknown`` when run from an uninstalled tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("geolip")
    except PackageNotFoundError:
        return "unknown"


def _probe(module: str) -> str:
    """``module``'s version if it imports, else the error on one line."""
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # any import failure is a finding to report, not a crash
        return f"not importable ({_one_line(e)})"
    return str(getattr(mod, "__version__", "imported (no __version__)"))


def _torch_rows() -> list[tuple[str, str]]:
    try:
        import torch
    except Exception as e:
        return [("torch", f"not importable ({_one_line(e)})")]
    rows = [("torch", torch.__version__), ("CPU threads", f"{torch.get_num_threads()} (torch)")]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        rows.append(("CUDA", f"available, CUDA {torch.version.cuda}: {', '.join(names)}"))
    else:
        rows.append(("CUDA", "not available"))
    return rows


def info_rows() -> list[tuple[str, str]]:
    """``(component, status)`` rows describing this installation."""
    import platform

    rows = [
        ("geolip", geolip_version()),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("platform", platform.platform()),
        ("CPUs", str(os.cpu_count())),
    ]
    rows += _torch_rows()
    rows += [(name, _probe(name)) for name in OPTIONAL_PACKAGES]
    return rows


def _run_info(args: argparse.Namespace) -> int:
    rows = info_rows()
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        width = max(len(name) for name, _ in rows)
        for name, status in rows:
            print(f"{name:<{width}}  {status}")
        return 0
    table = Table(title="geolip info")
    table.add_column("component", style="bold")
    table.add_column("status", overflow="fold")
    for name, status in rows:
        table.add_row(name, status)
    Console().print(table)
    return 0


INFO = Command(
    "info", "show versions, devices and which optional packages import", lambda p: None, _run_info
)


def load_commands() -> list[Command]:
    """The built-in commands, those of every module in ``COMMAND_MODULES``, and those of the
    modules registered under the ``geolip.commands`` entry point (``tune``'s ``geolip sweep``:
    layers above ``pipelines`` plug in without ``pipelines`` importing them)."""
    from importlib.metadata import entry_points

    commands = [INFO]
    for module in COMMAND_MODULES:
        commands += importlib.import_module(module).COMMANDS
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        commands += importlib.import_module(ep.value).COMMANDS
    return commands


def build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    """An argparse parser with one (possibly nested) subparser per command."""
    parser = argparse.ArgumentParser(
        prog="geolip", description="Aleph-routed language models and the lexical atlas."
    )
    parser.add_argument("--version", action="version", version=f"geolip {geolip_version()}")
    groups = {(): parser.add_subparsers(dest="command", metavar="COMMAND", required=True)}
    for command in commands:
        *path, leaf = command.name.split()
        sub = _group(groups, tuple(path))
        child = sub.add_parser(leaf, help=command.help, description=command.help)
        command.add_arguments(child)
        child.set_defaults(_command=command)
    return parser


def _group(groups: dict, path: tuple[str, ...]) -> argparse._SubParsersAction:
    """The subparsers action for the group ``path``, creating parent groups as needed."""
    if path not in groups:
        parent = _group(groups, path[:-1])
        group = parent.add_parser(path[-1], help=f"{' '.join(path)} commands")
        dest = "command_" + "_".join(path)
        groups[path] = group.add_subparsers(dest=dest, metavar="COMMAND", required=True)
    return groups[path]


def _one_line(error: BaseException) -> str:
    message = " ".join(str(error).split()) or type(error).__name__
    return message if isinstance(error, USER_ERRORS) else f"{type(error).__name__}: {message}"


def main(argv: Sequence[str] | None = None, commands: Sequence[Command] | None = None) -> int:
    """Run the ``geolip`` command line; returns the exit code (2 for usage and user errors)."""
    parser = build_parser(load_commands() if commands is None else commands)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on --help, --version and usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return args._command.run(args) or 0
    except USER_ERRORS as e:
        if os.environ.get("GEOLIP_DEBUG", "").lower() in ("1", "true", "yes"):
            raise
        print(f"geolip: error: {_one_line(e)}", file=sys.stderr)
        return 2
