"""The ``.npy`` cache of the decoded arrays: one folder per dataset version, ``<cache>/cifar10/<key>/``.

Both sources (:mod:`~datacheck.train.cifar10.batches`, :mod:`~datacheck.train.cifar10.folders`) key the
cache with :func:`cache_key` over every selected file's path, label, size and modification time
(:func:`stat_key`), so an edited dataset (e.g. after ``datacheck apply``) is decoded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datacheck.embed.cache import CIFAR10_DIR
from datacheck.train.cifar10.arrays import Cifar10Arrays

logger = logging.getLogger(__name__)

#: Bump when the cached arrays' format or the decoding changes.
CACHE_VERSION = 1

_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def stat_key(path: Path) -> tuple[int, int]:
    """``(size, mtime_ns)`` of ``path``; ``(-1, -1)`` when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def cache_key(kind: str, limit: int | None, rows: Sequence[tuple]) -> str:
    """The cache key of one dataset version: a hash of the source kind, the limit and one row per file."""
    digest = hashlib.sha256(f"{CACHE_VERSION}|{kind}|{limit}".encode())
    for row in rows:
        digest.update(("\x1f".join(map(str, row)) + "\x1e").encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:24]


def cache_folder(cache_dir: Path, key: str) -> Path:
    """Where the arrays of one dataset version live."""
    return cache_dir / CIFAR10_DIR / key


def read_cache(cache_dir: Path, key: str) -> Cifar10Arrays | None:
    """The cached arrays of ``key``, or ``None`` when they are missing or unreadable."""
    folder = cache_folder(cache_dir, key)
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in _ARRAYS}
    except (OSError, ValueError):
        return None
    logger.info("decoded arrays read from %s", folder)
    return Cifar10Arrays(
        **arrays, classes=tuple(meta["classes"]), test_paths=tuple(meta["test_paths"]), source=meta["source"]
    )


def write_cache(cache_dir: Path, key: str, arrays: Cifar10Arrays) -> None:
    """Best effort: a read-only or full cache only costs the decoding next time."""
    folder = cache_folder(cache_dir, key)
    staging = folder.with_name(f"{key}.tmp-{os.getpid()}")
    try:
        staging.mkdir(parents=True, exist_ok=True)
        for name in _ARRAYS:
            np.save(staging / f"{name}.npy", getattr(arrays, name), allow_pickle=False)
        meta = {
            "classes": list(arrays.classes),
            "test_paths": list(arrays.test_paths),
            "source": arrays.source,
        }
        (staging / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        os.replace(staging, folder)
        logger.info("decoded arrays cached in %s", folder)
    except OSError as err:
        logger.warning("could not cache the decoded arrays in %s: %s", folder, err)
        shutil.rmtree(staging, ignore_errors=True)
