"""Windows drawn from independent chunks: inside one chunk, phase-aligned, all starts reachable."""

import numpy as np
import pytest
import torch

from geolip.aleph.data import sample_chunk_windows


def test_windows_stay_inside_one_chunk_and_cover_every_start() -> None:
    # Chunk c holds bytes equal to c, so a window mixing chunks would mix values.
    lengths = [30, 9, 60, 3]
    arr = np.concatenate([np.full(n, c, np.uint8) for c, n in enumerate(lengths)])
    bounds = np.r_[0, np.cumsum(lengths)]
    w = sample_chunk_windows(arr, bounds, 4000, 2, torch.Generator().manual_seed(0))
    assert w.shape == (4000, 3, 3) and w.dtype == torch.uint8
    per_window = w.reshape(4000, -1)
    assert bool((per_window == per_window[:, :1]).all())
    # Windows of 3 trigrams: chunk 0 has 8 starts, chunk 1 one, chunk 2 18, chunk 3 none.
    counts = np.bincount(per_window[:, 0].numpy(), minlength=4)
    assert counts[3] == 0 and counts[1] > 0
    assert abs(counts[2] / counts[0] - 18 / 8) < 0.35


def test_windows_are_the_chunk_bytes_in_order() -> None:
    arr = np.arange(90, dtype=np.uint8)
    bounds = np.array([0, 45, 90])
    w = sample_chunk_windows(arr, bounds, 50, 3, torch.Generator().manual_seed(1))
    flat = w.reshape(50, -1).numpy().astype(int)
    assert (np.diff(flat, axis=1) == 1).all() and (flat[:, 0] % 3 == 0).all()


def test_too_short_chunks_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no chunk holds a window of 5 trigrams"):
        sample_chunk_windows(np.zeros(12, np.uint8), np.array([0, 12]), 1, 4, torch.Generator())
