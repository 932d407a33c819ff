"""Arrays derived from embeddings (the kNN graph, the map layout), kept in the cache by content.

Re-auditing unchanged images — other thresholds, another check selection, a gate run after an audit — then
reuses the two most expensive derived results instead of recomputing them. A key is the SHA-256 of the
input arrays' bytes and of a label naming every parameter, so any change to an image or a setting misses.
Each kind lives in its own folder (``artifacts/knn``, ``artifacts/map``), which keeps its most recently
used entries only. Failing to read or write is never an error: the caller computes instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from datacheck.fileio import atomic_writer
from datacheck.halfrows import HalfUnitRows

logger = logging.getLogger(__name__)

#: Entries kept per folder (least recently used ones are deleted beyond it).
KEEP = 8
#: Audits' worth of entries kept by the stores with one entry per group of images (the splits check's class
#: profiles, the outliers check's classes): room for a change and its undoing.
KEPT_AUDITS = 3


def content_key(label: str, *arrays: np.ndarray) -> str:
    """SHA-256 over ``label`` and each array's dtype, shape and bytes."""
    digest = hashlib.sha256(label.encode())
    for array in arrays:
        if isinstance(array, HalfUnitRows):  # the float32 rows it stands for, converted block by block
            digest.update(f"|{array.dtype}|{array.shape}|".encode())
            for _, block in array.blocks():
                digest.update(memoryview(block).cast("B"))
            continue
        contiguous = np.ascontiguousarray(array)
        digest.update(f"|{contiguous.dtype}|{contiguous.shape}|".encode())
        digest.update(contiguous.tobytes() if contiguous.size == 0 else memoryview(contiguous).cast("B"))
    return digest.hexdigest()


def _path(directory: Path, key: str) -> Path:
    return Path(directory) / f"{key[:40]}.npz"


def load(directory: Path | None, key: str) -> dict[str, np.ndarray] | None:
    """The arrays stored under ``key``, or ``None`` when absent or unreadable."""
    if directory is None:
        return None
    return load_file(_path(directory, key))


def load_file(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of one stored entry (e.g. found by listing a folder), or ``None`` when unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, KeyError) as err:
        logger.debug("ignoring unreadable %s: %s", path, err)
        return None
    os.utime(path)  # recently used: pruned last
    return arrays


def lookup(haystack: np.ndarray, needles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``needles``, a position in ``haystack`` holding the same value, and whether there is one.

    A sorted search (any sortable dtype: row ids, content ids, 16-byte pair keys), no Python object per row.
    Where a value is missing the position is arbitrary; mask it with the second array.
    """
    if not len(haystack):
        return np.zeros(len(needles), np.int64), np.zeros(len(needles), bool)
    order = np.argsort(haystack, kind="stable")
    at = order[np.minimum(np.searchsorted(haystack[order], needles), len(haystack) - 1)]
    return at, haystack[at] == needles


def new_positions(old_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``int64[len(old_ids)]``: where each row of a stored state is among today's rows (``-1``: gone)."""
    at, found = lookup(ids, old_ids)
    return np.where(found, at, -1).astype(np.int64)


def changed_rows(old: np.ndarray, new: np.ndarray) -> int:
    """Rows of ``old`` that ``new`` lacks plus rows of ``new`` that ``old`` lacks (by row id)."""
    kept = int(np.isin(old, new).sum())
    return (len(old) - kept) + (len(new) - kept)


def closest(directory: Path, label: str, ids: np.ndarray) -> dict[str, np.ndarray] | None:
    """The stored entry with ``"label": label`` whose row ``"ids"`` differ least from ``ids``, or ``None``.

    What an incremental update starts from: the data as it was at the stored state nearest to today's, so
    undoing a change (or relabelling right after an audit) finds the very arrays of that state, whatever
    was stored in between. Differences count rows on either side only; ties go to the most recently used.
    Only ``ids`` and ``label`` are read from the entries not chosen.
    """
    best: tuple[int, Path] | None = None
    entries = sorted(Path(directory).glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in entries:
        try:
            with np.load(path, allow_pickle=False) as stored:
                if "ids" not in stored.files or str(stored.get("label", "")) != label:
                    continue
                old = stored["ids"]
        except (OSError, ValueError, KeyError) as err:
            logger.debug("ignoring unreadable %s: %s", path, err)
            continue
        changed = changed_rows(old, ids)
        if best is None or changed < best[0]:
            best = (changed, path)
    return load_file(best[1]) if best is not None else None


def closest_to_update(
    directory: Path, label: str, ids: np.ndarray, max_share: float
) -> dict[str, np.ndarray] | None:
    """:func:`closest`, when it is worth updating from: it shares rows with ``ids``, differing in few.

    At most ``max_share`` of ``ids`` added or removed; none is fine (the same rows in another order, e.g.
    files relabelled or renamed).
    """
    stored = closest(directory, label, ids)
    if stored is None:
        return None
    changed = changed_rows(stored["ids"], ids)
    nothing_kept = changed >= len(stored["ids"]) + len(ids)
    return None if nothing_kept or changed > max_share * len(ids) else stored


def store(directory: Path | None, key: str, arrays: Mapping[str, np.ndarray], *, keep: int = KEEP) -> None:
    """Keep ``arrays`` under ``key`` (atomically), then prune the folder to its ``keep`` newest entries."""
    if directory is None:
        return
    directory = Path(directory)
    try:
        with atomic_writer(_path(directory, key)) as handle:  # a concurrent reader never sees half a file
            np.savez(handle, **arrays)
        entries = sorted(directory.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[keep:]:
            old.unlink(missing_ok=True)
    except OSError as err:  # a read-only or full cache only costs the next run the computation
        logger.debug("not stored in %s: %s", directory, err)
