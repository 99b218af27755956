"""The two-hemisphere table: slopes, their SE and sign, checked against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tune.erank import erank_figure, erank_lines, erank_table, run_slope


def _line(slope_per_k: float, start: float, noise: float, seed: int, steps=range(0, 1200, 100)):
    rng = np.random.default_rng(seed)
    return [(s, start + slope_per_k * s / 1000 + rng.normal(0, noise)) for s in steps]


def test_run_slope_is_least_squares_with_its_standard_error() -> None:
    points = _line(0.3, 3.8, 0.01, 0)
    x = np.array([s for s, _ in points]) / 1000
    y = np.array([v for _, v in points])
    (b, a), cov = np.polyfit(x, y, 1, cov="unscaled")
    resid = y - (a + b * x)
    slope, se = run_slope(points)
    assert slope == pytest.approx(b, rel=1e-9)
    assert se == pytest.approx(math.sqrt(resid @ resid / (len(x) - 2) * cov[0, 0]), rel=1e-9)
    assert math.isnan(run_slope([(5, 1.0)])[0]) and math.isnan(run_slope(points[:2])[1])
    # A re-logged step (a restarted run) counts once, with its last value.
    assert run_slope([(0, 1.0), (1000, 2.0), (1000, 3.0)])[0] == pytest.approx(2.0)


def test_arms_get_a_sign_beyond_two_se_over_seeds() -> None:
    histories = {
        "routing/pmix": [_line(-0.5, 3.8, 0.01, s) for s in range(3)],
        "prediction/kernel": [_line(0.2, 3.8, 0.01, 10 + s) for s in range(3)],
        "routing/byte": [_line(0.0, 3.8, 0.05, 20 + s) for s in range(3)],
    }
    table = {t["arm"]: t for t in erank_table(histories)}
    pmix = table["routing/pmix"]
    slopes = [run_slope(p)[0] for p in histories["routing/pmix"]]
    assert pmix["slope"] == pytest.approx(np.mean(slopes))
    assert pmix["slope_se"] == pytest.approx(np.std(slopes, ddof=1) / math.sqrt(3))
    assert pmix["sign"] == "falls" and pmix["hemisphere"] == "routing" and pmix["n"] == 3
    assert pmix["erank_last"] < pmix["erank_first"]
    assert table["prediction/kernel"]["sign"] == "rises"
    assert table["routing/byte"]["sign"] == "flat (within noise)"
    # One seed: the regression's own SE.
    [one] = erank_table({"prediction/apmix": [_line(0.2, 3.8, 0.01, 7)]})
    assert one["slope_se"] == pytest.approx(run_slope(_line(0.2, 3.8, 0.01, 7))[1])
    text = "\n".join(erank_lines(list(table.values())))
    assert "| routing/pmix | 3 |" in text and "falls" in text
    assert erank_figure(histories, list(table.values())).axes[0].get_legend() is not None
