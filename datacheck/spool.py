"""Row arrays gathered in arrival order, in memory or in an unlinked file on disk, read back in any order.

The embedding pipeline learns each image's thumbnail and ImageNet logits as cache chunks and model batches
arrive, in an order that is not the dataset's. At a million images those two arrays take 5 GB, and an audit
reads only a few rows of them at a time (thumbnails of candidate duplicate pairs and of a sample of images,
logits of the images in one cluster). :class:`RowSpool` appends rows as they arrive; above the pipeline's
``spill_rows`` they go to an unlinked temporary file beside the cache instead of memory, and
:meth:`RowSpool.finish` returns either an array or a :class:`MappedRows` over that file: the rows in the
caller's order, read through a memory map a selection at a time, the pages read handed back to the kernel
after each selection so resident memory holds only what the caller keeps.
"""

from __future__ import annotations

import mmap
import tempfile
from pathlib import Path
from typing import IO, Any, Union

import numpy as np

from datacheck.blocks import RowsOf, row_numbers, split_row_index

#: What :meth:`RowSpool.finish` returns on disk: the rows mapped, possibly reordered.
RowArray = Union["MappedRows", RowsOf]

#: Rows copied out of the mapping per step of a large selection (bounds the mapped pages held at once).
_READ_ROWS = 65_536


class MappedRows:
    """Read-only ``dtype[N, *row_shape]`` rows of a file, copied out where indexed.

    Indexing (a row number, a slice, an array of row numbers or a mask, optionally followed by indices into
    the row) returns a new array as numpy would; ``np.asarray`` reads every row. Safe to read from several
    threads at once.
    """

    def __init__(self, file: IO[bytes], n: int, row_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._file = file  # kept open: the file is unlinked and lives as long as this object
        self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) if n else None
        self._rows = (
            np.frombuffer(self._map, dtype, n * int(np.prod(row_shape))).reshape(n, *row_shape)
            if self._map is not None
            else np.empty((0, *row_shape), dtype)
        )

    @property
    def shape(self) -> tuple[int, ...]:
        """The rows' shape, as an array's."""
        return self._rows.shape

    @property
    def dtype(self) -> np.dtype:
        """The rows' element type."""
        return self._rows.dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions, as an array's."""
        return self._rows.ndim

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, rest = split_row_index(key)
        picked = row_numbers(rows, len(self))
        if isinstance(picked, int):
            out = np.array(self._rows[picked])
            self._release()
            return out[rest] if rest else out
        out = np.empty((len(picked), *self.shape[1:]), self.dtype)
        for start in range(0, len(picked), _READ_ROWS):
            out[start : start + _READ_ROWS] = self._rows[picked[start : start + _READ_ROWS]]
            self._release()
        return out[(slice(None), *rest)] if rest else out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def _release(self) -> None:
        """Unmap the pages read so far: they stay in the kernel's page cache, not in this process."""
        if self._map is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)


class RowSpool:
    """Rows of one shape appended in arrival order; :meth:`finish` returns them in any order.

    Args:
        directory: Where the unlinked temporary file goes (e.g. the cache folder), or ``None`` to keep the
            rows in memory.
        row_shape: Each row's shape, when known before the first row (an empty spool finishes with it);
            otherwise the first appended block's.
        dtype: The rows' element type, likewise.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        row_shape: tuple[int, ...] | None = None,
        dtype: np.dtype | type | None = None,
    ) -> None:
        self._directory = directory
        self._chunks: list[np.ndarray] = []  # in memory
        self._file: IO[bytes] | None = None  # on disk
        self._row_shape = row_shape
        self._dtype: np.dtype | None = None if dtype is None else np.dtype(dtype)
        self.n = 0

    @property
    def on_disk(self) -> bool:
        """Whether the rows go to a file."""
        return self._directory is not None

    def append(self, rows: np.ndarray) -> int:
        """Append ``rows`` (``[m, *row_shape]``; every call the same row shape); return the first's number.

        A block of a wider type than earlier ones widens the whole spool (``np.result_type``).
        """
        rows = np.asarray(rows)
        if self._row_shape is None:
            self._row_shape = rows.shape[1:]
        if self._dtype is None:
            self._dtype = rows.dtype
        elif rows.shape[1:] != self._row_shape:
            raise ValueError(f"rows of shape {rows.shape[1:]} appended to a spool of {self._row_shape}")
        widest = np.result_type(self._dtype, rows.dtype)
        if widest != self._dtype:
            self._widen(widest)
        first = self.n
        if self.on_disk:
            self._disk_file().write(np.ascontiguousarray(rows, self._dtype).data)
        else:
            self._chunks.append(rows)
        self.n += len(rows)
        return first

    def finish(self, order: np.ndarray) -> np.ndarray | RowArray:
        """Rows ``order`` (row numbers :meth:`append` returned, any order, repeats allowed).

        In memory: an array (built chunk by chunk, each chunk let go once copied). On disk: the file's rows,
        mapped; through :class:`~datacheck.blocks.RowsOf` when ``order`` is not every row in arrival order.
        """
        order = np.asarray(order, dtype=np.int64)
        if self.n == 0:
            return np.empty((len(order), *(self._row_shape or (0,))), self._dtype or np.float32)
        if not self.on_disk:
            return self._gather(order)
        file = self._disk_file()
        file.flush()
        mapped = MappedRows(file, self.n, self._row_shape, self._dtype)
        self._file = None
        in_place = len(order) == self.n and np.array_equal(order, np.arange(self.n))
        return mapped if in_place else RowsOf(mapped, order)

    def _gather(self, order: np.ndarray) -> np.ndarray:
        """``order``'s rows from the in-memory chunks, each chunk let go once copied.

        The rows are grouped by chunk with one sort: a cold run of a million images appends ~16,000 batches.
        """
        out = np.empty((len(order), *self._row_shape), self._dtype)
        chunks, self._chunks = self._chunks, []
        starts = np.cumsum([0] + [len(c) for c in chunks[:-1]])
        chunk_of = np.searchsorted(starts, order, side="right") - 1
        by_chunk = np.argsort(chunk_of, kind="stable")
        edges = np.searchsorted(chunk_of[by_chunk], np.arange(len(chunks) + 1))
        for k in range(len(chunks)):
            positions = by_chunk[edges[k] : edges[k + 1]]
            out[positions] = chunks[k][order[positions] - starts[k]]
            chunks[k] = None  # type: ignore[call-overload]  # let go once copied
        return out

    def _disk_file(self) -> IO[bytes]:
        if self._file is None:
            # outlives this call on purpose: closed (and so deleted) with the MappedRows that reads it
            self._file = tempfile.TemporaryFile(prefix="datacheck-spool-", dir=self._directory)  # noqa: SIM115
        return self._file

    def _widen(self, dtype: np.dtype) -> None:
        """Store every row as ``dtype`` from now on (rare: a model's logits past float16's range)."""
        if self.on_disk and self._file is not None:
            old, self._file = self._file, None
            old.flush()
            old_rows = MappedRows(old, self.n, self._row_shape, self._dtype)
            for start in range(0, self.n, _READ_ROWS):
                block = old_rows[start : start + _READ_ROWS]
                self._disk_file().write(np.ascontiguousarray(block, dtype).data)
            old.close()
        self._dtype = dtype
