"""Sweep plots: one line per arm across small multiples (gauge trajectories per arm)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pipelines.plots import new_figure, no_data


def arm_curves_figure(histories: dict[str, list[dict]], keys: Sequence[str], title: str):
    """One panel per metric key, one line per arm; ``histories[arm]`` is rows ``{step, key: v}``."""
    panels = [k for k in keys if any(k in row for rows in histories.values() for row in rows)]
    if not panels:
        fig = new_figure()
        no_data(fig.add_subplot())
        return fig
    ncols = min(2, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = new_figure(4.2 * ncols, 2.8 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key in zip(axes, panels):
        for arm, rows in sorted(histories.items()):
            points = [(row["step"], row[key]) for row in rows if key in row]
            if points:
                ax.plot(*zip(*points), marker=".", label=arm)
        ax.set_title(key.split("/", 1)[-1], fontsize="medium")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    axes[0].legend(fontsize="x-small", ncol=2)
    fig.suptitle(title)
    return fig
