"""Reading one image's bytes out of a container (:class:`~datacheck.dataset.Blob`).

Tar members are read by offset (one seek, no listing). Table rows are read a row group (Parquet) or a
memory-mapped file (Arrow) at a time and kept in a small cache, because records are visited in key order:
neighbours in the embedding batch are neighbours in the table.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from datacheck.dataset import Blob
from datacheck.images import ImageDecodeError
from datacheck.sources.fs import is_uri, open_binary, parent

#: Row groups / Arrow files whose image column is kept decoded from Parquet at once (per process).
_TABLE_CACHE_SIZE = 4

_lock = threading.Lock()
_tables: OrderedDict[tuple[str, str, int, str], Any] = OrderedDict()


def read_blob(blob: Blob, *, max_bytes: int) -> bytes:
    """The bytes of ``blob``.

    Raises:
        ImageDecodeError: ``"cannot read …"`` / ``"no image bytes …"`` / ``"file too large …"``.
    """
    try:
        data = _read_tar(blob) if blob.kind == "tar" else _read_row(blob)
    except ImageDecodeError:
        raise
    except (OSError, ValueError, KeyError, IndexError) as err:
        raise ImageDecodeError(f"cannot read {blob.kind} entry: {err}") from err
    if len(data) > max_bytes:
        raise ImageDecodeError(f"file too large: {len(data)} bytes exceeds the limit of {max_bytes}")
    return data


def _read_tar(blob: Blob) -> bytes:
    offset, size = blob.position
    with open_binary(blob.container) as handle:
        handle.seek(offset)
        data = handle.read(size)
    if len(data) != size:
        raise ImageDecodeError(f"truncated file: the shard ends {size - len(data)} bytes early")
    return data


def _read_row(blob: Blob) -> bytes:
    group, row = blob.position
    column = _column(blob.kind, blob.container, group, blob.column)
    value = column[row].as_py()
    if isinstance(value, dict):  # a Hugging Face Image struct: {"bytes": …, "path": …}
        if value.get("bytes") is None and value.get("path"):
            return _read_referenced(blob.container, value["path"])
        value = value.get("bytes")
    if value is None:
        raise ImageDecodeError("no image bytes: this row's image cell is empty")
    return bytes(value)


def _read_referenced(container: str, path: str) -> bytes:
    """An image a table row names by path only (``to_parquet`` of a dataset built from files)."""
    target = path if is_uri(path) or path.startswith("/") else f"{parent(container)}/{path}"
    with open_binary(target) as handle:
        return handle.read()


def _column(kind: str, container: str, group: int, column: str) -> Any:
    key = (kind, container, group, column)
    with _lock:
        if key in _tables:
            _tables.move_to_end(key)
            return _tables[key]
    loaded = _load_parquet(container, group, column) if kind == "parquet" else _load_arrow(container, column)
    with _lock:
        _tables[key] = loaded
        while len(_tables) > _TABLE_CACHE_SIZE:
            _tables.popitem(last=False)
    return loaded


def _load_parquet(container: str, group: int, column: str) -> Any:
    import pyarrow.parquet as pq

    with open_binary(container) as handle:
        return pq.ParquetFile(handle).read_row_group(group, columns=[column]).column(0)


def _load_arrow(container: str, column: str) -> Any:
    return read_arrow_table(container).column(column)


def read_arrow_table(path: str) -> Any:
    """The table of an Arrow IPC file: the stream format ``save_to_disk`` writes, or the file format.

    A local file is memory-mapped (zero-copy: only the rows read are paged in); a URI is read whole.
    """
    import pyarrow as pa

    if is_uri(path):
        with open_binary(path) as handle:
            source = pa.BufferReader(handle.read())
    else:
        source = pa.memory_map(path)
    try:
        return pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:
        source.seek(0)
        return pa.ipc.open_file(source).read_all()


def clear_cache() -> None:
    """Forget the cached table columns (tests; a long-lived process after a dataset changed)."""
    with _lock:
        _tables.clear()
