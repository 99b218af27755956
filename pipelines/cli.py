"""The ``geolip`` command line: one entry point, one subcommand per task.

Adding a subcommand (e.g. ``geolip aleph sample`` or ``geolip demo``):

1. In its family's ``cli`` module (say ``pipelines/aleph/cli.py``) define two functions and a
   list::

       def add_arguments(parser: argparse.ArgumentParser) -> None:
           parser.add_argument("--scale", choices=SCALE_NAMES, default="tiny", help="run size")

       def run(args: argparse.Namespace) -> int:
           import torch  # heavy imports inside run(), so `geolip --help` stays fast
           ...
           return 0

       COMMANDS = [Command("aleph sample", "sample text from a checkpoint", add_arguments, run)]

2. Add the module to ``COMMAND_MODULES`` below (layers above ``pipelines`` register theirs
   under the ``geolip.commands`` entry point instead).

Every flag has a help line; closed sets use ``choices``; the help shows each default.


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
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipelines.errors import USER_ERRORS, Interrupted, describe_os_error, watch_sigint

INTERRUPTED = 130  # the shell's code for a process ended by SIGINT (128 + 2)


@dataclass(frozen=True)
class Command:
    """A subcommand: its (possibly nested, space-separated) name, help line and two hooks."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    interrupted: Callable[[argparse.Namespace], str] | None = None
    """What an interrupt (Ctrl-C) kept and how to continue, for its one line (default: the
    command keeps nothing, so running it again starts over)."""


# Modules exposing `COMMANDS: list[Command]`, imported when the parser is built.
COMMAND_MODULES: tuple[str, ...] = (
    "pipelines.ui",
    "pipelines.atlas.query",
    "pipelines.atlas.cli",
    "pipelines.aleph.cli",
    "pipelines.kn",
    "pipelines.features.cli",
    "pipelines.svae.cli",
    "pipelines.export",
    "pipelines.config_show",
)

ENTRY_POINT_GROUP = "geolip.commands"
OPTIONAL_PACKAGES = ("ray", "mlflow", "duckdb", "pyarrow", "datasets", "transformers")


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help with each flag's default appended (when it has a meaningful one)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        quiet = (None, False, "", argparse.SUPPRESS, [], ())
        said = "default" in text  # the help line already says what the default means
        if said or action.default in quiet or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse with usage errors on one ``geolip: error:`` line, like every other mistake."""

    def error(self, message: str):
        self.exit(2, f"geolip: error: {self.prog}: {message} (see {self.prog} --help)\n")


def add_common_run_arguments(p: argparse.ArgumentParser) -> None:
    """Flags every tracked command shares: where data and the MLflow store live."""
    p.add_argument(
        "--data-dir", default=None, help="data directory (default $GEOLIP_DATA or ./data)"
    )
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else SQLite under the data dir)",
    )


def add_set_argument(p: argparse.ArgumentParser, text: str, dest: str = "overrides") -> None:
    """``--set SECTION.KEY=VALUE`` (repeatable): the command line's config override syntax; and
    ``--config FILE`` (``args.config_file``), the same keys from a YAML or JSON file
    (``pipelines.config_file``), applied before ``--set``."""
    p.add_argument(
        "--set", dest=dest, action="append", default=[], metavar="SECTION.KEY=VALUE", help=text
    )
    p.add_argument(
        "--config",
        dest="config_file",
        default=None,
        metavar="FILE",
        help="a .yaml/.yml or .json file of the same keys, nested (train: {steps: 500}) or "
        "dotted (train.steps: 500), applied before --set, which wins; `geolip config show "
        "--format yaml` writes one",
    )


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number ``>= low`` (the usage error names the flag)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


def gpu_flag(value: str) -> bool | None:
    """``--gpu auto|on|off`` as ``RunContext.use_gpu`` (None: GPUs when the cluster has them)."""
    return {"auto": None, "on": True, "off": False}[value]


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
    parser = Parser(
        prog="geolip",
        description="Aleph-routed language models and the lexical atlas.",
        formatter_class=HelpFormatter,
    )

    parser.add_argument("--version", action="version", version=f"geolip {geolip_version()}")
    groups = {(): parser.add_subparsers(dest="command", metavar="COMMAND", required=True)}
    for command in commands:
        *path, leaf = command.name.split()
        sub = _group(groups, tuple(path))
        child = sub.add_parser(
            leaf, help=command.help, description=command.help, formatter_class=HelpFormatter
        )

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
    # An OS error about a path says which path (our own raised errors carry a message instead).
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError) and error.filename:
        return describe_os_error(error)
    message = " ".join(str(error).split()) or type(error).__name__
    return message if isinstance(error, USER_ERRORS) else f"{type(error).__name__}: {message}"


def _interrupted(args: argparse.Namespace, error: KeyboardInterrupt) -> int:
    """One line for Ctrl-C: what the command kept and how to continue; exit code 130."""
    command = args._command
    try:
        kept = str(error) if isinstance(error, Interrupted) else ""
        kept = kept or (command.interrupted(args) if command.interrupted else "")
    except Exception:  # the note is best effort: never a traceback on the way out
        kept = ""
    kept = kept or f"nothing was kept; run the same `geolip {command.name}` command again"
    print(f"geolip: error: interrupted: {kept}", file=sys.stderr, flush=True)
    return INTERRUPTED


def main(argv: Sequence[str] | None = None, commands: Sequence[Command] | None = None) -> int:
    """Run the ``geolip`` command line; returns the exit code (2 for usage and user errors)."""
    parser = build_parser(load_commands() if commands is None else commands)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on --help, --version and usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    from pipelines.run_context import record_source

    record_source(args._command.name.split())  # the MLflow runs' source: the command, no flags
    with watch_sigint() as interrupted:
        return _run(args, interrupted)


def _run(args: argparse.Namespace, interrupted: threading.Event) -> int:
    """Run the parsed command: errors as one line (exit 2), Ctrl-C as one line (exit 130)."""
    try:
        return args._command.run(args) or 0
    except KeyboardInterrupt as e:
        return _interrupted(args, e)
    except Exception as e:
        # Ctrl-C reaches Ray's processes too; what fails because they died is the interrupt.
        if interrupted.is_set():
            return _interrupted(args, KeyboardInterrupt())
        if not isinstance(e, USER_ERRORS):
            raise
        if os.environ.get("GEOLIP_DEBUG", "").lower() in ("1", "true", "yes"):
            raise
        print(f"geolip: error: {_one_line(e)}", file=sys.stderr)
        return 2
