"""Freed heap memory given back to the operating system between an audit's phases."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys
from collections.abc import Callable

logger = logging.getLogger(__name__)


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the operating system (glibc's ``malloc_trim``; elsewhere a no-op).

    Reading a cache of a million images frees millions of small objects (database rows, per-image state)
    that sat between long-lived ones. glibc keeps such pages in the process until asked: 13 % of the
    context's resident memory at 100,000 images; at a million the audit's resident memory fell 8.7 → 7.9 GB
    at the trim after the context. Dask's workers trim for the same reason. Costs well under a second.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
        logger.debug("returned free heap pages to the operating system")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim  # absent from musl
    except (OSError, AttributeError):
        return None
