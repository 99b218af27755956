"""PNG figures of training runs and comparisons: curves, gauge small multiples, bars, spectra.

Every function takes plain rows (``list[dict]``, as logged to MLflow or written by a sweep) and
returns a ``matplotlib.figure.Figure`` built without pyplot, so nothing is registered with pyplot's
figure manager, nothing leaks, and the process's interactive backend is left alone: PNGs are
rendered by Agg. ``save_png`` writes one atomically. Missing data gives a figure that says
"no data" rather than an error, so a report never fails on an empty run.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

NO_DATA = "no data"
DPI = 120


def _number(value: object) -> float | None:
    """``value`` as a finite float, or None for missing, non-numeric, boolean or NaN/inf values."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def new_figure(width: float = 6.4, height: float = 4.0) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # render with Agg whatever backend pyplot may have chosen
    return fig


def no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, NO_DATA, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _points(history: Sequence[dict], key: str, step_key: str) -> list[tuple[float, float]]:
    """``(step, value)`` for the rows that have both, sorted by step."""
    points = []
    for row in history:
        step, value = _number(row.get(step_key)), _number(row.get(key))
        if step is not None and value is not None:
            points.append((step, value))
    return sorted(points)


def _plot_points(ax: Axes, points: list[tuple[float, float]], label: str | None = None) -> None:
    xs, ys = zip(*points)
    # Eval metrics come every few hundred steps: mark sparse series so single points show.
    ax.plot(xs, ys, marker="o" if len(points) <= 30 else None, markersize=3, label=label)


def curves_figure(
    history: list[dict],
    series: Sequence[str],
    title: str,
    step_key: str = "step",
    ylabel: str = "",
) -> Figure:
    """One line per key in ``series`` against ``step_key``.

    Each series uses only the rows that have it (train and eval metrics are logged at different
    steps); series found in no row are left out, and if none is found the figure says "no data".
    """
    fig = new_figure()
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(step_key)
    ax.set_ylabel(ylabel)
    plotted = 0
    for key in series:
        points = _points(history, key, step_key)
        if points:
            _plot_points(ax, points, label=key)
            plotted += 1
    if plotted:
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    else:
        no_data(ax)
    return fig


def gauge_figure(history: list[dict], prefix: str = "gauge/", step_key: str = "step") -> Figure:
    """Small multiples, one panel per metric whose key starts with ``prefix`` (in first-seen order).

    The statute gauge logs its health (``gauge/dev``, ``gauge/erank``, ``gauge/theta_min_deg``,
    ...) on different scales, so each gets its own y-axis; any key with the prefix is accepted.
    """
    keys = list(dict.fromkeys(k for row in history for k in row if k.startswith(prefix)))
    panels = [(k, _points(history, k, step_key)) for k in keys]
    panels = [(k, pts) for k, pts in panels if pts]
    if not panels:
        fig = new_figure()
        ax = fig.add_subplot()
        ax.set_title(f"{prefix}*")
        no_data(ax)
        return fig
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = new_figure(3.2 * ncols, 2.4 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True).ravel()
    for ax, (key, points) in zip(axes, panels):
        _plot_points(ax, points)
        ax.set_title(key.removeprefix(prefix), fontsize="medium")
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    for ax in axes[-ncols:]:
        ax.set_xlabel(step_key)
    return fig


def bars_figure(
    rows: list[dict],
    label_key: str,
    value_key: str,
    err_key: str | None = None,
    title: str = "",
    ylabel: str = "",
    baseline: float | None = None,
) -> Figure:
    """One bar per row with a numeric ``value_key``, its value written on top.

    ``err_key`` gives symmetric error bars (e.g. the spread over seeds; rows without it get
    none) and ``baseline`` a dashed horizontal line (e.g. 0 for Δbpb, or a reference bits/byte).
    """
    fig = new_figure()
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    kept = [(str(r.get(label_key, "?")), _number(r.get(value_key)), r) for r in rows]
    kept = [(label, value, r) for label, value, r in kept if value is not None]
    if not kept:
        no_data(ax)
        return fig
    labels = [label for label, _, _ in kept]
    values = [value for _, value, _ in kept]
    errs = [0.0] * len(kept)
    if err_key is not None:
        errs = [abs(_number(r.get(err_key)) or 0.0) for _, _, r in kept]
    ax.bar(range(len(kept)), values, yerr=errs if err_key else None, capsize=4, color="C0")
    for x, (value, err) in enumerate(zip(values, errs)):
        up = value >= 0  # label beyond the bar's end and its error bar, below for negative bars
        ax.annotate(
            f"{value:.3g}",
            (x, value + err if up else value - err),
            xytext=(0, 3 if up else -3),
            textcoords="offset points",
            ha="center",
            va="bottom" if up else "top",
            fontsize="small",
        )
    if baseline is not None:
        ax.axhline(
            baseline, color="C3", linestyle="--", linewidth=1, label=f"baseline {baseline:.3g}"
        )
        ax.legend(fontsize="small")
    long_labels = len(kept) > 6 or max(len(label) for label in labels) > 10
    ax.set_xticks(
        range(len(kept)),
        labels,
        rotation=30 if long_labels else 0,
        ha="right" if long_labels else "center",
    )
    ax.margins(y=0.12)  # room for the value labels above the tallest bar
    ax.grid(axis="y", alpha=0.3)
    return fig


def spectrum_figure(values: Sequence[Sequence[float]], labels: Sequence[str], title: str) -> Figure:
    """Each spectrum sorted largest-first against its rank, on a log y-axis.

    Only positive, finite entries can be drawn on a log axis; the others are dropped, and a
    spectrum left empty is omitted.
    """
    if len(values) != len(labels):
        raise ValueError(f"{len(values)} spectra but {len(labels)} labels; give one label each")
    fig = new_figure()
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel("rank")
    plotted = 0
    for spectrum, label in zip(values, labels):
        ys = sorted((x for x in map(_number, spectrum) if x is not None and x > 0), reverse=True)
        if ys:
            ax.plot(range(1, len(ys) + 1), ys, marker="o" if len(ys) <= 30 else None, label=label)
            plotted += 1
    if plotted:
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small")
    else:
        no_data(ax)
    return fig


def save_png(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` as a PNG (parents created, replaced atomically), then close it.

    Readers never see a half-written file: it goes to a temporary name in the same directory and
    is renamed. A figure that pyplot manages is closed there too; ours just drop their artists.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=DPI)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        _close(fig)
    return path


def _close(fig: Figure) -> None:
    # Importing pyplot here would pick a backend; if it was never imported, it manages nothing.
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None and fig.canvas.manager is not None:
        pyplot.close(fig)
    fig.clear()
