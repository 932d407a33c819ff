"""The decoded dataset in memory (:class:`Cifar10Arrays`) and what both sources share.

The arrays are cached as ``.npy`` files by :mod:`~datacheck.train.cifar10.arraycache`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Progress = Callable[[str, int, int], None]

#: Side of a CIFAR-10 image; other sizes are resized to it.
IMAGE_SIZE = 32
#: Class names in the order of the original batches (also alphabetical).
CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


@dataclass(frozen=True)
class Cifar10Arrays:
    """A CIFAR-10-shaped dataset in memory.

    Attributes:
        x_train: ``uint8[N, 32, 32, 3]`` training images.
        y_train: ``int32[N]`` class indices into ``classes``.
        x_test: ``uint8[M, 32, 32, 3]`` test images.
        y_test: ``int32[M]``.
        classes: Class names.
        test_paths: One per test image, dataset-relative like the paths in report.json
            (``test/<class>/<file>``; for the batches, the batch's file name under its class).
        source: What was read, for the record.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    test_paths: tuple[str, ...]
    source: str


def one_line(err: BaseException) -> str:
    """An error's message on one line, at most 300 characters (its type's name when it has none)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]


def balanced_subset(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of at most ``limit`` items taken round-robin over the classes, in their original order.

    Args:
        labels: Class index per item.
        limit: ``None`` keeps everything.

    Returns:
        Sorted indices.
    """
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rank = np.zeros(len(labels), dtype=np.int64)
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        rank[members] = np.arange(len(members))
    order = np.lexsort((labels, rank))  # first of every class, then second of every class, …
    return np.sort(order[:limit])
