"""Figures: each renders to a real PNG, tolerates missing data, and leaks neither figures nor files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402

from pipelines.plots import (  # noqa: E402
    NO_DATA,
    bars_figure,
    curves_figure,
    gauge_figure,
    save_png,
    spectrum_figure,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

HISTORY = [
    {"step": 0, "train/loss": 5.0, "gauge/dev": 0.3, "gauge/erank": 12.0},
    {"step": 100, "train/loss": 3.1, "gauge/dev": 0.2, "gauge/erank": 14.0},
    {"step": 100, "eval/bpb": 2.4},
    {"step": 200, "train/loss": 2.5, "gauge/dev": 0.1, "gauge/theta_min_deg": 41.0},
    {"step": 200, "eval/bpb": 2.0, "gauge/routing_entropy_frac": 0.8},
    {"train/loss": 9.9},  # no step: unplottable
]


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 1024
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def line_data(fig) -> dict[str, tuple[list[float], list[float]]]:
    (ax,) = fig.axes
    return {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()}


def bar_container(ax) -> BarContainer:
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    return bars


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


@pytest.fixture(autouse=True)
def no_leaked_figures():
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


def test_curves_skip_rows_without_the_series(tmp_path) -> None:
    fig = curves_figure(HISTORY, ["train/loss", "eval/bpb", "absent"], "loss", ylabel="nats")
    lines = line_data(fig)
    assert lines == {
        "train/loss": ([0, 100, 200], [5.0, 3.1, 2.5]),
        "eval/bpb": ([100, 200], [2.4, 2.0]),
    }
    assert NO_DATA not in texts(fig)
    assert_png(save_png(fig, tmp_path / "curves.png"))


def test_curves_other_step_key_and_bad_values(tmp_path) -> None:
    rows = [{"epoch": 2, "x": 1.0}, {"epoch": 1, "x": float("nan")}, {"epoch": 3, "x": None}]
    rows += [{"epoch": 0, "x": "n/a"}, {"epoch": 4, "x": True}, {"epoch": 5, "x": 2}]
    assert line_data(curves_figure(rows, ["x"], "t", step_key="epoch")) == {"x": ([2, 5], [1.0, 2])}


@pytest.mark.parametrize("history", [[], [{"step": 1, "other": 2.0}]])
def test_curves_without_data_say_so(tmp_path, history) -> None:
    fig = curves_figure(history, ["train/loss"], "empty")
    assert NO_DATA in texts(fig)
    assert_png(save_png(fig, tmp_path / "empty.png"))


def test_gauge_small_multiples_one_per_key(tmp_path) -> None:
    fig = gauge_figure(HISTORY)
    visible = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in visible] == [
        "dev",
        "erank",
        "theta_min_deg",
        "routing_entropy_frac",
    ]
    assert len(fig.axes) == 6  # a 2 x 3 grid, the two spare panels hidden
    (erank,) = visible[1].get_lines()
    assert list(erank.get_xdata()) == [0, 100] and list(erank.get_ydata()) == [12.0, 14.0]
    assert_png(save_png(fig, tmp_path / "gauge.png"))


def test_gauge_other_prefix_and_empty(tmp_path) -> None:
    fig = gauge_figure(HISTORY, prefix="train/")
    assert [ax.get_title() for ax in fig.axes] == ["loss"]
    save_png(fig, tmp_path / "train.png")
    for history in ([], [{"step": 1, "train/loss": 1.0}]):
        fig = gauge_figure(history)
        assert NO_DATA in texts(fig)
        assert_png(save_png(fig, tmp_path / "none" / "gauge.png"))


def test_bars_values_errors_and_baseline(tmp_path) -> None:
    rows = [
        {"controller": "statute", "dbpb": -0.042, "spread": 0.01},
        {"controller": "frozen", "dbpb": 0.013},  # no spread: no error bar
        {"controller": "broken"},  # no value: left out
        {"controller": "random", "dbpb": 0.1, "spread": 0.02},
    ]
    fig = bars_figure(rows, "controller", "dbpb", "spread", "Δbpb", "bits/byte", baseline=0.0)
    (ax,) = fig.axes
    assert [p.get_height() for p in ax.patches] == pytest.approx([-0.042, 0.013, 0.1])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["statute", "frozen", "random"]
    assert texts(fig) == ["-0.042", "0.013", "0.1"]
    assert len(bar_container(ax).errorbar.lines[2][0].get_segments()) == 3
    baselines = [ln for ln in ax.get_lines() if ln.get_label() == "baseline 0"]
    assert len(baselines) == 1 and list(baselines[0].get_ydata()) == [0, 0]
    assert_png(save_png(fig, tmp_path / "bars.png"))


def test_bars_model_vs_compressors(tmp_path) -> None:
    rows = [{"name": "aleph 6.75M", "bpb": 1.31}, {"name": "xz -9e", "bpb": 2.2}]
    rows += [{"name": "gzip -9", "bpb": 2.9}, {"name": "zstd -19 --long", "bpb": 2.25}]
    fig = bars_figure(rows, "name", "bpb", title="held-out bits/byte")
    assert texts(fig) == ["1.31", "2.2", "2.9", "2.25"]
    assert bar_container(fig.axes[0]).errorbar is None
    assert_png(save_png(fig, tmp_path / "bpb.png"))
    empty = bars_figure([{"name": "x"}], "name", "bpb")
    assert NO_DATA in texts(empty)
    assert_png(save_png(empty, tmp_path / "e" / "empty.png"))


def test_spectrum_sorted_on_log_axis(tmp_path) -> None:
    fig = spectrum_figure([[0.5, 4.0, 1.0, 0.0, -1.0], [3.0, 2.0]], ["layer 0", "layer 1"], "ω")
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert line_data(fig) == {
        "layer 0": ([1, 2, 3], [4.0, 1.0, 0.5]),
        "layer 1": ([1, 2], [3.0, 2.0]),
    }
    assert_png(save_png(fig, tmp_path / "spectrum.png"))


def test_spectrum_empty_and_mismatched(tmp_path) -> None:
    fig = spectrum_figure([[0.0], []], ["a", "b"], "nothing positive")
    assert NO_DATA in texts(fig)
    assert_png(save_png(fig, tmp_path / "spectrum.png"))
    with pytest.raises(ValueError, match="2 spectra but 1 labels"):
        spectrum_figure([[1.0], [2.0]], ["a"], "t")


def test_save_png_replaces_atomically_and_closes_pyplot_figures(tmp_path) -> None:
    target = tmp_path / "a" / "b" / "fig.png"
    save_png(curves_figure(HISTORY, ["train/loss"], "first"), target)
    first = target.read_bytes()
    fig = plt.figure()
    fig.add_subplot().plot([1, 2, 3], [3, 1, 2])
    assert fig.number in plt.get_fignums()
    assert save_png(fig, str(target)) == target
    assert fig.number not in plt.get_fignums()
    assert_png(target)
    assert target.read_bytes() != first
    assert target.stat().st_mode & 0o044 == 0o044  # readable by others, unlike a mkstemp file


def test_save_png_failure_leaves_nothing(tmp_path, monkeypatch) -> None:
    fig = curves_figure(HISTORY, ["train/loss"], "t")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        save_png(fig, tmp_path / "fig.png")
    assert list(tmp_path.iterdir()) == []


def test_module_imports_no_heavy_packages() -> None:
    code = (
        "import sys, pipelines.plots; "
        "print(sorted({'torch', 'ray', 'mlflow', 'matplotlib.pyplot'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
