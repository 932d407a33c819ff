"""Stage 1 of the duplicate search: candidate pairs from the kNN graph, exact copies from content keys.

The bottleneck cosine alone is a poor duplicate detector (look-alike photos score as high as real copies),
but a copy's original is almost always among its nearest neighbours: the shared kNN graph, cut at a loose
cosine floor, is a good candidate generator (:func:`candidate_pairs`). Exact copies need no search: rows
with the same decoded-pixel hash (else file hash) are linked directly (:func:`exact_keys`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from datacheck.context import AuditContext
    from datacheck.index import KnnGraph


def candidate_pairs(knn: KnnGraph, min_cosine: float) -> tuple[np.ndarray, np.ndarray]:
    """Unordered pairs of the kNN graph with cosine ≥ ``min_cosine``, each once.

    A pair is kept in the orientation ``(row, neighbour)`` of the first row that lists it, so every image
    heads at most ``k`` pairs (what :func:`verify_pairs` batches best).

    Returns:
        ``(pairs int64[P, 2], cosine float32[P])``.
    """
    rows, cols = np.nonzero((knn.similarities >= min_cosine) & (knn.indices >= 0))
    i = rows.astype(np.int64)
    j = knn.indices[rows, cols].astype(np.int64)
    keep = i != j
    i, j, cos = i[keep], j[keep], knn.similarities[rows[keep], cols[keep]]
    n = int(knn.indices.shape[0])
    _, first = np.unique(np.minimum(i, j) * n + np.maximum(i, j), return_index=True)
    first.sort()
    return np.stack([i[first], j[first]], axis=1), cos[first].astype(np.float32)


def exact_keys(ctx: AuditContext) -> np.ndarray:
    """Per row, the key that identical images share: the decoded-pixel hash, else the file hash."""
    if "pixel_hash" not in ctx.stats.columns or len(ctx.stats) != ctx.n:
        return exact_keys_of(ctx.file_sha256)
    return exact_keys_of(ctx.file_sha256, ctx.stats["pixel_hash"].to_numpy(dtype=object))


def exact_keys_of(
    file_sha256: Sequence[str], pixel_hashes: Sequence[str | None] | np.ndarray | None = None
) -> np.ndarray:
    """:func:`exact_keys` from arrays: the decoded-pixel hash of a row, else (missing or empty) its file hash.

    Args:
        file_sha256: Hex SHA-256 of each row's file.
        pixel_hashes: Hex hash of each row's decoded pixels (``ImageStats.pixel_hash``), or ``None`` to key
            every row by its file hash.

    Returns:
        ``object[N]``: ``"pixels:<hash>"`` or ``"file:<sha256>"`` per row.
    """
    files = np.array([f"file:{sha}" for sha in file_sha256], dtype=object)
    if pixel_hashes is None:
        return files
    pixels = np.asarray(pixel_hashes, dtype=object)
    missing = pd.isna(pixels) | (pixels == "")
    return np.where(missing, files, np.array([f"pixels:{h}" for h in pixels], dtype=object))


def _groups_of(labels: np.ndarray) -> list[np.ndarray]:
    """Row numbers of every label that occurs more than once, ascending."""
    order = np.argsort(labels, kind="stable")
    runs = np.split(order, np.flatnonzero(np.diff(labels[order])) + 1)
    return [run for run in runs if len(run) > 1]


def _exact_pairs(keys: np.ndarray, splits: Sequence[str | None]) -> np.ndarray:
    """Pairs linking identical images: each member to the first member of its group within each split.

    That connects every group (first member of the member's own split is linked to the group's first
    member) while listing each member's copies in other splits once per split, in O(group size × splits).
    """
    out: list[tuple[int, int]] = []
    for members in _groups_of(np.unique(keys, return_inverse=True)[1]):
        heads: dict[str | None, int] = {}
        for m in members:
            heads.setdefault(splits[m], int(m))
        anchors = sorted(set(heads.values()))
        for m in members:
            for a in anchors:
                if a != m and (splits[a] != splits[m] or a == heads[splits[m]]):
                    out.append((min(a, int(m)), max(a, int(m))))
        out += [(anchors[0], a) for a in anchors[1:]]
    return np.unique(np.array(out, dtype=np.int64).reshape(-1, 2), axis=0)
