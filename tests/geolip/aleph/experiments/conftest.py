"""Fixtures shared by the experiment tests: real English bytes, a bank, fixed eval windows."""

from __future__ import annotations

import numpy as np
import pytest
from testpaths import WIKITEXT2_VALID

from geolip.aleph.bank import bank_from_bytes
from geolip.aleph.data import fixed_eval_batches


@pytest.fixture(scope="session")
def text() -> np.ndarray:
    """200 KB of WikiText-2 (or the embedded tiny corpus when shared/ is absent)."""
    if WIKITEXT2_VALID.is_file():
        return np.frombuffer(WIKITEXT2_VALID.read_bytes()[:200_000], dtype=np.uint8)
    from atlas.corpus import corpus_bytes

    return np.frombuffer(corpus_bytes("builtin:tiny", "train")[0], dtype=np.uint8)


@pytest.fixture(scope="session")
def bank(text):
    return bank_from_bytes(text, 512)


@pytest.fixture(scope="session")
def batches(text):
    return fixed_eval_batches(text, n_windows=4, n_trigrams=32, batch=4)


@pytest.fixture(scope="session")
def window(batches):
    return batches[0]
