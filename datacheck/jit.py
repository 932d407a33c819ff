"""Compile a kernel with numba on first use (not at import), keeping the machine code on disk when it can."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def compiled(kernel: Callable[..., Any], **options: Any) -> Callable[..., Any]:
    """``numba.njit(**options)(kernel)``, cached on disk for later processes when a folder is writable.

    Callers wrap this in ``functools.cache`` so a process compiles (or loads) each kernel once.
    """
    import numba

    try:
        return numba.njit(cache=True, **options)(kernel)
    except RuntimeError:  # nowhere writable to keep the compiled code: compile in every process instead
        return numba.njit(**options)(kernel)
