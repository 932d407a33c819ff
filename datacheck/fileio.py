"""The two file primitives every module shares: a content digest and an atomic write."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def stat_fingerprint(st: os.stat_result) -> str:
    """What must be unchanged for a file's remembered content hash to be trusted.

    Size, modification *and* status-change times in nanoseconds, inode and device: an edit that keeps the
    size and restores the modification time (``touch -d``, ``os.utime``) still moves ``st_ctime``, which no
    user can set.
    """
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"


def file_sha256(path: Path | str) -> str:
    """SHA-256 hex digest of a file's bytes, read in blocks (:func:`hashlib.file_digest`)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@contextlib.contextmanager
def atomic_writer(path: Path | str, *, durable: bool = False) -> Iterator[BinaryIO]:
    """Write ``path`` through a temporary file beside it, renamed into place only when the block succeeds.

    A concurrent reader sees the old file or the new one, never half of one; a failure leaves no temporary
    file behind. ``durable``: also fsync before the rename (files that must survive a power cut).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes, *, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, durable=durable) as handle:
        handle.write(data)
