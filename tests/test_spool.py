"""Row spools: rows in arrival order, in memory or in an unlinked file, read back in any order."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from datacheck.blocks import RowsOf
from datacheck.spool import MappedRows, RowSpool


def _blocks(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (m, 4, 4, 3), dtype=np.uint8) for m in (5, 1, 7)]


@pytest.mark.parametrize("on_disk", [False, True])
def test_rows_come_back_in_the_order_asked(tmp_path: Path, on_disk: bool) -> None:
    spool = RowSpool(tmp_path if on_disk else None)
    blocks = _blocks()
    firsts = [spool.append(b) for b in blocks]
    assert firsts == [0, 5, 6] and spool.n == 13
    arrived = np.concatenate(blocks)
    order = np.array([12, 0, 5, 5, 3, 11])  # any order, repeats allowed
    rows = spool.finish(order)
    np.testing.assert_array_equal(np.asarray(rows), arrived[order])
    np.testing.assert_array_equal(rows[np.array([1, 3])], arrived[order[[1, 3]]])
    np.testing.assert_array_equal(rows[2], arrived[5])
    assert rows.shape == (6, 4, 4, 3) and rows.dtype == np.uint8 and len(rows) == 6
    assert not list(tmp_path.iterdir())  # the file is unlinked from the start


def test_mapped_rows_index_as_an_array_does(tmp_path: Path) -> None:
    spool, blocks = RowSpool(tmp_path), _blocks(1)
    for block in blocks:
        spool.append(block)
    arrived = np.concatenate(blocks)
    rows = spool.finish(np.arange(len(arrived)))  # every row in arrival order: no reordering layer
    assert isinstance(rows, MappedRows)
    mask = np.arange(len(arrived)) % 3 == 0
    for key in (4, -1, slice(2, 9, 3), np.array([8, 1, 1]), mask, (np.array([0, 2]), 1), (3, 2, 1)):
        np.testing.assert_array_equal(rows[key], arrived[key])
    np.testing.assert_array_equal(np.asarray(rows, dtype=np.float32), arrived.astype(np.float32))
    for wrong in (len(arrived), np.array([0, len(arrived)]), np.ones(3, bool)):
        with pytest.raises(IndexError):
            rows[wrong]
    through = RowsOf(rows, np.array([2, 0]))
    np.testing.assert_array_equal(through[(np.array([1]), 0)], arrived[[0], 0])
    assert through.dtype == np.uint8 and through.ndim == 4


@pytest.mark.parametrize("on_disk", [False, True])
def test_a_wider_block_widens_every_row(tmp_path: Path, on_disk: bool) -> None:
    spool = RowSpool(tmp_path if on_disk else None)
    half = np.random.default_rng(2).normal(0, 8, (4, 10)).astype(np.float16)
    wide = np.full((2, 10), 1e6, np.float32)  # past float16's range
    spool.append(half)
    spool.append(wide)
    rows = np.asarray(spool.finish(np.arange(6)))
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, np.concatenate([half.astype(np.float32), wide]))


def test_an_empty_spool_finishes_empty(tmp_path: Path) -> None:
    assert RowSpool(tmp_path).finish(np.array([], dtype=np.int64)).shape[0] == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RssFile from /proc (Linux)")
def test_pages_read_are_not_kept_resident(tmp_path: Path) -> None:
    """Reading every row of a 256 MB spool leaves the process's mapped file pages where they were."""
    spool = RowSpool(tmp_path)
    block = np.ones((4096, 4096), np.uint8)
    for _ in range(64):
        spool.append(block)
    rows = spool.finish(np.arange(spool.n))
    before = _rss_file_mb()
    total = sum(int(rows[start : start + 8192].sum(dtype=np.int64)) for start in range(0, len(rows), 8192))
    assert total == 64 * block.size
    assert _rss_file_mb() - before < 64, "the mapped pages read stayed resident"


def _rss_file_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no RssFile line in /proc/self/status")


def test_many_small_chunks_gather_in_one_pass() -> None:
    """A cold run appends one model batch at a time: 5,000 chunks, rows asked for in shuffled order."""
    spool, rng = RowSpool(), np.random.default_rng(3)
    blocks = [rng.integers(0, 1000, (int(m), 2)) for m in rng.integers(1, 4, 5_000)]
    for block in blocks:
        spool.append(block)
    order = rng.permutation(spool.n)
    np.testing.assert_array_equal(spool.finish(order), np.concatenate(blocks)[order])
