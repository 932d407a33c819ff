"""Unit-length vectors held in half the memory, read as the float32 rows they stand for.

At a million 1280-d bottlenecks the context's L2-normalised float32 vectors were 4.8 GiB, the largest
array of an audit. The cache stores every vector as float16 (:mod:`datacheck.embed.cache_codec`), so the
float16 rows lose nothing: :class:`HalfUnitRows` keeps them with each row's float32 norm and divides the
rows a reader asks for — the very values :func:`row_norms` and the division give for the whole float32
array at once, bit for bit, in 2.4 GiB.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Rows converted to float32 at a time when many are read (bounds the transient copies).
READ_ROWS = 16_384


def row_norms(vectors: np.ndarray) -> np.ndarray:
    """``float32[N]``: each float32 row's Euclidean length, at least 1e-12 (a zero row stays zero)."""
    # einsum: 20x faster than np.linalg.norm(axis=1) on float32 rows, and no squared temporary
    return np.maximum(np.sqrt(np.einsum("ij,ij->i", vectors, vectors)), np.float32(1e-12))


class HalfUnitRows:
    """``float32[N, D]`` unit rows, stored as the float16 rows they normalise and their float32 norms.

    Indexing (a row number, a slice, an array of row numbers of any shape, or a mask, optionally followed by
    indices into the row) returns a new float32 array equal to the same index of
    ``raw.astype(float32) / row_norms(raw.astype(float32))[:, None]``. ``np.asarray`` converts every row:
    readers of large sets index rows in blocks instead. Read-only, safe to read from several threads.
    """

    def __init__(self, raw: np.ndarray, norms: np.ndarray) -> None:
        if raw.dtype != np.float16 or raw.ndim != 2 or norms.shape != raw.shape[:1]:
            raise ValueError(f"expected float16[N, D] rows and float32[N] norms, got {raw.dtype}{raw.shape}")
        self._raw = raw
        self._norms = norms.astype(np.float32, copy=False)
        for array in (self._raw, self._norms):
            array.flags.writeable = False

    @classmethod
    def of(cls, raw: np.ndarray) -> HalfUnitRows:
        """The unit rows of float16 ``raw`` (kept, not copied), their norms computed block by block."""
        norms = np.empty(len(raw), np.float32)
        for start in range(0, len(raw), READ_ROWS):
            norms[start : start + READ_ROWS] = row_norms(raw[start : start + READ_ROWS].astype(np.float32))
        return cls(raw, norms)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(N, D)``, as the float32 array's."""
        return self._raw.shape

    @property
    def dtype(self) -> np.dtype:
        """``float32``: what reads return."""
        return np.dtype(np.float32)

    @property
    def itemsize(self) -> int:
        """Bytes per element of what reads return."""
        return 4

    @property
    def ndim(self) -> int:
        """2."""
        return 2

    @property
    def nbytes(self) -> int:
        """Bytes held (the float16 rows and the norms), not those of the float32 array they stand for."""
        return self._raw.nbytes + self._norms.nbytes

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if isinstance(rows, (int, np.integer)):
            row = self._raw[rows].astype(np.float32)
            row /= self._norms[rows]
            return row[rest] if rest else row
        if isinstance(rows, slice) and rows.step in (None, 1):
            start, stop, _ = rows.indices(len(self))
            return self._read(range(start, max(start, stop)), rest, lambda a, b: slice(start + a, start + b))
        picked = np.asarray(rows)
        if picked.dtype == bool:
            if picked.shape != (len(self),):
                raise IndexError(f"boolean index of shape {picked.shape} for {len(self)} rows")
            picked = np.flatnonzero(picked)
        elif isinstance(rows, slice):
            picked = np.arange(*rows.indices(len(self)))
        flat = picked.reshape(-1)
        out = self._read(flat, rest, lambda a, b: flat[a:b])
        return out.reshape(*picked.shape, *out.shape[1:])

    def _read(self, rows: Any, rest: tuple, part: Any) -> np.ndarray:
        """Unit rows ``part(a, b)`` for consecutive steps of ``rows``, ``rest`` applied to each step."""
        tail = np.empty((0, self.shape[1]), np.float32)[(slice(None), *rest)].shape[1:]
        out = np.empty((len(rows), *tail), np.float32)
        for a in range(0, len(rows), READ_ROWS):
            b = min(a + READ_ROWS, len(rows))
            unit = self._raw[part(a, b)].astype(np.float32)
            unit /= self._norms[part(a, b)][:, None]
            out[a:b] = unit[(slice(None), *rest)] if rest else unit
        return out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def blocks(self, rows: int = READ_ROWS):
        """``(start, float32 unit rows)`` of consecutive blocks: every row once, in order."""
        for start in range(0, len(self), rows):
            yield start, self[start : start + rows]


def row_blocks(vectors: np.ndarray | HalfUnitRows, rows: int = READ_ROWS):
    """``(start, float32 rows)`` of consecutive blocks of an array or of :class:`HalfUnitRows`."""
    if isinstance(vectors, HalfUnitRows):
        yield from vectors.blocks(rows)
        return
    array = np.asarray(vectors)
    for start in range(0, len(array), rows):
        yield start, array[start : start + rows]


def as_rows(vectors: Any) -> np.ndarray | HalfUnitRows:
    """``vectors`` as float32 rows to index: :class:`HalfUnitRows` as they are, anything else as an array."""
    return vectors if isinstance(vectors, HalfUnitRows) else np.asarray(vectors, dtype=np.float32)
