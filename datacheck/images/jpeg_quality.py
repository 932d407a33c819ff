"""JPEG quality estimation: the IJG quality (1..100) a JPEG was saved with, from its quantisation tables.

The file's tables are compared with libjpeg's standard (JPEG Annex K) tables scaled for every quality; the
closest wins. Results are memoised, since a dataset has few distinct tables.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np

# IJG (JPEG Annex K) base quantisation tables, natural order, as libjpeg scales them for quality 1..100.
_STD_LUMA_QTABLE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_STD_CHROMA_QTABLE = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    *(99,) * 32,  # the last four rows
)  # fmt: skip


@functools.cache
def _ijg_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    luma = np.clip((np.array(_STD_LUMA_QTABLE) * scale + 50) // 100, 1, 255)
    chroma = np.clip((np.array(_STD_CHROMA_QTABLE) * scale + 50) // 100, 1, 255)
    return luma, chroma


def estimate_jpeg_quality(qtables: Mapping[int, Sequence[int]]) -> int | None:
    """Estimate the IJG quality (1..100) a JPEG was saved with, from its quantisation tables.

    Args:
        qtables: Pillow's ``img.quantization`` (table id → 64 values in natural order).

    Returns:
        The quality whose scaled standard tables are closest to the file's, or ``None`` without a luma table.
    """
    luma = qtables.get(0)
    if luma is None or len(luma) != 64:
        return None
    chroma = qtables.get(1)
    chroma_key = tuple(chroma) if chroma is not None and len(chroma) == 64 else None
    return _closest_quality(tuple(luma), chroma_key)


@functools.lru_cache(maxsize=256)
def _closest_quality(luma: tuple[int, ...], chroma: tuple[int, ...] | None) -> int:
    """Closest IJG quality for one pair of tables (memoised: a dataset has few distinct tables)."""
    std_luma, std_chroma = _all_ijg_tables()
    total = np.abs(std_luma - np.asarray(luma, dtype=np.int64)).sum(axis=1)
    if chroma is not None:
        total += np.abs(std_chroma - np.asarray(chroma, dtype=np.int64)).sum(axis=1)
    # Smallest distance; on ties the highest quality (qualities are 1..100 in row order).
    best = np.flatnonzero(total == total.min())
    return int(best[-1]) + 1


@functools.cache
def _all_ijg_tables() -> tuple[np.ndarray, np.ndarray]:
    """Scaled standard tables for qualities 1..100 as ``int64[100, 64]`` arrays (luma, chroma)."""
    tables = [_ijg_tables(q) for q in range(1, 101)]
    return np.stack([t[0] for t in tables]).astype(np.int64), np.stack([t[1] for t in tables]).astype(
        np.int64
    )
