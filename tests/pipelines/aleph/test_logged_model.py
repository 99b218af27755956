"""A trained AlephLM as an MLflow model: context tags, the resolved config, the logged and
registered pyfunc, and the commands on ``models:/`` and ``runs:/`` URIs giving the numbers
they give on the local checkpoint. Real local Ray Train and a real SQLite MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from browser import chrome_fixture  # noqa: F401
from clierr import cli_error

from pipelines.cli import main
from pipelines.tracking import default_tracking_uri

pytestmark = [pytest.mark.ray, pytest.mark.slow]
CORPUS = "builtin:python-docs"
NAME = "tiny-lm"
SETS = ("train.steps=8", "train.log_every=4", "train.batch_size=4", "train.eval_windows=8")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ray_session) -> dict:
    data = tmp_path_factory.mktemp("logged-model")
    argv = ["train", "aleph", "--corpus", CORPUS, "--data-dir", str(data), "--head", "pmix"]
    argv += [x for s in SETS for x in ("--set", s)]
    argv += ["--eval-bytes", "30000", "--register", NAME]
    assert main(argv) == 0
    uri = default_tracking_uri(data)
    client = _client(uri)
    [version] = client.search_model_versions(f"name = '{NAME}'")
    [final] = (data / "runs" / "aleph").glob("*/final")
    return {"data": data, "uri": uri, "run_id": version.run_id, "final": final}


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def test_the_run_records_where_it_came_from(trained) -> None:
    from pipelines.run_context import git_commit

    client = _client(trained["uri"])
    run = client.get_run(trained["run_id"])
    tags = run.data.tags
    assert tags["mlflow.source.name"] == "geolip train aleph"
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.user"]
    if git_commit() is not None:  # an editable install from a git checkout
        assert tags["mlflow.source.git.commit"] == git_commit()
    for package in ("geolip", "torch", "ray", "mlflow", "cuda"):
        assert tags[f"geolip.version.{package}"], package
    assert tags["geolip.device"] == "1 x cpu"
    meta = json.loads((trained["final"] / "meta.json").read_text())
    assert tags["geolip.config_hash"] == meta["config_hash"]
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "config.json")).read_text())
    assert logged == json.loads((trained["final"] / "config.json").read_text())


def test_the_final_checkpoint_is_a_logged_and_registered_model(trained) -> None:
    import mlflow.pyfunc
    import pandas as pd

    from geolip.aleph.bpb import bpb_windowed
    from geolip.aleph.checkpoint import load_checkpoint

    client = _client(trained["uri"])
    run = client.get_run(trained["run_id"])
    [output] = run.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert model.name == "model" and model.source_run_id == run.info.run_id
    assert model.experiment_id == run.info.experiment_id
    version = client.get_model_version(NAME, "1")
    assert version.run_id == run.info.run_id and version.source == model.artifact_location
    mlflow.set_tracking_uri(trained["uri"])
    try:
        pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    finally:
        mlflow.set_tracking_uri(None)
    text = "The quick brown fox jumps over the lazy dog. " * 4
    scored = pyfunc.predict(pd.DataFrame({"text": [text]}))
    local, _, _ = load_checkpoint(trained["final"])
    arr = np.frombuffer(text.encode(), dtype=np.uint8)
    assert scored["bits_per_byte"][0] == pytest.approx(bpb_windowed(local, arr).bpb, abs=1e-9)
    sampled = pyfunc.predict(pd.DataFrame({"text": ["The "]}), params={"task": "sample"})
    assert sampled["text"][0].startswith("The ")


def _sample(capsys, checkpoint: str, data: Path) -> str:
    argv = ["aleph", "sample", "--checkpoint", checkpoint, "--data-dir", str(data)]
    assert main([*argv, "--prompt", "def ", "--bytes", "48", "--seed", "3"]) == 0
    return capsys.readouterr().out


def _eval(capsys, checkpoint: str, data: Path) -> dict:
    argv = ["eval", "aleph", checkpoint, "--corpus", CORPUS, "--data-dir", str(data)]
    argv += ["--eval-bytes", "20000", "--no-compressors", "--no-kn", "--format", "json"]
    argv += ["--no-log"]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_commands_on_model_uris_match_the_local_checkpoint(trained, capsys) -> None:
    data, local = trained["data"], str(trained["final"])
    expected = _sample(capsys, local, data)
    assert _sample(capsys, f"models:/{NAME}/1", data) == expected
    assert _sample(capsys, f"runs:/{trained['run_id']}/model", data) == expected
    figures = _eval(capsys, local, data)
    for uri in (f"models:/{NAME}/1", f"runs:/{trained['run_id']}/model"):
        got = _eval(capsys, uri, data)
        for regime in ("windowed", "streamed"):
            assert got[regime]["bpb"] == figures[regime]["bpb"], (uri, regime)


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("models:/no-such-model/1", "no registered model 'no-such-model'"),
        (f"models:/{NAME}/9", f"registered model '{NAME}' has no version '9'"),
        (f"models:/{NAME}/one", "expected models:/NAME/VERSION"),
        ("runs:/0123456789abcdef0123456789abcdef/model", "no MLflow run"),
    ],
)
def test_model_uris_that_do_not_resolve_are_one_line(trained, capsys, uri, needle) -> None:
    argv = ["aleph", "sample", "--checkpoint", uri, "--data-dir", str(trained["data"])]
    assert main(argv) == 2
    assert needle in cli_error(capsys)


def test_a_run_artifact_that_is_no_checkpoint_is_one_line(trained, capsys) -> None:
    uri = f"runs:/{trained['run_id']}/plots"
    argv = ["aleph", "sample", "--checkpoint", uri, "--data-dir", str(trained["data"])]
    assert main(argv) == 2
    assert "holds no geolip checkpoint" in cli_error(capsys)


def test_the_run_logs_its_lineage_as_dataset_inputs(trained) -> None:
    """corpus → atlas → bank → run: each a dataset input with a digest, the atlas and bank
    builds runs of geolip-data holding their manifests, linked from the run's description."""
    from geolip.aleph.bank import load_bank
    from pipelines.lineage import BUILD_RUN_TAG, DATA_EXPERIMENT

    client = _client(trained["uri"])
    run = client.get_run(trained["run_id"])
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert CORPUS in inputs
    bank = load_bank(trained["final"] / "bank.safetensors")
    [bank_in] = [i for i in inputs.values() if i.dataset.digest == bank.fingerprint()]
    atlas_name = Path(bank.provenance["atlas"]).name
    atlas_in = inputs[atlas_name]
    contexts = {t.key: t.value for t in bank_in.tags}
    assert contexts["mlflow.data.context"] == "train"
    builds = {}
    for item in (atlas_in, bank_in):
        build_id = {t.key: t.value for t in item.tags}[BUILD_RUN_TAG]
        build = client.get_run(build_id)
        assert client.get_experiment(build.info.experiment_id).name == DATA_EXPERIMENT
        assert build.info.status == "FINISHED" and build.data.tags["geolip.digest"]
        assert build.data.tags["mlflow.source.name"] == "geolip train aleph"
        assert "manifest.json" in {a.path for a in client.list_artifacts(build_id)}
        builds[item.dataset.name] = build
    # The bank's build read the atlas; the atlas's build read the corpus.
    bank_build = builds[bank_in.dataset.name]
    assert {i.dataset.name for i in bank_build.inputs.dataset_inputs} == {atlas_name}
    atlas_build = builds[atlas_name]
    assert {i.dataset.name for i in atlas_build.inputs.dataset_inputs} == {CORPUS}
    note = run.data.tags["mlflow.note.content"]
    for build in builds.values():
        assert f"#/experiments/{build.info.experiment_id}/runs/{build.info.run_id}" in note


def test_the_run_page_shows_inputs_model_and_system_metrics(trained, chrome) -> None:
    """What a person sees in the MLflow UI: the run's dataset inputs, its logged and registered
    model, its system metrics; and the registered model's page (screenshots in
    test-artifacts/)."""
    from browser import save_screenshot, wait_for_text

    from pipelines.ui import registered_model_url, run_url, running_ui

    client = _client(trained["uri"])
    run = client.get_run(trained["run_id"])
    eid = run.info.experiment_id
    with running_ui(trained["uri"], trained["data"]) as url:
        chrome.get(run_url(url, eid, run.info.run_id))
        wait_for_text(chrome, run.info.run_name, timeout=90)  # the first load builds the SPA
        wait_for_text(chrome, CORPUS, timeout=30)  # the Datasets section
        wait_for_text(chrome, f"{NAME}", timeout=30)  # registered models
        wait_for_text(chrome, "geolip train aleph", timeout=30)  # the source
        save_screenshot(chrome, "mlflow_run_overview")
        chrome.get(run_url(url, eid, run.info.run_id, "system-metrics"))
        wait_for_text(chrome, "system/node_0", timeout=60)  # one section per node
        wait_for_text(chrome, "cpu_utilization_percentage", timeout=60)
        _wait_for_charts(chrome)
        save_screenshot(chrome, "mlflow_run_system_metrics")
        chrome.get(registered_model_url(url, NAME))
        wait_for_text(chrome, "Version 1", timeout=60)
        save_screenshot(chrome, "mlflow_registered_model")


def _wait_for_charts(driver, timeout: float = 60.0) -> None:
    """Until the metric charts are drawn (plotly's SVG), not their loading spinners."""
    from selenium.webdriver.support.ui import WebDriverWait

    script = "return document.querySelectorAll('.js-plotly-plot .main-svg').length"
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script) > 0)


def test_init_from_and_donor_take_model_uris(trained, capsys) -> None:
    """``--init-from models:/...`` warm-starts from the registered checkpoint's weights, and a
    sweep's ``--donor`` accepts one too (checked and grafted in the dry run, before any Ray)."""
    from safetensors.torch import load_file

    from pipelines.aleph.cli import job_from_args
    from pipelines.cli import build_parser, load_commands

    data = str(trained["data"])
    parser = build_parser(load_commands())
    argv = ["train", "aleph", "--corpus", CORPUS, "--data-dir", data, "--head", "pmix"]
    args = parser.parse_args([*argv, "--init-from", f"models:/{NAME}/1"])
    job = job_from_args(args)
    donor = load_file(str(Path(job.init_from) / "model.safetensors"))
    local = load_file(str(trained["final"] / "model.safetensors"))
    assert donor.keys() == local.keys()
    assert all((donor[k] == local[k]).all() for k in local)
    sweep = ["sweep", "graft", "--scale", "tiny", "--corpus", CORPUS, "--data-dir", data]
    assert main([*sweep, "--donor", f"models:/{NAME}/1", "--dry-run"]) == 0
    assert "graft" in capsys.readouterr().out
    assert main([*sweep, "--donor", "models:/no-such-model/1", "--dry-run"]) == 2
    assert "no registered model 'no-such-model'" in cli_error(capsys)
