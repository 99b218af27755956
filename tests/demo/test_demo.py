"""``geolip demo --scale smoke`` end to end on the session's Ray and a real MLflow store.

The module runs the demo once, interrupted after its bank stage and then re-run to the end (the
re-run must continue, not redo). The tests then read what it left in MLflow, run it again (every
stage skipped), browse it in headless Chromium, check bad input, and finally undo it with
``--fresh``'s clean-up. Test order matters: the clean-up test is last.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from clierr import cli_error
from rich.console import Console

from demo.run import EXPERIMENT, demo_context, run_demo
from demo.state import DemoLock, forget
from geolip.aleph.experiments.employment import VERDICTS
from pipelines.cli import main
from pipelines.errors import Interrupted
from pipelines.tracking import client

pytestmark = [pytest.mark.ray, pytest.mark.slow]
CORPUS = "builtin:python-docs"


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=200, force_terminal=False), buf


@pytest.fixture(scope="module")
def demo(ray_session, tmp_path_factory):
    """The smoke demo, interrupted after ``bank`` and then continued: ``(Demo, outputs)``."""
    data = tmp_path_factory.mktemp("demo") / "data"
    console, first = _console()
    with pytest.raises(Interrupted, match=r"in stage bank: the 2 finished stage\(s\) are kept"):
        run_demo(
            "smoke", CORPUS, demo_context("smoke", data, None), console=console, stop_after="bank"
        )
    console, second = _console()
    d = run_demo("smoke", CORPUS, demo_context("smoke", data, None), console=console)
    return d, first.getvalue(), second.getvalue()


def _runs(d) -> list:
    store = client(d.uri)
    exp = store.get_experiment_by_name(EXPERIMENT)
    return store.search_runs([exp.experiment_id], max_results=500)


def _artifacts(d, run_id: str, path: str = "") -> set[str]:
    return {f.path for f in client(d.uri).list_artifacts(run_id, path)}


def test_interrupted_demo_continues_where_it_stopped(demo):
    d, first, second = demo
    assert "bank:" in first and "train-kernel" not in first
    assert second.count("done earlier") == 2  # atlas and bank were not redone
    assert len([r for r in _runs(d) if r.data.tags.get("kind") == "atlas"]) == 1
    for needle in (
        "held-out bits/byte",
        "controller contrast",
        "sample from",
        "SVAE on",
        "sweep-preservation",
        "geolip ui --data-dir",
        "/#/experiments/",
    ):
        assert needle in second, needle


def test_demo_leaves_its_experiment_runs_metrics_and_artifacts(demo):
    d, _, _ = demo
    runs = _runs(d)
    assert all(r.info.status == "FINISHED" for r in runs), [
        (r.info.run_name, r.info.status) for r in runs
    ]
    by_name = {r.info.run_name: r for r in runs}
    atlas = by_name["atlas"]
    assert atlas.data.metrics["atlas/entries"] > 1000 and "bank/coverage" in atlas.data.metrics
    for head in ("kernel", "pmix"):
        run = by_name[d.record(f"train-{head}")["name"]]
        m = run.data.metrics
        assert {"val_bpb", "eval/bpb_windowed", "contrast/base_bpb"} <= set(m)
        # Kneser-Ney on the same held-out bytes, from the corpus' KN atlas (one, both heads).
        assert {"eval/kn/3/bpb", "eval/kn/5/bpb"} <= set(m)
        assert "contrast/all/permute/delta_bpb" in m
        assert run.data.tags["head"] == head and run.data.params["job.workers"] == "2"
        # Every training ends with the employment contrast: metrics, a verdict tag, the summary.
        verdict = run.data.tags["aleph_employment"]
        assert verdict in VERDICTS and "employ_permute_se" in m
        assert d.record(f"train-{head}")["summary"].endswith(f"aleph {verdict}")
        assert {"plots/bpb_curves.png", "plots/eval_bpb.png", "plots/contrast_all.png"} <= (
            _artifacts(d, run.info.run_id, "plots")
        )
    sampled = by_name[d.record(f"train-{d.record('sample')['head']}")["name"]]
    assert "sample.txt" in _artifacts(d, sampled.info.run_id)
    for stage in ("svae-features", "svae-images"):
        run = by_name[d.record(stage)["name"]]
        assert "verdict.json" in _artifacts(d, run.info.run_id) and "mechanism" in run.data.tags
    sweep = by_name[d.record("sweep")["name"]]
    assert sweep.data.tags["program"] == "preservation"
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id]
    assert sorted(r.data.tags["arm"] for r in trials) == ["apmix/free", "apmix/spread"]
    assert all("val_bpb" in r.data.metrics for r in trials)
    assert all(r.data.tags.get("aleph_employment") in VERDICTS for r in trials)
    summary = by_name["demo-summary"]
    assert "summary.md" in _artifacts(d, summary.info.run_id)
    assert "plots/demo_bpb.png" in _artifacts(d, summary.info.run_id, "plots")
    assert summary.data.metrics["eval/kernel_bpb"] < 8.0


def test_rerun_skips_every_stage(demo):
    d, _, _ = demo
    before = len(_runs(d))
    console, out = _console()
    run_demo("smoke", CORPUS, d.ctx, console=console)
    assert out.getvalue().count("done earlier") == len(d.stage_names())
    assert len(_runs(d)) == before


def test_demo_is_browsable_in_the_mlflow_ui(demo):
    """The MLflow server on 127.0.0.1 shows the demo's runs and its summary plot in Chromium."""
    from browser import assert_image_loaded, browser, save_screenshot, wait_for_text

    from pipelines.ui import artifact_url, experiment_url, running_ui

    d, _, _ = demo
    summary = next(r for r in _runs(d) if r.info.run_name == "demo-summary")
    exp, plot = summary.info.experiment_id, "plots/demo_bpb.png"
    with running_ui(d.uri, d.data) as url, browser() as driver:
        driver.get(experiment_url(url, exp))
        for name in ("demo-summary", "atlas", d.record("train-kernel")["name"]):
            wait_for_text(driver, name, timeout=60)
        save_screenshot(driver, "demo_experiment")
        driver.get(artifact_url(url, exp, summary.info.run_id, plot))
        assert_image_loaded(driver, f'img[alt="{plot}"]', timeout=60)
        save_screenshot(driver, "demo_summary_plot")


def test_bad_input_is_one_line_error(demo, tmp_path, capsys):
    d, _, _ = demo
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["demo", "--scale", "smoke", "--data-dir", str(blocker / "data")]) == 2
    err = cli_error(capsys)
    assert "--data-dir" in err and "which is a regular file" in err
    assert main(["demo", "--scale", "huge", "--data-dir", str(tmp_path)]) == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    other = ["demo", "--scale", "smoke", "--corpus", "builtin:tiny", "--data-dir", str(d.data)]
    assert main(other) == 2  # the same data dir holds a demo of another corpus
    assert "--fresh" in capsys.readouterr().err
    with DemoLock(d.data / "demo"):
        assert main(["demo", "--scale", "smoke", "--data-dir", str(d.data)]) == 2
    assert "another geolip demo" in capsys.readouterr().err


def test_fresh_removes_what_the_demo_made(demo):
    """Last: ``--fresh``'s clean-up deletes the demo's MLflow runs and directories."""
    d, _, _ = demo
    paths = [d.home, *(p for rec in d.state.stages.values() for p in rec.get("paths", []))]
    forget(d.home, d.uri, progress=lambda s: None)
    assert not any(Path(p).exists() for p in paths)
    assert _runs(d) == []
