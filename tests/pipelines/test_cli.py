"""The geolip CLI: info, usage errors, one-line user errors and nested subcommands."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from clierr import cli_error

from atlas.corpus import CorpusError
from pipelines import cli
from pipelines.cli import Command, main
from pipelines.errors import GeolipError

_DEFAULT_PACKAGES = cli.OPTIONAL_PACKAGES


def test_info_reports_torch_and_optional_packages(capsys, monkeypatch) -> None:
    # mlflow, ray and transformers take seconds to import: probe two cheap packages and one that
    # does not exist, which must be reported, not raised.
    monkeypatch.setattr(cli, "OPTIONAL_PACKAGES", ("pyarrow", "geolip_no_such_package"))
    assert main(["info"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for name in ("geolip", "python", "torch", "CUDA", "pyarrow", "geolip_no_such_package"):
        assert name in out
    assert "not importable" in out
    assert set(_DEFAULT_PACKAGES) == {
        "ray",
        "mlflow",
        "duckdb",
        "pyarrow",
        "datasets",
        "transformers",
    }


def test_usage_errors_exit_2(capsys) -> None:
    assert main(["nope"]) == 2
    assert "invalid choice: 'nope'" in cli_error(capsys)
    assert main([]) == 2
    assert "required: COMMAND" in cli_error(capsys)
    assert main(["info", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in cli_error(capsys)
    assert main(["train", "aleph", "--corpus", "x", "--scale", "huge"]) == 2
    err = cli_error(capsys)
    assert "geolip train aleph: argument --scale: invalid choice: 'huge'" in err and "smoke" in err
    assert main(["--help"]) == 0


def _raiser(error: Exception) -> Command:
    def run(args: argparse.Namespace) -> int:
        raise error

    return Command("fail", "always fails", lambda p: None, run)


@pytest.mark.parametrize(
    "error",
    [
        CorpusError("no files match the glob 'x/*.txt'"),
        GeolipError("run 'abc'\nnot found"),
        FileNotFoundError("missing.bin"),
    ],
)
def test_user_errors_are_one_line(error, capsys, monkeypatch) -> None:
    monkeypatch.delenv("GEOLIP_DEBUG", raising=False)
    assert main(["fail"], commands=[_raiser(error)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geolip: error: ") and err.count("\n") == 1
    assert " ".join(str(error).split()) in err
    monkeypatch.setenv("GEOLIP_DEBUG", "1")
    with pytest.raises(type(error)):
        main(["fail"], commands=[_raiser(error)])


def test_bugs_keep_their_traceback() -> None:
    with pytest.raises(KeyError):
        main(["fail"], commands=[_raiser(KeyError("bug"))])


def test_nested_subcommands() -> None:
    seen = {}

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--n", type=int, default=1)

    def run(args: argparse.Namespace) -> int:
        seen["n"] = args.n
        return 3

    commands = [Command("aleph sample", "sample", add_arguments, run)]
    assert main(["aleph", "sample", "--n", "4"], commands=commands) == 3 and seen == {"n": 4}
    assert main(["aleph"], commands=commands) == 2


def test_python_dash_m_pipelines() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("geolip ")
