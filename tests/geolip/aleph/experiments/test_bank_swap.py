"""The bank swap: both banks scored on the same targets, coverage and overlap checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geolip.aleph.bank import TrigramBank, bank_from_bytes
from geolip.aleph.bpb import bpb_windowed
from geolip.aleph.experiments.bank_swap import bank_swap


def _held(english) -> np.ndarray:
    return english[:6_000]


def _by_hand(bank: TrigramBank, arr: np.ndarray) -> float:
    tri = arr[: len(arr) // 3 * 3].reshape(-1, 3)[1:]
    rows = {tuple(r) for r in bank.trigrams.tolist()}
    return sum(tuple(t) in rows for t in tri.tolist()) / len(tri)


def test_swapping_to_its_own_bank_changes_nothing(make_model, english) -> None:
    model = make_model("pmix")
    held = _held(english)
    out = bank_swap(model, model.bank, held)
    assert out.delta.mean == 0.0 and out.overlap == 1.0
    assert out.bpb_trained == out.bpb_swapped
    assert out.bpb_trained == pytest.approx(bpb_windowed(model, held).bpb, rel=1e-12)
    assert out.targets == len(held) // 3 - 1
    assert out.heads_trained == out.heads_swapped and 0 <= out.heads_trained["gate_acc"] <= 1


def test_a_row_permuted_bank_gives_the_same_loss(make_model, english) -> None:
    """Spec §13.4's invariant, for every head that reads a bank."""
    for head in ("kernel", "pmix", "apmix"):
        model = make_model(head)
        perm = torch.randperm(model.bank.size, generator=torch.Generator().manual_seed(0))
        b = model.bank
        shuffled = TrigramBank(b.trigrams[perm], b.log_prior[perm], b.provenance)
        out = bank_swap(model, shuffled, _held(english))
        # Equal up to the fp32 summation order over the permuted rows (seen: 2.4e-9 bits for
        # pmix); a bank whose rows and priors part company moves the loss by ~1e-2 or more.
        assert out.overlap == 1.0 and abs(out.delta.mean) < 1e-7, head
        assert out.bpb_swapped == pytest.approx(out.bpb_trained, rel=1e-8), head


def test_another_vocabulary_is_scored_with_its_coverage_and_overlap(make_model, english) -> None:
    model = make_model("pmix")  # its bank: the top 256 of english[60_000:]
    held = _held(english)
    # A bank of other vocabulary: the trigrams ranked 257..512 of the same text (disjoint).
    wide = bank_from_bytes(english[60_000:], 512)
    keep = ~torch.isin(
        wide.trigrams[:, 0] * 65536 + wide.trigrams[:, 1] * 256 + wide.trigrams[:, 2],
        model.bank.trigrams[:, 0] * 65536
        + model.bank.trigrams[:, 1] * 256
        + model.bank.trigrams[:, 2],
    )
    other = TrigramBank(wide.trigrams[keep], wide.log_prior[keep], {"source": "test"})
    out = bank_swap(model, other, held)
    assert out.overlap == 0.0 and out.size_swapped == other.size == int(keep.sum())
    assert out.coverage_trained == pytest.approx(_by_hand(model.bank, held), abs=1e-12)
    assert out.coverage_swapped == pytest.approx(_by_hand(other, held), abs=1e-12)
    assert out.coverage_swapped < out.coverage_trained  # the rarer trigrams cover less
    assert out.delta.mean == pytest.approx(out.bpb_swapped - out.bpb_trained, abs=1e-12)
    assert out.delta.se > 0 and out.delta.blocks == 256
    metrics = out.metrics()
    assert {"swap/inbank_nll_swapped", "swap/gate_acc_trained"} <= set(metrics)
    assert metrics["swap/overlap"] == 0.0 and metrics["swap/delta_bpb_se"] == out.delta.se


def test_a_head_without_a_bank_is_refused(make_model, english) -> None:
    with pytest.raises(ValueError, match="uses no bank"):
        bank_swap(make_model("byte"), make_model("pmix").bank, _held(english))
