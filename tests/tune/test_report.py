"""The sweep summary's tables (no MLflow): means over seeds, deltas, the contrast ratios."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tune.report import arm_table, contrast_table, to_csv, to_markdown


def _row(arm, bpb, seed="0", status="FINISHED", kind="train", employment="", bits=None, **metrics):
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
        "bits": bits,
    }


TEXT = np.random.default_rng(0).normal(3.0, 1.0, 256 * 20)  # the held-out targets' difficulty


def _bits(shift: float, noise: float, seed: int) -> np.ndarray:
    return TEXT + shift + np.random.default_rng(seed).normal(0, noise, len(TEXT))


def test_arms_rank_on_heldout_with_a_paired_delta_and_its_verdict() -> None:
    rows = [
        _row("byte", 3.0, "0", bits=_bits(0.0, 0.05, 1)),
        _row("byte", 3.2, "1", bits=_bits(0.0, 0.05, 2)),
        _row("pmix/dense", 2.5, "0", employment="open loop", bits=_bits(-0.3, 0.05, 3)),
        _row("pmix/dense", 2.7, "1", employment="open loop", bits=_bits(-0.3, 0.05, 4)),
        _row("kernel/dense", None, "0", status="FAILED"),
        _row("kernel/sparse", 2.6, "0", employment="closed loop", bits=_bits(0.0005, 0.05, 5)),
        _row("kernel/sparse", 2.6, "1", employment="open loop", bits=_bits(0.0005, 0.05, 6)),
        _row("kernel/sparse", 2.6, "2", employment="closed loop", bits=_bits(0.0005, 0.05, 7)),
    ]
    ranked = arm_table("seed-battery", rows)
    # Ranked on held-out bits/byte, not on the curve's val_bpb (where kernel/sparse beats byte
    # by 0.5 but the held-out text says they are the same model).
    assert [t["arm"] for t in ranked] == ["pmix/dense", "byte", "kernel/sparse", "kernel/dense"]
    assert [t["rank"] for t in ranked] == [1, 2, 3, None]
    table = {t["arm"]: t for t in ranked}
    assert table["byte"]["val_bpb"] == pytest.approx(3.1)
    assert table["byte"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert table["byte"]["heldout_bpb"] == pytest.approx(TEXT.mean(), abs=0.01)
    assert table["byte"]["blocks"] == 256 and 0 < table["byte"]["heldout_se"] < 0.1
    pmix = table["pmix/dense"]
    assert pmix["delta"] == pytest.approx(-0.3, abs=0.005)
    assert 0 < pmix["delta_se"] < 0.01 and pmix["delta_verdict"] == "lower"
    assert table["kernel/sparse"]["delta_verdict"] == "within noise"
    assert table["kernel/dense"]["n"] == 0 and table["kernel/dense"]["failed"] == 1
    assert math.isnan(table["byte"]["delta"]) and table["byte"]["reference"] == ""
    markdown = to_markdown({"sweep": "s", "program": "seed-battery", "arms": ranked})
    row = next(line for line in markdown.splitlines() if "| pmix/dense |" in line)
    assert row.startswith("| 1 | pmix/dense | 2 | 0 | ") and "| byte | -0.2992 ± 0.0008 |" in row
    assert "| lower | 2.6000 ± 0.1414 |" in row and row.endswith("| open loop |")
    assert "within noise" in markdown and "SE over 256 windows" in markdown
    # Seeds whose verdicts disagree are counted, the commonest first; no verdict reads "—".
    assert table["kernel/sparse"]["employment"] == "closed loop ×2, open loop ×1"
    assert to_csv(ranked).splitlines()[0].startswith("arm,n,failed,heldout_bpb,heldout_se")


def test_runs_without_their_targets_fall_back_to_the_heldout_metric() -> None:
    rows = [
        _row("byte", 3.0, heldout_bpb_windowed=3.3),
        _row("pmix/dense", 2.5, heldout_bpb_windowed=3.1),
        _row("kernel/dense", 2.0),  # no held-out figure at all: unranked, no Δ
    ]
    table = {t["arm"]: t for t in arm_table("seed-battery", rows)}
    assert table["pmix/dense"]["delta"] == pytest.approx(-0.2)
    assert (
        math.isnan(table["pmix/dense"]["delta_se"]) and table["pmix/dense"]["delta_verdict"] == ""
    )
    assert table["kernel/dense"]["rank"] is None and math.isnan(table["kernel/dense"]["delta"])
    markdown = to_markdown({"sweep": "s", "program": "seed-battery", "arms": list(table.values())})
    assert "no per-target NLL logged" in markdown


def test_graft_rows_compare_with_cold_start_and_continued_donor() -> None:
    rows = [
        _row("depth/graft", 2.4, bits=_bits(-0.3, 0.05, 1)),
        _row("depth/cold", 2.7, bits=_bits(0.0, 0.05, 2)),
        _row("depth/cold-full", 2.5, bits=_bits(-0.35, 0.05, 4)),
        _row("donor", 2.6, bits=_bits(-0.1, 0.05, 5)),
        _row("warm-restart", 2.5, bits=_bits(-0.2, 0.05, 3)),
        _row("continuation", 2.5, bits=_bits(-0.3, 0.05, 6)),
    ]
    table = {t["arm"]: t for t in arm_table("graft", rows)}
    graft = table["depth/graft"]
    assert graft["delta"] == pytest.approx(-0.3, abs=0.005) and graft["reference"] == "depth/cold"
    assert graft["delta_vs_warm_restart"] == pytest.approx(-0.1, abs=0.005)
    assert graft["delta_vs_warm_restart_verdict"] == "lower"
    assert graft["delta_vs_cold_full"] == pytest.approx(0.05, abs=0.005)
    assert graft["delta_vs_cold_full_verdict"] == "higher"
    assert graft["delta_vs_donor"] == pytest.approx(-0.2, abs=0.005)
    assert graft["delta_vs_continuation_verdict"] == "within noise"
    markdown = to_markdown({"sweep": "s", "program": "graft", "arms": list(table.values())})
    assert "(vs cold-full +0.0" in markdown and "; vs continuation " in markdown


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
