"""Shared fixtures for the AlephLM model, eval/train and checkpoint tests: real English bytes, a
small frequency bank built from them, and a seeded tiny-model factory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from aleph_configs import HEAD_NAMES, tiny_cfg  # noqa: F401
from testpaths import WIKITEXT2_VALID

from geolip.aleph.bank import TrigramBank, bank_from_bytes
from geolip.aleph.model import AlephLM

VALID_TXT = WIKITEXT2_VALID


def _english_bytes(n: int = 120_000) -> np.ndarray:
    if VALID_TXT.is_file():
        return np.frombuffer(VALID_TXT.read_bytes()[:n], dtype=np.uint8).copy()
    # Fallback so the suite still runs without the shared data: seeded English-like text.
    rng = np.random.default_rng(0)
    words = b"the of and to in a is that for it as was with be by on not he this are".split()
    text = b" ".join(words[i] for i in rng.integers(0, len(words), n // 3))
    return np.frombuffer(text[:n], dtype=np.uint8).copy()


@pytest.fixture(scope="session")
def english() -> np.ndarray:
    """~120 KB of real English bytes (uint8), WikiText-2 validation."""
    return _english_bytes()


@pytest.fixture(scope="session")
def bank(english) -> TrigramBank:
    """A 256-row frequency bank from the *second* half of the bytes (partial coverage elsewhere)."""
    return bank_from_bytes(english[60_000:], 256)


@pytest.fixture
def make_model(bank):
    """Factory: ``make_model(head="byte", seed=0, bank=..., **cfg_overrides) -> AlephLM``."""

    def make(head: str = "byte", seed: int = 0, with_bank: TrigramBank | None = None, **over):
        torch.manual_seed(seed)
        cfg = tiny_cfg(head, **over)
        return AlephLM(cfg, with_bank if with_bank is not None else bank)

    return make


@pytest.fixture
def text_windows(english):
    """``text_windows(batch, n_trigrams, start=0)``: consecutive phase-0 windows of real English,
    ``[batch, n_trigrams + 1, 3]`` (long), inputs ``[:, :-1]`` and targets ``[:, 1:]``."""

    def make(batch: int, n_trigrams: int, start: int = 0) -> torch.Tensor:
        need = 3 * (n_trigrams + 1)
        rows = [english[start + i * need : start + (i + 1) * need] for i in range(batch)]
        return torch.from_numpy(np.stack(rows).astype(np.int64)).view(batch, n_trigrams + 1, 3)

    return make


@pytest.fixture
def random_ids():
    """``random_ids(batch, n, seed)``: seeded random byte trigrams ``[batch, n, 3]`` (long)."""

    def make(batch: int, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, 256, (batch, n, 3), generator=g)

    return make
