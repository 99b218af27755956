"""The Ray options every job starts or joins Ray with: Ray Train's controller polls its workers
every ``TRAIN_POLL_S`` (a report is seen only at the next poll), unless the user or a
submitted job's runtime env says otherwise."""

from __future__ import annotations

import json
import os

import pytest

from pipelines.runtime import (
    TRAIN_POLL_ENV,
    TRAIN_POLL_S,
    cluster_env_vars,
    local_ray_options,
)


def test_a_local_ray_polls_at_our_interval(monkeypatch):
    monkeypatch.delenv(TRAIN_POLL_ENV, raising=False)
    env = local_ray_options(1)["runtime_env"]["env_vars"]
    assert env[TRAIN_POLL_ENV] == str(TRAIN_POLL_S)
    assert env["RAY_API_SERVER_ADDRESS"].startswith("http://127.0.0.1:")


def test_the_users_interval_wins(monkeypatch):
    monkeypatch.setenv(TRAIN_POLL_ENV, "1.5")
    assert local_ray_options(1)["runtime_env"]["env_vars"][TRAIN_POLL_ENV] == "1.5"
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert cluster_env_vars("10.0.0.1:6379")[TRAIN_POLL_ENV] == "1.5"


def test_a_joined_cluster_gets_the_interval_and_its_address(monkeypatch):
    monkeypatch.delenv(TRAIN_POLL_ENV, raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    env = cluster_env_vars("10.0.0.1:6379")
    assert env == {"RAY_ADDRESS": "10.0.0.1:6379", TRAIN_POLL_ENV: str(TRAIN_POLL_S)}
    assert cluster_env_vars("auto") == {TRAIN_POLL_ENV: str(TRAIN_POLL_S)}


def test_a_submitted_jobs_own_env_is_never_overridden(monkeypatch):
    """Ray refuses to merge a runtime env that sets a key the job's env already sets."""
    taken = {"RAY_ADDRESS": "10.0.0.2:6379", TRAIN_POLL_ENV: "3"}
    job = {"runtime_env": {"env_vars": taken}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert cluster_env_vars("10.0.0.1:6379") == {}


@pytest.mark.ray
def test_ray_trains_actors_see_the_interval(ray_session):
    """The session's Ray was started with ``local_ray_options``: its tasks and actors (Ray
    Train's controller among them) run with the interval in their environment."""

    @ray_session.remote(num_cpus=0)
    def poll_interval():
        return os.environ.get(TRAIN_POLL_ENV)

    expected = os.environ.get(TRAIN_POLL_ENV, str(TRAIN_POLL_S))
    assert ray_session.get(poll_interval.remote()) == expected
