"""``--download``: the python batches fetched with Keras' downloader (needs internet)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from datacheck.embed.cache import CIFAR10_DIR
from datacheck.errors import DatasetUnreadableError
from datacheck.train.cifar10.arrays import one_line
from datacheck.train.cifar10.batches import find_batches_dir

#: Where Keras' ``cifar10.load_data`` downloads from; ``$DATACHECK_CIFAR10_URL`` names a mirror.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
#: SHA-256 of that archive (the hash Keras verifies).
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
#: Seconds a download may stall before it fails.
DOWNLOAD_TIMEOUT_S = 30.0


def download_batches(cache_dir: Path, url: str | None = None) -> Path:
    """Fetch and unpack ``cifar-10-python.tar.gz`` with ``keras.utils.get_file`` (SHA-256 verified).

    Args:
        cache_dir: The datacheck cache; the archive goes to ``cache_dir/cifar10/download/``.
        url: Source URL; default ``$DATACHECK_CIFAR10_URL`` or :data:`CIFAR10_URL`.

    Returns:
        The ``cifar-10-batches-py`` folder.

    Raises:
        DatasetUnreadableError: The download failed (offline, blocked, wrong hash); the message says how to
            get the data without internet.
    """
    import keras

    origin = url or os.environ.get("DATACHECK_CIFAR10_URL") or CIFAR10_URL
    target = cache_dir / CIFAR10_DIR / "download"
    target.mkdir(parents=True, exist_ok=True)
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            path = keras.utils.get_file(
                fname="cifar-10-batches-py-target",
                origin=origin,
                extract=True,
                file_hash=CIFAR10_SHA256,
                cache_dir=str(target),
                cache_subdir="",
            )
    except Exception as err:  # get_file raises bare Exception for network errors
        raise DatasetUnreadableError(
            f"could not download CIFAR-10 from {origin} ({one_line(err)}). --download needs internet; "
            "offline, fetch cifar-10-python.tar.gz elsewhere, unpack it and pass --data "
            "<folder>/cifar-10-batches-py (or a train/<class>/, test/<class>/ image folder)"
        ) from None
    found = find_batches_dir(Path(path))
    if found is None:
        raise DatasetUnreadableError(f"the download in {path} holds no cifar-10-batches-py folder")
    return found


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
