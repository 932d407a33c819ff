"""The original ``cifar-10-batches-py`` folder: pickled batches, read with a restricted unpickler."""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datacheck.errors import DatasetUnreadableError
from datacheck.train.cifar10.arraycache import cache_key, read_cache, stat_key, write_cache
from datacheck.train.cifar10.arrays import CLASSES, IMAGE_SIZE, Cifar10Arrays, balanced_subset, one_line

_BATCH_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))


def find_batches_dir(path: Path) -> Path | None:
    """``path`` itself or ``path/cifar-10-batches-py`` when it holds the five data batches and test_batch."""
    for candidate in (path, path / "cifar-10-batches-py"):
        if all((candidate / name).is_file() for name in (*_BATCH_FILES, "test_batch")):
            return candidate
    return None


def load_batches(folder: Path, *, limit: int | None, cache_dir: Path) -> Cifar10Arrays:
    """The arrays of a ``cifar-10-batches-py`` folder (through the .npy cache)."""
    files = [folder / name for name in (*_BATCH_FILES, "test_batch", "batches.meta")]
    key = cache_key("batches", limit, [(f.name, *stat_key(f)) for f in files if f.exists()])
    cached = read_cache(cache_dir, key)
    if cached is not None:
        return cached
    classes = _batch_class_names(folder / "batches.meta")
    x_train, y_train, _ = _read_batch_files([folder / name for name in _BATCH_FILES])
    x_test, y_test, names = _read_batch_files([folder / "test_batch"])
    train_pick = balanced_subset(y_train, limit)
    test_pick = balanced_subset(y_test, limit)
    arrays = Cifar10Arrays(
        x_train=x_train[train_pick],
        y_train=y_train[train_pick],
        x_test=x_test[test_pick],
        y_test=y_test[test_pick],
        classes=classes,
        test_paths=tuple(f"test/{classes[y_test[i]]}/{names[i]}" for i in test_pick),
        source=f"cifar-10-batches-py at {folder}",
    )
    write_cache(cache_dir, key, arrays)
    return arrays


def _batch_class_names(meta: Path) -> tuple[str, ...]:
    if not meta.is_file():
        return CLASSES
    names = _unpickle(meta).get(b"label_names")
    if not isinstance(names, list) or not names:
        raise DatasetUnreadableError(f"{meta} has no label_names list")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def _read_batch_files(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    images, labels, names = [], [], []
    for path in paths:
        batch = _unpickle(path)
        data = np.asarray(batch.get(b"data"))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE:
            raise DatasetUnreadableError(f"{path}: 'data' is not a uint8 array of N × 3072 pixels")
        images.append(data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch.get(b"labels"), dtype=np.int32))
        raw_names = batch.get(b"filenames") or [f"{len(names) + i:05d}.png" for i in range(len(data))]
        names += [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in raw_names]
        if len(labels[-1]) != len(data):
            raise DatasetUnreadableError(f"{path}: {len(data)} images but {len(labels[-1])} labels")
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), names


def _numpy_global(module: str, name: str) -> Any:
    """``numpy.core.*`` names of pickles written by numpy 1 resolve to ``numpy._core.*`` in numpy 2."""
    for candidate in (
        module.replace("numpy.core", "numpy._core"),
        module.replace("numpy._core", "numpy.core"),
    ):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"cannot resolve {module}.{name}")


_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _BatchUnpickler(pickle.Unpickler):
    """Only what a CIFAR batch needs (dicts, lists, bytes, numpy arrays): a batch file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load: the pickle references {module}.{name}")
        if module == "_codecs":
            import codecs

            return codecs.encode
        return _numpy_global(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            obj = _BatchUnpickler(handle, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise DatasetUnreadableError(f"cannot read CIFAR batch {path}: {one_line(err)}") from None
    if not isinstance(obj, dict):
        raise DatasetUnreadableError(f"{path} is not a CIFAR batch (expected a pickled dict)")
    return obj
