"""``geolip submit``'s checks before anything reaches a cluster (no Ray needed)."""

from __future__ import annotations

import pytest

from cluster.submit import Submission, SubmitError, check_command, client, resolve_address
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
        (("no-such-command",), {"data_dir": "/d"}, "not a valid geolip command"),
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
