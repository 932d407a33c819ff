"""Array work cut into blocks and run on every core.

Shared by the duplicate verifier, the kNN graph's re-scoring and the layout filter of the duplicate search;
:class:`RowsOf` lets a check read rows of a large array without copying them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from threadpoolctl import threadpool_limits

T = TypeVar("T")


def one_blas_thread() -> threadpool_limits:
    """BLAS held at one thread, for work that runs on threads side by side.

    The threads then do not oversubscribe the cores, and each one's result does not depend on what runs
    beside it: the checks, the map's layout beside them, :func:`map_blocks`' blocks.
    """
    return threadpool_limits(limits=1, user_api="blas")


def map_blocks(work: Callable[[int], T], starts: Sequence[int], max_workers: int | None = None) -> list[T]:
    """``[work(start) for start in starts]``, on up to every core (at most ``max_workers`` threads).

    numpy releases the GIL in the copies, gathers and products that dominate such blocks. BLAS is held at one
    thread per block, so the blocks do not oversubscribe the cores and each block's result does not depend
    on what runs beside it.
    """
    cores = os.cpu_count() or 1
    workers = min(max_workers or cores, cores, len(starts))
    with one_blas_thread():
        if workers <= 1:
            return [work(start) for start in starts]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(work, starts))


def split_row_index(key: Any) -> tuple[Any, tuple]:
    """An index into rows as ``(rows, rest)``: what picks the rows, and the indices into each row."""
    return (key[0], key[1:]) if isinstance(key, tuple) else (key, ())


def row_numbers(rows: Any, n: int) -> int | np.ndarray:
    """A row index of ``n`` rows as one row number or an array of them (bounds are checked on reading).

    A slice becomes its row numbers, a mask (it must have ``n`` entries) the numbers of its true rows.
    """
    if isinstance(rows, (int, np.integer)):
        return int(rows)
    if isinstance(rows, slice):
        return np.arange(*rows.indices(n))
    picked = np.asarray(rows)
    if picked.dtype == bool:
        if picked.shape != (n,):
            raise IndexError(f"boolean index of shape {picked.shape} for {n} rows")
        return np.flatnonzero(picked)
    return picked


@dataclass(frozen=True)
class RowsOf:
    """Rows ``rows`` of ``array``, gathered only where indexed: a subset or reordering, never copied whole.

    What a check reads as an array (``len``, ``shape``, indexing with row numbers) at a million images: the
    test split's vectors (0.9 GB) of which the representativeness check reads a sample, the labels check's
    features in content order (1 GB) of which each fold reads a part.
    """

    array: np.ndarray | Any  # or another row-indexable array (a :class:`~datacheck.spool.MappedRows`)
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        """As the gathered array's shape would be."""
        return (len(self.rows), *self.array.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        """The rows' element type."""
        return self.array.dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions, as the gathered array's."""
        return len(self.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        rows, rest = split_row_index(index)
        return self.array[(self.rows[rows], *rest)] if rest else self.array[self.rows[rows]]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = np.asarray(self.array[self.rows])
        return out if dtype is None else out.astype(dtype, copy=False)
