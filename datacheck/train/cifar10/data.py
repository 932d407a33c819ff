"""CIFAR-10 data: a split folder tree or the python batches → uint8 arrays (cached as .npy) → tf.data.

Sources (see docs/cifar10.md):

* a folder with ``train/<class>/`` and ``test/<class>/`` (what ``datacheck audit`` reads and ``apply``
  produces; ``cifar10-jpeg.tar.gz`` unpacks to it), discovered with :func:`datacheck.dataset.discover`
  (:mod:`~datacheck.train.cifar10.folders`);
* the original ``cifar-10-batches-py`` folder (pickled batches, read with a restricted unpickler;
  :mod:`~datacheck.train.cifar10.batches`);
* :func:`download_batches`: Keras' downloader, which needs internet
  (:mod:`~datacheck.train.cifar10.download`).

Images are decoded once into ``uint8[N, 32, 32, 3]`` arrays and cached as ``.npy`` files under
``<cache>/cifar10/<key>/`` next to the bottleneck cache; the key hashes every selected file's path, label,
size and modification time, so an edited dataset (e.g. after ``datacheck apply``) is decoded again
(:mod:`~datacheck.train.cifar10.arraycache`).

The input pipeline only gathers uint8 batches on the host and prefetches them; :func:`augment` (random
crop with 4 px reflect padding, horizontal flip) runs inside the replica step, on the accelerator
(:mod:`~datacheck.train.cifar10.pipeline`). The leak report is read by :mod:`~datacheck.train.cifar10.leaks`.

This module is the entry point, :func:`load_cifar10`, and re-exports the names of the modules above.
"""

from __future__ import annotations

from pathlib import Path

from datacheck.train.cifar10.arraycache import CACHE_VERSION, cache_folder
from datacheck.train.cifar10.arrays import CLASSES, IMAGE_SIZE, Cifar10Arrays, Progress, balanced_subset
from datacheck.train.cifar10.batches import find_batches_dir, load_batches
from datacheck.train.cifar10.download import (
    CIFAR10_SHA256,
    CIFAR10_URL,
    DOWNLOAD_TIMEOUT_S,
    download_batches,
)
from datacheck.train.cifar10.folders import decode_32, load_folder
from datacheck.train.cifar10.leaks import Leaks, leak_free_mask, read_leaks
from datacheck.train.cifar10.pipeline import (
    CROP_PAD,
    augment,
    epoch_order,
    replica_batches,
    test_dataset,
    train_dataset,
)

__all__ = [
    "CACHE_VERSION",
    "CIFAR10_SHA256",
    "CIFAR10_URL",
    "CLASSES",
    "CROP_PAD",
    "DOWNLOAD_TIMEOUT_S",
    "IMAGE_SIZE",
    "Cifar10Arrays",
    "Leaks",
    "Progress",
    "augment",
    "balanced_subset",
    "cache_folder",
    "decode_32",
    "download_batches",
    "epoch_order",
    "find_batches_dir",
    "leak_free_mask",
    "load_cifar10",
    "read_leaks",
    "replica_batches",
    "test_dataset",
    "train_dataset",
]


def load_cifar10(
    data: Path | None,
    *,
    download: bool = False,
    limit: int | None = None,
    cache_dir: Path,
    progress: Progress | None = None,
) -> Cifar10Arrays:
    """Read CIFAR-10 (or any 32×32-ish split folder tree) into uint8 arrays, through the .npy cache.

    Args:
        data: A split folder tree or a ``cifar-10-batches-py`` folder (or its parent).
        download: Ignore ``data`` and fetch the python batches (see :func:`download_batches`).
        limit: At most this many images per split, evenly over the classes (first by path).
        cache_dir: The datacheck cache folder; arrays go to ``cache_dir/cifar10/<key>/``.
        progress: ``progress("decode", done, total)`` while images are decoded.

    Returns:
        The arrays.

    Raises:
        DatasetUnreadableError: Missing folder, no train/test split, no images, failed download.
    """
    if download:
        data = download_batches(cache_dir)
    assert data is not None
    batches = find_batches_dir(Path(data))
    if batches is not None:
        return load_batches(batches, limit=limit, cache_dir=cache_dir)
    return load_folder(Path(data), limit=limit, cache_dir=cache_dir, progress=progress)
