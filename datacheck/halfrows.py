"""Unit-length vectors held in half the memory, read as the float32 rows they stand for.

At a million 1280-d bottlenecks the context's L2-normalised float32 vectors were 4.8 GiB, the largest
array of an audit. The cache stores every vector as float16 (:mod:`datacheck.embed.cache_codec`), so the
float16 rows lose nothing: :class:`HalfUnitRows` keeps them with each row's float32 norm and divides the
rows a reader asks for — the very values :func:`row_norms` and the division give for the whole float32
array at once, bit for bit, in 2.4 GiB.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from datacheck.blocks import row_numbers, split_row_index
from datacheck.jit import compiled

#: Rows converted to float32 at a time when many are read with an index into the rows (bounds the copies).
READ_ROWS = 16_384


@functools.cache
def _half_to_single() -> np.ndarray:
    """``float32[65536]``: the value of every float16 bit pattern (numpy's own conversion, once)."""
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


def _scaled_rows(
    bits: np.ndarray, norms: np.ndarray, rows: np.ndarray, table: np.ndarray, out: np.ndarray
) -> None:
    """``out[r] = float32(rows[r] of the float16 bits) / norms[rows[r]]`` (compiled by :func:`_kernel`).

    One pass from the float16 rows to the float32 result: numpy's ``astype`` from float16 converts one
    element at a time (~3 ns; the table, ~0.7 ns) and a separate division would be another pass.
    """
    for r in range(rows.shape[0]):
        row = rows[r]
        norm = norms[row]
        for j in range(bits.shape[1]):
            out[r, j] = table[bits[row, j]] / norm


@functools.cache
def _kernel() -> Any:
    """:func:`_scaled_rows` compiled by numba on first use (not at import), kept on disk for later runs.

    No ``fastmath``: the division must be IEEE's, as numpy's. ``nogil``: threads read rows in parallel.
    """
    return compiled(_scaled_rows, nogil=True)


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
        self._raw = np.ascontiguousarray(raw)  # kept, made read-only (the context takes the result's rows)
        self._norms = np.array(norms, dtype=np.float32)  # a copy: N floats
        self._bits = self._raw.view(np.uint16)
        for array in (self._raw, self._norms):
            array.flags.writeable = False

    @classmethod
    def of(cls, raw: np.ndarray) -> HalfUnitRows:
        """The unit rows of float16 ``raw`` (kept, not copied), their norms computed block by block."""
        unscaled = cls(raw, np.ones(len(raw), np.float32))  # reads raw as float32 (divided by 1: exact)
        norms = np.empty(len(raw), np.float32)
        for start, block in unscaled.blocks():
            norms[start : start + len(block)] = row_norms(block)
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
        rows, rest = split_row_index(key)
        picked = row_numbers(rows, len(self))
        if isinstance(picked, int):
            row = self._rows(np.array([picked]))[0]
            return row[rest] if rest else row
        flat = picked.reshape(-1)
        out = self._read(flat, rest)
        return out.reshape(*picked.shape, *out.shape[1:])

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        """``float32[len(rows), D]``: the unit rows numbered ``rows`` (negative: from the end)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        rows = np.where(rows < 0, rows + len(self), rows)
        out = np.empty((len(rows), self.shape[1]), np.float32)
        _kernel()(self._bits, self._norms, rows, _half_to_single(), out)
        return out

    def _read(self, rows: np.ndarray, rest: tuple) -> np.ndarray:
        """The unit rows ``rows`` with ``rest`` applied: straight into the result, or a step at a time."""
        if not rest:
            return self._rows(rows)
        tail = np.empty((0, self.shape[1]), np.float32)[(slice(None), *rest)].shape[1:]
        out = np.empty((len(rows), *tail), np.float32)
        for start in range(0, len(rows), READ_ROWS):
            out[start : start + READ_ROWS] = self._rows(rows[start : start + READ_ROWS])[(slice(None), *rest)]
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
