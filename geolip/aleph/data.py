"""The trigram stream: bytes framed as non-overlapping trigrams with a global phase (spec §2)."""

from __future__ import annotations

import numpy as np
import torch


def as_byte_array(data: bytes | bytearray | np.ndarray) -> np.ndarray:
    """Bytes as one uint8 array (never Python lists)."""
    if isinstance(data, np.ndarray):
        return data.astype(np.uint8, copy=False)
    return np.frombuffer(bytes(data), dtype=np.uint8)


def trigram_view(arr: np.ndarray) -> tuple[torch.Tensor, int]:
    """Phase-0 trigrams of a byte array -> ([n, 3] uint8 tensor, dropped trailing bytes)."""
    n = len(arr) // 3
    view = arr[: 3 * n]
    # torch refuses to share read-only memory (np.frombuffer of bytes): copy only then.
    view = view if view.flags.writeable else view.copy()
    return torch.from_numpy(view).view(n, 3), len(arr) - 3 * n


def sample_windows(
    arr: np.ndarray, batch: int, n_trigrams: int, generator: torch.Generator
) -> torch.Tensor:
    """``batch`` windows of ``n_trigrams + 1`` trigrams starting at multiples of 3 (global phase).

    arr: uint8 bytes -> [B, n_trigrams + 1, 3] uint8; inputs ``[:, :-1]``, targets ``[:, 1:]``.
    """
    need = n_trigrams + 1
    n_tri = len(arr) // 3
    if n_tri < need:
        raise ValueError(
            f"the byte stream holds {n_tri} trigrams, fewer than one window of {need}; "
            "use a larger corpus or a smaller model.seq_trigrams"
        )
    starts = torch.randint(0, n_tri - need + 1, (batch,), generator=generator).numpy()
    # Gather on the numpy side: only the sampled windows are copied, never the corpus.
    idx = starts[:, None] + np.arange(need)[None, :]
    return torch.from_numpy(arr[: 3 * n_tri].reshape(n_tri, 3)[idx])


def fixed_eval_batches(
    arr: np.ndarray, n_windows: int, n_trigrams: int, batch: int, seed: int = 1234
) -> list[torch.Tensor]:
    """Pre-materialised eval windows: the same bytes for a base model and every ablation."""
    g = torch.Generator().manual_seed(seed)
    windows = sample_windows(arr, n_windows, n_trigrams, g)
    return list(windows.split(batch))


def sample_chunk_windows(
    arr: np.ndarray, bounds: np.ndarray, batch: int, n_trigrams: int, generator: torch.Generator
) -> torch.Tensor:
    """``sample_windows`` over several independent byte chunks held in one buffer.

    arr: uint8[L], chunk c is ``arr[bounds[c]:bounds[c + 1]]`` (each starts at a multiple of 3 in
    its own stream); windows never straddle two chunks, which need not be adjacent in the corpus
    (a data-parallel worker holds an arbitrary subset of a corpus' chunks). Every valid start is
    equally likely. -> [B, n_trigrams + 1, 3] uint8.
    """
    need = n_trigrams + 1
    starts = np.asarray(bounds[:-1], dtype=np.int64)
    n_tri = (np.asarray(bounds[1:], dtype=np.int64) - starts) // 3
    valid = np.maximum(n_tri - need + 1, 0)
    if valid.sum() == 0:
        raise ValueError(
            f"no chunk holds a window of {need} trigrams (largest has {int(n_tri.max(initial=0))}); "
            "use larger chunks or a smaller model.seq_trigrams"
        )
    cum = np.cumsum(valid)
    pick = torch.randint(0, int(cum[-1]), (batch,), generator=generator).numpy()
    chunk = np.searchsorted(cum, pick, side="right")
    offset = pick - (cum[chunk] - valid[chunk])
    first = starts[chunk] + 3 * offset
    idx = first[:, None] + np.arange(3 * need)[None, :]
    return torch.from_numpy(arr[idx].reshape(batch, need, 3))
