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


def _leaf_parsers(parser: argparse.ArgumentParser, path: str = "geolip"):
    """``(command path, parser)`` for every subcommand that runs something."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for sub in subs:
        for name, child in sub.choices.items():
            yield from _leaf_parsers(child, f"{path} {name}")


CLOSED_SETS = {"scale", "head", "graft", "scope", "format", "gpu", "split", "program"}


def test_every_flag_has_help_and_closed_sets_use_choices() -> None:
    from pipelines.cli import build_parser, load_commands

    leaves = dict(_leaf_parsers(build_parser(load_commands())))
    assert {
        "geolip train aleph",
        "geolip sweep ladder",
        "geolip demo",
        "geolip atlas build",
    } <= set(leaves)
    missing, open_sets = [], []
    for path, parser in leaves.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flag = action.option_strings[0] if action.option_strings else action.dest
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {flag}")
            if action.dest in CLOSED_SETS and not action.choices:
                open_sets.append(f"{path} {flag}")
            if action.dest == "workers":
                assert "Ray Train workers" in action.help, f"{path} --workers: {action.help}"
    assert not missing, f"flags without help: {missing}"
    assert not open_sets, f"closed sets without choices: {open_sets}"
    assert "(default: tiny)" in " ".join(leaves["geolip train aleph"].format_help().split())


def test_one_scale_vocabulary_in_train_sweep_and_demo() -> None:
    from demo.scales import DEMO_SCALES
    from pipelines.cli import build_parser, load_commands
    from pipelines.scales import SCALES
    from tune.spec import SWEEP_SCALES

    assert list(SCALES) == list(SWEEP_SCALES) == list(DEMO_SCALES)
    for name, scale in SCALES.items():
        assert SWEEP_SCALES[name].preset == scale.preset and DEMO_SCALES[name].train is scale
        assert SWEEP_SCALES[name].base().preset == scale.run_config().preset
    leaves = dict(_leaf_parsers(build_parser(load_commands())))
    for path in ("geolip train aleph", "geolip sweep seed-battery", "geolip demo"):
        (scale,) = [a for a in leaves[path]._actions if a.dest == "scale"]
        assert tuple(scale.choices) == tuple(SCALES), path
    heads = [a for a in leaves["geolip train aleph"]._actions if a.dest == "head"]
    assert heads[0].choices == ("byte", "kernel", "pmix", "apmix")
