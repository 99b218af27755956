"""``geolip ui``: the MLflow server on a real SQLite store, checked in headless Chromium.

The browser test is what a person does after a training run: open the experiment, find the run,
open its plot, and see the picture (served from the run's absolute ``file://`` artifact location).
"""

from __future__ import annotations

import io
import socket
import struct
from pathlib import Path
from typing import NamedTuple

import pytest
from browser import assert_image_loaded, chrome_fixture, save_screenshot, wait_for_text  # noqa: F401
from clierr import cli_error

from pipelines.cli import main
from pipelines.errors import GeolipError
from pipelines.runtime import free_port
from pipelines.ui import artifact_url, check_port, experiment_url, running_ui

RUN_NAME = "ui-test-run-alpha"


class Store(NamedTuple):
    data: Path
    uri: str
    experiment_id: str
    run_id: str
    plot_size: tuple[int, int]  # (width, height) of the logged PNG, in pixels


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (bytes 16..24, big-endian)."""
    return struct.unpack(">II", png[16:24])


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    """A SQLite store with one finished run that logged metrics and a plot, as training does."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipelines import tracking

    data = tmp_path_factory.mktemp("ui-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # never log into someone's server
        uri = tracking.resolve_tracking_uri(None, data)
    tracking.check_tracking(uri)
    eid = tracking.ensure_experiment(uri, "ui-test", tracking.artifact_root(uri, data))
    logger = tracking.start_run(uri, eid, RUN_NAME, params={"lr": 0.01})
    for step in range(5):
        logger.log_metrics({"loss": 2.0 / (step + 1)}, step=step)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([2.0 / (s + 1) for s in range(5)])
    ax.set_title("loss")
    logger.log_figure(fig, "plot.png")
    png = io.BytesIO()
    fig.savefig(png, bbox_inches="tight")  # as log_figure saves it: the size the UI must show
    plt.close(fig)
    logger.finish()
    return Store(data, uri, eid, logger.run_id, _png_size(png.getvalue()))


@pytest.mark.slow
def test_ui_shows_the_run_and_its_plot(store, chrome):
    with running_ui(store.uri, store.data) as url:
        chrome.get(experiment_url(url, store.experiment_id))
        wait_for_text(chrome, RUN_NAME, timeout=60)  # first load compiles the SPA's bundle
        save_screenshot(chrome, "mlflow_ui_experiment")

        chrome.get(artifact_url(url, store.experiment_id, store.run_id, "plots/plot.png"))
        wait_for_text(chrome, "plots/plot.png", timeout=30)
        # The preview is an <img alt=PATH> whose blob: source the SPA fetched from the server;
        # its natural size proves the server read our PNG from the file:// artifact location.
        img = assert_image_loaded(chrome, 'img[alt="plots/plot.png"]', timeout=30)
        natural = chrome.execute_script(
            "return [arguments[0].naturalWidth, arguments[0].naturalHeight];", img
        )
        assert tuple(natural) == store.plot_size
        save_screenshot(chrome, "mlflow_ui_plot")


def _error_line(capsys) -> str:
    return cli_error(capsys)


def test_ui_rejects_a_port_in_use(store, capsys):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        code = main(
            ["ui", "--port", str(port), "--data-dir", str(store.data), "--tracking-uri", store.uri]
        )
    assert code == 2
    err = _error_line(capsys)
    assert f"--port {port}" in err and "already in use" in err and f"--port {port + 1}" in err


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_ui_rejects_an_invalid_port(store, capsys, port):
    code = main(["ui", "--port", port, "--data-dir", str(store.data), "--tracking-uri", store.uri])
    assert code == 2
    expected = f"argument --port: expected a port number from 1 to 65535, got '{port}'"
    assert expected in _error_line(capsys)


def test_check_port_refuses_a_bad_port_or_host():
    with pytest.raises(GeolipError, match="--port 0: expected a port number from 1 to 65535"):
        check_port("127.0.0.1", 0)
    with pytest.raises(GeolipError, match="--host 'nohost.invalid': no such host"):
        check_port("nohost.invalid", free_port())
    with pytest.raises(GeolipError, match="--host 203.0.113.7: not an address of this machine"):
        check_port("203.0.113.7", 5000)


def test_ui_refuses_a_store_that_is_not_sqlite(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir()
    db.write_text("not a database\n")
    assert main(["ui", "--data-dir", str(tmp_path), "--port", str(free_port())]) == 2
    assert f"the MLflow store {db} is not an SQLite database" in _error_line(capsys)
    assert sorted(p.name for p in db.parent.iterdir()) == ["mlflow.db"]  # no ui.log


def test_ui_without_a_store_says_how_to_make_one(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["ui", "--data-dir", str(tmp_path), "--port", str(free_port())]) == 2
    err = _error_line(capsys)
    assert f"no MLflow store at {tmp_path / 'mlflow' / 'mlflow.db'}" in err
    assert "geolip demo" in err
    assert not (tmp_path / "mlflow").exists()  # a failed `geolip ui` leaves nothing behind


def test_ui_on_a_server_store_just_prints_it(capsys):
    assert main(["ui", "--tracking-uri", "http://127.0.0.1:5999"]) == 0
    assert "MLflow UI: http://127.0.0.1:5999" in capsys.readouterr().out
