"""The ``svae`` program's verdict table (no MLflow): seeds pooled as svae.md §14 asks."""

from __future__ import annotations

import math

import pytest

from geolip.svae.mechanism import ALPHA_ENGAGED, alpha_init
from pipelines.svae.driver import verdict_metrics
from tune.report import to_markdown
from tune.svae_table import svae_figure, svae_table, svae_verdicts

A0 = alpha_init()


def _verdict(d_alpha, gain, c_alpha, c_gain, mse=1e-3):
    """A verdict as ``geolip.svae.train.verdict`` writes it, with its shuffled control."""
    return {
        "alpha_final": A0 + d_alpha,
        "alpha_delta": d_alpha,
        "ablation_gain": gain,
        "mse_external": mse,
        "recon_cos_external": 0.99,
        "mechanism": "?",
        "in_envelope": True,  # booleans are not metrics
        "control": {
            "alpha_final": A0 + c_alpha,
            "alpha_delta": c_alpha,
            "ablation_gain": c_gain,
            "mse_external": mse,
            "recon_cos_external": 0.98,
            "mechanism": "?",
        },
    }


def _row(arm, seed, verdict, status="FINISHED", mechanism="A", control="B"):
    return {
        "arm": arm,
        "kind": "svae",
        "seed": str(seed),
        "status": status,
        "run_id": f"{arm}-{seed}",
        "metrics": verdict_metrics(verdict),
        "mechanism": mechanism,
        "control_mechanism": control,
    }


def test_verdict_metrics_carry_the_control_and_skip_flags() -> None:
    m = verdict_metrics(_verdict(0.006, 3e-4, 0.001, 1e-6))
    assert m["verdict/alpha_delta"] == 0.006 and m["verdict/control/alpha_delta"] == 0.001
    assert m["verdict/control/mse_external"] == 1e-3
    assert not any("in_envelope" in k or "mechanism" in k for k in m)


def test_three_seeds_pool_to_a_on_the_data_and_b_shuffled() -> None:
    rows = [
        _row("lens/d16", s, _verdict(0.006 + 1e-3 * s, 3e-4 + 1e-5 * s, 1e-4 * s, 1e-6))
        for s in range(3)
    ]
    # d4: α engages on one seed only and g's spread swamps its mean: neither A nor B.
    rows += [
        _row("lens/d4", 0, _verdict(0.012, 9e-4, 0.0, 0.0), mechanism="A"),
        _row("lens/d4", 1, _verdict(0.001, -6e-4, 0.0, 0.0), mechanism="indeterminate"),
        _row("lens/d4", 2, _verdict(0.004, 1e-5, 0.0, 0.0), mechanism="indeterminate"),
        _row("lens/d4", 3, _verdict(0.0, 0.0, 0.0, 0.0), status="FAILED"),
    ]
    table = {(t["arm"], t["patches"]): t for t in svae_table(rows)}
    assert [k for k in table] == [
        ("lens/d4", "data"),
        ("lens/d4", "shuffled"),
        ("lens/d16", "data"),
        ("lens/d16", "shuffled"),
    ]  # rungs by D_lens, not as strings
    d16 = table["lens/d16", "data"]
    assert d16["n"] == 3 and d16["mechanism"] == "A" and d16["per_seed"] == "A ×3"
    assert d16["alpha_delta"] == pytest.approx(0.007)
    assert d16["alpha_delta_se"] == pytest.approx(1e-3 / math.sqrt(3))
    assert d16["ablation_gain_std"] == pytest.approx(1e-5)
    assert table["lens/d16", "shuffled"]["mechanism"] == "B"
    d4 = table["lens/d4", "data"]
    assert d4["n"] == 3 and d4["failed"] == 1
    # mean Δα 0.00567 ≥ 0.005 and mean g > 0, but g < 2σ over the seeds: not A.
    assert d4["alpha_delta"] >= ALPHA_ENGAGED and d4["ablation_gain"] > 0
    assert d4["mechanism"] == "indeterminate"
    assert d4["per_seed"] == "A ×1, indeterminate ×2"

    verdicts = {v["arm"]: v for v in svae_verdicts(svae_table(rows))}
    assert verdicts["lens/d16"]["verdict"].startswith("as predicted")
    assert verdicts["lens/d4"]["verdict"] == "not engaged on the data (indeterminate)"

    summary = {"sweep": "s", "program": "svae", "arms": [], "svae": svae_table(rows)}
    summary["svae_verdicts"] = svae_verdicts(summary["svae"])
    md = to_markdown(summary)
    assert "| lens/d16 | data | 3 | 0 | 0.03084 | +0.00700 ± 0.00058 |" in md
    assert "| lens/d16 | A | B | as predicted (A on the data, B shuffled) |" in md
    svae_figure(summary["svae"])  # renders with and without error bars


def test_one_seed_has_no_spread_and_no_runs_no_verdict() -> None:
    table = svae_table([_row("lens/d8", 0, _verdict(0.006, 3e-4, 0.0, 0.0))])
    assert table[0]["mechanism"] == "A" and math.isnan(table[0]["alpha_delta_se"])
    failed = svae_table([_row("lens/d8", 0, {}, status="FAILED")])
    assert [t["n"] for t in failed] == [0, 0] and failed[0]["mechanism"] == ""
    assert svae_verdicts(failed)[0]["verdict"] == "no finished runs"
