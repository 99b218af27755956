"""``geolip submit``'s checks before anything reaches a cluster (no Ray needed)."""

from __future__ import annotations

import json

import pytest

from cluster.submit import (
    Submission,
    SubmitError,
    check_command,
    client,
    job_errors,
    job_runtime_env,
    resolve_address,
    submit,
)
from pipelines.cli import main


def _check(*command, **kw):
    return check_command(Submission(tuple(command), **kw))


def test_a_valid_command_gets_its_data_dir_and_tracking_uri_in_the_job_env(monkeypatch):
    monkeypatch.delenv("GEOLIP_DATA", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv, env = _check(
        "geolip",
        "train",
        "aleph",
        "--corpus",
        "builtin:tiny",
        data_dir="/shared/geolip",
        tracking_uri="http://mlflow:5000",
    )
    assert argv == ["train", "aleph", "--corpus", "builtin:tiny"]
    assert env == {"GEOLIP_DATA": "/shared/geolip", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    argv, env = _check("atlas", "build", "--corpus", "builtin:tiny", "--out", "/shared/atlas")
    assert argv[:2] == ["atlas", "build"] and env == {}


@pytest.mark.parametrize(
    ("command", "kw", "expected"),
    [
        (
            ("atlas", "build", "--corpus", "builtin:tiny", "--out", "atlas"),
            {},
            "--out atlas is relative",
        ),
        (
            ("train", "aleph", "--corpus", "builtin:tiny", "--data-dir", "data"),
            {},
            "--data-dir data is relative",
        ),
        (("train", "aleph", "--corpus", "builtin:tiny"), {}, "no data directory"),
        (
            ("train", "aleph", "--corpus", "builtin:tiny"),
            {"data_dir": "rel/dir"},
            "--data-dir rel/dir is relative",
        ),
        (("train", "aleph", "--bogus"), {"data_dir": "/d"}, "not a valid geolip command"),
        (("no-such-command",), {"data_dir": "/d"}, "not a geolip command: 'no-such-command'"),
        (("ls", "-la"), {"data_dir": "/d"}, "not a geolip command: 'ls'"),
        (
            ("train", "aleph", "--corpus", "builtin:tiny"),
            {"data_dir": "/d", "tracking_uri": "sqlite:///rel.db"},
            "is not an absolute SQLite path",
        ),
        ((), {}, "nothing to submit"),
    ],
)
def test_commands_that_would_misfire_on_a_cluster_are_refused(monkeypatch, command, kw, expected):
    monkeypatch.delenv("GEOLIP_DATA", raising=False)
    with pytest.raises(SubmitError, match=expected):
        _check(*command, **kw)


def test_addresses_unreachable_servers_and_the_cli(capsys):
    assert resolve_address("http://head:8265/") == "http://head:8265"
    with pytest.raises(SubmitError, match="not a GCS or client address"):
        resolve_address("ray://head:10001")
    with pytest.raises(SubmitError, match=r"cannot reach the Ray job server at http://127.0.0.1:9"):
        client("http://127.0.0.1:9")
    code = main(
        [
            "submit",
            "--address",
            "http://127.0.0.1:9",
            "--data-dir",
            "/d",
            "--",
            "geolip",
            "train",
            "aleph",
            "--corpus",
            "builtin:tiny",
        ]
    )
    assert code != 0
    assert "cannot reach the Ray job server" in capsys.readouterr().err


def test_an_address_is_checked_and_named_by_where_it_came_from(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    with pytest.raises(SubmitError, match=r"^\$RAY_ADDRESS 'auto': expected the job server"):
        resolve_address(None)
    with pytest.raises(SubmitError, match="--address 'http://h:x': the port is not a number"):
        resolve_address("http://h:x")
    with pytest.raises(SubmitError, match="--address 'http://'"):
        resolve_address("http://")


def test_the_address_is_found_where_ray_job_submit_finds_it(monkeypatch):
    """--address, else $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS, else the local default."""
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None) == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://from-ray-address:8265")
    assert resolve_address(None) == "http://from-ray-address:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://api:8265/")
    assert resolve_address(None) == "http://api:8265"
    assert resolve_address("https://flag:443") == "https://flag:443"


def test_a_runtime_env_file_is_merged_under_what_submit_sets(tmp_path):
    wd = tmp_path / "code"
    wd.mkdir()
    env_file = tmp_path / "env.json"  # JSON is YAML too
    spec = {"pip": ["numpy"], "working_dir": str(wd), "env_vars": {"A": "1", "GEOLIP_DATA": "/x"}}
    env_file.write_text(json.dumps(spec))
    sub = Submission(("geolip", "info"), runtime_env_file=str(env_file))
    runtime_env = job_runtime_env(sub, {"GEOLIP_DATA": "/shared"})
    assert runtime_env == {
        "pip": ["numpy"],
        "working_dir": str(wd),
        "env_vars": {"A": "1", "GEOLIP_DATA": "/shared"},
    }
    sub = Submission(("geolip", "info"), runtime_env_file=str(env_file), working_dir=str(tmp_path))
    assert job_runtime_env(sub, {})["working_dir"] == str(tmp_path)  # --working-dir wins


def test_a_missing_working_dir_is_refused_before_connecting(tmp_path, monkeypatch):
    def no_connection(address):
        raise AssertionError("connected before the checks")

    monkeypatch.setattr("cluster.submit.client", no_connection)
    sub = Submission(
        ("train", "aleph", "--corpus", "builtin:tiny"),
        "http://127.0.0.1:9",
        working_dir=str(tmp_path / "nope"),
        data_dir="/d",
    )
    with pytest.raises(SubmitError, match="--working-dir .*nope does not exist"):
        submit(sub)


def test_a_job_servers_refusal_is_one_line():
    def refused(what: str, text: str) -> str:
        with pytest.raises(SubmitError) as info, job_errors(what, "http://127.0.0.1:9"):
            raise RuntimeError(text)
        return str(info.value)

    missing = refused("jobs status x", "Request failed with status code 404: Job x does not exist.")
    assert missing == "jobs status x: no such job on the Ray job server at http://127.0.0.1:9"
    failed = refused("jobs stop x", "Request failed with status code 500:\n boom.")
    assert failed == "jobs stop x: Request failed with status code 500: boom."
