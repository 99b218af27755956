"""The sweep summary's tables (no MLflow): means over seeds, deltas, the contrast ratios."""

from __future__ import annotations

import math

import pytest

from tune.report import arm_table, contrast_table, to_csv, to_markdown


def _row(arm, bpb, seed="0", status="FINISHED", kind="train", employment="", **metrics):
    m = {"val_bpb": bpb} if bpb is not None else {}
    m.update(metrics)
    return {
        "arm": arm,
        "kind": kind,
        "head": arm.split("/")[0],
        "seed": seed,
        "status": status,
        "run_id": f"{arm}-{seed}",
        "metrics": m,
        "sample": "",
        "employment": employment,
    }


def test_arm_table_means_over_seeds_and_deltas_against_the_reference() -> None:
    rows = [
        _row("byte", 3.0, "0"),
        _row("byte", 3.2, "1"),
        _row("pmix/dense", 2.5, "0", employment="open loop"),
        _row("pmix/dense", 2.7, "1", employment="open loop"),
        _row("kernel/dense", None, "0", status="FAILED"),
        _row("kernel/sparse", 2.6, "0", employment="closed loop"),
        _row("kernel/sparse", 2.6, "1", employment="open loop"),
        _row("kernel/sparse", 2.6, "2", employment="closed loop"),
    ]
    table = {t["arm"]: t for t in arm_table("seed-battery", rows)}
    assert table["byte"]["val_bpb"] == pytest.approx(3.1)
    assert table["byte"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert table["pmix/dense"]["delta"] == pytest.approx(-0.5)
    assert table["kernel/dense"]["n"] == 0 and table["kernel/dense"]["failed"] == 1
    assert math.isnan(table["byte"]["delta"])
    markdown = to_markdown({"sweep": "s", "program": "seed-battery", "arms": list(table.values())})
    row = "| pmix/dense | 2 | 0 | 2.6000 ± 0.1414 | byte | -0.5000 | — | — | open loop |"
    assert row in markdown
    # Seeds whose verdicts disagree are counted, the commonest first; no verdict reads "—".
    assert table["kernel/sparse"]["employment"] == "closed loop ×2, open loop ×1"
    assert "| byte | 2 | 0 | 3.1000 ± 0.1414 | — | — | — | — | — |" in markdown
    assert to_csv(list(table.values())).splitlines()[0].startswith("arm,n,failed,val_bpb")


def test_graft_rows_compare_with_cold_start_and_continued_donor() -> None:
    rows = [_row("depth/graft", 2.4), _row("depth/cold", 2.7), _row("continued", 2.5)]
    table = {t["arm"]: t for t in arm_table("graft", rows)}
    assert table["depth/graft"]["delta"] == pytest.approx(-0.3)
    assert table["depth/graft"]["delta_vs_continued"] == pytest.approx(-0.1)


def test_contrast_table_and_dependence_ratio() -> None:
    def c(arm, permute, randomize, seed="0"):
        return _row(
            arm,
            None,
            seed,
            kind="contrast",
            **{
                "contrast/base_bpb": 3.0,
                "contrast/permute/delta_bpb": permute,
                "contrast/randomize/delta_bpb": randomize,
            },
        )

    rows = [
        c("kernel/dense", 0.5, 0.4, "0"),
        c("kernel/dense", 0.7, 0.6, "1"),
        c("pmix/dense", 1e-9, 0.01, "0"),
        c("pmix/dense", -1e-9, 0.03, "1"),
    ]
    table, ratios = contrast_table(rows)
    kernel = next(t for t in table if t["arm"] == "kernel/dense")
    assert kernel["permute"] == pytest.approx(0.6) and kernel["n"] == 2
    assert math.isinf(ratios["permute"]["ratio"])  # open loop at fp noise
    assert ratios["randomize"]["ratio"] == pytest.approx(0.5 / 0.02)
    summary = {
        "sweep": "s",
        "program": "contrast",
        "arms": [],
        "contrast": table,
        "dependence": ratios,
    }
    assert "dependence ratio ∞ (open loop at fp noise)" in to_markdown(summary)
