"""Numpy-only reader for PyTorch *legacy* (non-zip) ``.pth`` state-dict files.

The legacy format is a sequence of pickles followed by raw storage bytes:

1. a magic number, 2. the protocol version (1001), 3. a sys-info dict, 4. the state dict itself
(an ``OrderedDict`` of ``torch._utils._rebuild_tensor_v2`` calls whose storages are persistent ids),
5. the list of storage keys, then 6. every storage in that order as an int64 element count followed by
the raw little-endian element bytes.

Unpickling untrusted data can execute arbitrary code, so the file's SHA-256 is verified *before* any
pickle is read, and the unpickler resolves only the handful of globals a state dict needs. Anything
else is refused with :class:`LegacyCheckpointError`.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from datacheck.fileio import file_sha256

__all__ = ["LegacyCheckpointError", "file_sha256", "load_legacy_state_dict"]

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001

#: The only storage classes we accept, and their element types (all little-endian).
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class LegacyCheckpointError(ValueError):
    """The file is not the expected, well-formed legacy PyTorch state dict (or fails its SHA-256 pin)."""


@dataclass(frozen=True, slots=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return _STORAGE_DTYPES[self.name]


@dataclass(slots=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _refuse(message: str) -> NoReturn:
    raise LegacyCheckpointError(message)


def _rebuild_tensor_v2(
    storage: object, offset: object, size: object, stride: object, *_ignored: object
) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: records the view, reads nothing yet."""
    if not isinstance(storage, _StorageRef) or not isinstance(offset, int) or offset < 0:
        _refuse("malformed tensor record (storage/offset)")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)):
        _refuse("malformed tensor record (size/stride)")
    if not all(isinstance(v, int) and v >= 0 for v in (*size, *stride)):
        _refuse("malformed tensor record (negative or non-integer size/stride)")
    return _TensorRef(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: object, *_ignored: object) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_parameter``: a parameter is just its tensor."""
    if not isinstance(data, _TensorRef):
        _refuse("malformed parameter record")
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a legacy state dict needs; storages become :class:`_StorageRef`."""

    def __init__(self, file: io.BytesIO, storages: dict[str, _StorageRef]):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        _refuse(f"refusing to load: the pickle references the disallowed global {module}.{name}")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            _refuse(f"unsupported persistent id in pickle: {pid!r:.80}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            _refuse("malformed storage record")
        if view_metadata is not None or not isinstance(numel, int) or numel < 0:
            _refuse("unsupported storage record (storage views are not supported)")
        ref = self._storages.setdefault(key, _StorageRef(key, storage_type.dtype, numel))
        if ref.dtype != storage_type.dtype or ref.numel != numel:
            _refuse(f"storage {key} is declared twice with different types or sizes")
        return ref


def _load_pickle(stream: io.BytesIO, storages: dict[str, _StorageRef]) -> Any:
    try:
        return _RestrictedUnpickler(stream, storages).load()
    except LegacyCheckpointError:
        raise
    except Exception as err:  # malformed pickles raise many different types
        raise LegacyCheckpointError(f"malformed legacy checkpoint: {type(err).__name__}: {err}") from err


def _check_header(stream: io.BytesIO) -> None:
    if _load_pickle(stream, {}) != _MAGIC_NUMBER:
        _refuse("not a PyTorch legacy checkpoint (bad magic number); zip-format files are not supported")
    if _load_pickle(stream, {}) != _PROTOCOL_VERSION:
        _refuse(f"unsupported legacy protocol version (expected {_PROTOCOL_VERSION})")
    sys_info = _load_pickle(stream, {})
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        _refuse("only little-endian legacy checkpoints are supported")


def _read_storages(stream: io.BytesIO, keys: object, storages: dict[str, _StorageRef]) -> None:
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)) or set(keys) != set(storages):
        _refuse("storage key list does not match the storages referenced by the state dict")
    buffer = stream.getbuffer()
    pos = stream.tell()
    for key in keys:
        ref = storages[key]
        if pos + 8 > len(buffer):
            _refuse("truncated checkpoint (storage header)")
        count = int(np.frombuffer(buffer, "<i8", 1, pos)[0])
        end = pos + 8 + count * ref.dtype.itemsize
        if count != ref.numel or end > len(buffer):
            _refuse(f"storage {key}: bad element count or truncated data")
        ref.data = np.frombuffer(buffer, ref.dtype, count, pos + 8).copy()
        pos = end
    if pos != len(buffer):
        _refuse("unexpected trailing bytes after the last storage")


def _materialise(tensor: _TensorRef) -> np.ndarray:
    data = tensor.storage.data
    assert data is not None
    numel = int(np.prod(tensor.shape, dtype=np.int64))
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride, strict=True))
    if numel and last >= data.size:
        _refuse(f"tensor view runs past the end of storage {tensor.storage.key}")
    strides = tuple(s * data.itemsize for s in tensor.stride)
    view = np.lib.stride_tricks.as_strided(data[tensor.offset :], tensor.shape, strides, writeable=False)
    return np.array(view, dtype=data.dtype, order="C", copy=True)


def load_legacy_state_dict(path: Path, *, sha256: str) -> dict[str, np.ndarray]:
    """Read a legacy PyTorch state dict as numpy arrays, without torch.

    Args:
        path: The ``.pth`` file.
        sha256: The expected hex SHA-256 of the whole file. It is checked before anything is unpickled.

    Returns:
        Tensor name → array (C-contiguous copy, the file's dtype), in file order.

    Raises:
        LegacyCheckpointError: SHA-256 mismatch, a disallowed global, or a malformed file.
    """
    raw = Path(path).read_bytes()
    actual = hashlib.sha256(raw).hexdigest()
    if actual != sha256.lower():
        _refuse(f"SHA-256 mismatch for {path}: expected {sha256}, got {actual}; refusing to unpickle it")
    stream = io.BytesIO(raw)
    _check_header(stream)
    storages: dict[str, _StorageRef] = {}
    state = _load_pickle(stream, storages)
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, _TensorRef) for k, v in state.items()
    ):
        _refuse("the checkpoint is not a flat state dict of tensors")
    _read_storages(stream, _load_pickle(stream, {}), storages)
    return {name: _materialise(tensor) for name, tensor in state.items()}
