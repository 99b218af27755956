"""The survey's bank-swap table (spec §13.4): one row per swap trial (``tune.banks``)."""

from __future__ import annotations

import math

from geolip.paired import verdict
from tune.cells import fmt


def swap_table(rows: list[dict]) -> list[dict]:
    """The survey's bank swaps (spec §13.4), one row per swap trial: the eval bank's label,
    overlap with the trained bank, coverage and bits/byte on both, Δ ± SE and its verdict."""
    out = []
    for r in sorted(
        (r for r in rows if r["kind"] == "bank_swap"), key=lambda r: (r["arm"], r["seed"])
    ):
        m = {k.removeprefix("swap/"): v for k, v in r["metrics"].items()}
        v = verdict(m.get("delta_bpb", math.nan), m.get("delta_bpb_se", math.nan))
        out.append({"arm": r["arm"], "seed": r["seed"], **m, "verdict": v})
    return out


def swap_lines(table: list[dict]) -> list[str]:
    lines = [
        "",
        "bank swap (no retraining; Δ = swapped − trained, paired over the held-out targets):",
        "",
        "| swap | seed | overlap | coverage trained → swapped | bpb trained → swapped | Δ ± SE "
        "| verdict |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for t in table:
        lines.append(
            f"| {t['arm']} | {t['seed']} | {fmt(t.get('overlap'), '.3f')} | "
            f"{fmt(t.get('coverage_trained'), '.3f')} → {fmt(t.get('coverage_swapped'), '.3f')} | "
            f"{fmt(t.get('bpb_trained_bank'))} → {fmt(t.get('bpb_swapped_bank'))} | "
            f"{fmt(t.get('delta_bpb'), '+.4f')} ± {fmt(t.get('delta_bpb_se'))} | {t['verdict']} |"
        )
    return lines
