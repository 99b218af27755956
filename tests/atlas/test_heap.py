"""The map task's heap settings (``atlas.heap``): freed arrays stay in the heap, then go back."""

from __future__ import annotations

import os
import platform

import numpy as np
import pytest

from atlas import heap

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
MB = 1 << 20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGESIZE")


def _rss_after_free(megabytes: int) -> int:
    """Resident bytes above the current ones after touching and freeing an array."""
    before = _rss()
    array = np.ones(megabytes * MB // 8)  # every page touched
    del array
    return _rss() - before


@glibc
def test_keep_holds_freed_arrays_in_the_heap_and_release_gives_them_back() -> None:
    # glibc's default: an array this large is its own mmap, unmapped (and zeroed anew) each time.
    assert _rss_after_free(96) < 16 * MB
    try:
        assert heap.keep()
        assert _rss_after_free(96) > 64 * MB  # kept for the next array of the task
        before = _rss()
        heap.release()
        assert before - _rss() > 64 * MB
    finally:
        # Back to glibc's defaults for the rest of the session.
        libc = heap._libc()
        libc.mallopt(heap._M_MMAP_THRESHOLD, 128 << 10)
        libc.mallopt(heap._M_TRIM_THRESHOLD, 128 << 10)
        libc.mallopt(heap._M_TOP_PAD, 0)
        heap.release()
