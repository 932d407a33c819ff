"""Array work cut into blocks and run on every core.

Shared by the duplicate verifier, the kNN graph's re-scoring and the layout filter of the duplicate search.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from threadpoolctl import threadpool_limits

T = TypeVar("T")


def map_blocks(work: Callable[[int], T], starts: Sequence[int], max_workers: int | None = None) -> list[T]:
    """``[work(start) for start in starts]``, on up to every core (at most ``max_workers`` threads).

    numpy releases the GIL in the copies, gathers and products that dominate such blocks. BLAS is held at one
    thread per block, so the blocks do not oversubscribe the cores and each block's result does not depend
    on what runs beside it.
    """
    cores = os.cpu_count() or 1
    workers = min(max_workers or cores, cores, len(starts))
    with threadpool_limits(limits=1, user_api="blas"):
        if workers <= 1:
            return [work(start) for start in starts]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(work, starts))
