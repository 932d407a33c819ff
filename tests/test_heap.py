"""Freed heap pages go back to the operating system between an audit's phases."""

from __future__ import annotations

from pathlib import Path

import pytest

from datacheck.heap import _malloc_trim, release_free_heap


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no VmRSS in /proc/self/status")


@pytest.mark.skipif(_malloc_trim() is None, reason="glibc's malloc_trim is not available here")
def test_pages_freed_between_live_objects_are_given_back() -> None:
    """Runs of freed objects between survivors (a cache read's rows) stay resident until trimmed."""
    kept, freed = [], []
    for _ in range(20_000):  # above pymalloc's 512 bytes: these come from the C heap
        freed.append([bytearray(1024) for _ in range(16)])
        kept.append(bytearray(600))
    del freed
    before = _rss_mb()
    release_free_heap()
    assert before - _rss_mb() > 100, "the ~300 MB freed stayed resident"
    assert len(kept) == 20_000


def test_release_is_safe_to_call_anywhere() -> None:
    release_free_heap()
    release_free_heap()
