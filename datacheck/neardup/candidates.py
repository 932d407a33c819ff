"""Stage 1 of the duplicate search: candidate pairs from the kNN graph and the layout index, exact copies.

The bottleneck cosine alone is a poor duplicate detector (look-alike photos score as high as real copies),
but a copy's original is almost always among its nearest neighbours: the shared kNN graph, cut at a loose
cosine floor, is a good candidate generator (:func:`candidate_pairs`). Not always: heavy JPEG and several
edits combined can move a copy's embedding out of its original's neighbourhood while its coarse layout
stays the same, so a second source proposes the pairs whose 8×8 grayscale layouts (brightness and contrast
removed, mirrored or not) nearly match (:func:`layout_candidates`). Exact copies need no search: rows with
the same decoded-pixel hash (else file hash) are linked directly (:func:`exact_keys`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from datacheck import derived
from datacheck.blocks import map_blocks

if TYPE_CHECKING:
    from pathlib import Path

    from datacheck.context import AuditContext
    from datacheck.index import KnnGraph


def candidate_pairs(knn: KnnGraph, min_cosine: float) -> tuple[np.ndarray, np.ndarray]:
    """Unordered pairs of the kNN graph with cosine ≥ ``min_cosine``, each once.

    A pair is kept in the orientation ``(row, neighbour)`` of the first row that lists it, so every image
    heads at most ``k`` pairs (what :func:`verify_pairs` batches best).

    Returns:
        ``(pairs int64[P, 2], cosine float32[P])``.
    """
    n = int(knn.indices.shape[0])
    # row-major flat positions of the kept cells: the first row to list a pair comes first, as before
    cells = np.flatnonzero((knn.similarities >= min_cosine) & (knn.indices >= 0))
    i = (cells // knn.indices.shape[1]).astype(np.int64)
    j = knn.indices.ravel()[cells].astype(np.int64)
    keep = i != j
    cells, i, j = cells[keep], i[keep], j[keep]
    _, first = np.unique(np.minimum(i, j) * n + np.maximum(i, j), return_index=True)
    first.sort()
    return np.stack([i[first], j[first]], axis=1), knn.similarities.ravel()[cells[first]].astype(np.float32)


#: Side of the grayscale block-mean image the layout index compares (8 × 8 = 64 values per thumbnail; the
#: sum of the three channels stands for their mean, which the normalisation makes equivalent).
LAYOUT_SIDE = 8
#: Correlation of two layouts (or of one and the other's mirror) from which a pair is proposed. On planted
#: copies the copies the kNN graph missed correlate at 0.98–1.0; only ~2 % of the layout index's nearest
#: pairs reach 0.9 (docs/checks/duplicates.md).
LAYOUT_MIN_CORRELATION = 0.97
#: Layout agreement (:func:`layout_agreement`) below which a kNN candidate is not verified at all: every
#: duplicate found on the ciFAIR pairs agrees at ≥ 0.24 and on the planted copies at ≥ 0.15, while a third
#: of the kNN candidates fall below 0.1 (docs/checks/duplicates.md) — their verification was wasted.
LAYOUT_MIN_AGREEMENT = 0.1
#: Above this many rows the layout index is searched approximately (inverted lists) instead of exactly.
LAYOUT_EXACT_MAX = 20_000
#: Layouts per inverted list of the approximate index, and lists searched per query. A fixed list size
#: keeps the cost per query constant, so the search grows linearly with N where the HNSW graph used before
#: did not. On CIFAR-10 (60,000) and 100,000 synthetic rows they return every pair an exact search returns,
#: in half HNSW's time (bench/bench_layout_index.py, docs/checks/duplicates.md).
LAYOUT_LIST_SIZE = 256
LAYOUT_PROBES = 8
#: Pairs whose layout agreement is computed at a time, and thumbnails whose layouts are.
_AGREEMENT_CHUNK = 65_536
_LAYOUT_CHUNK = 65_536


def layouts(thumbs: np.ndarray) -> np.ndarray:
    """``float32[N, 8, 8]``: each thumbnail's grayscale block means, centred and scaled to unit length."""
    n, side = len(thumbs), LAYOUT_SIDE
    out = np.empty((n, side * side), np.float32)
    for start in range(0, n, _LAYOUT_CHUNK):  # the integer sums of a million thumbnails would be 0.5 GB
        out[start : start + _LAYOUT_CHUNK] = _block_sums(np.asarray(thumbs[start : start + _LAYOUT_CHUNK]))
    out -= out.mean(axis=1, keepdims=True)
    out /= np.maximum(np.sqrt(np.einsum("ij,ij->i", out, out))[:, None], 1e-6)
    return out.reshape(n, side, side)


def _block_sums(thumbs: np.ndarray) -> np.ndarray:
    """``int64[n, 64]``: the sum of each 4×4 block's pixels over the three channels."""
    n, side = len(thumbs), LAYOUT_SIDE
    block = thumbs.shape[1] // side
    # integer block sums: a float copy of every thumbnail would cost 10x the time
    return thumbs.reshape(n, side, block, side, block, -1).sum(axis=(2, 4, 5), dtype=np.int64).reshape(n, -1)


def layout_agreement(grid: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``float32[P]``: each pair's layout correlation (:func:`layouts`), as they are or one mirrored."""
    n = len(grid)
    own, mirrored = grid.reshape(n, -1), np.ascontiguousarray(grid[:, :, ::-1]).reshape(n, -1)
    out = np.empty(len(pairs), np.float32)

    def chunk(start: int) -> None:  # the gathers dominate: every core, in cache-sized chunks
        i, j = pairs[start : start + _AGREEMENT_CHUNK, 0], pairs[start : start + _AGREEMENT_CHUNK, 1]
        theirs = own[j]
        out[start : start + len(i)] = np.maximum(
            np.einsum("pd,pd->p", own[i], theirs), np.einsum("pd,pd->p", mirrored[i], theirs)
        )

    map_blocks(chunk, range(0, len(pairs), _AGREEMENT_CHUNK))
    return out


def layout_candidates(grid: np.ndarray, k: int, index=None) -> np.ndarray:
    """Pairs whose layouts nearly match: a second candidate source beside the kNN graph.

    Each row's ``k`` most correlated layouts (``grid``: the thumbnails' :func:`layouts`; compared as they are
    and mirrored) are kept when they correlate at :data:`LAYOUT_MIN_CORRELATION` or more. ``index``: an
    empty faiss inner-product index to search (default: exact up to :data:`LAYOUT_EXACT_MAX` rows, inverted
    lists above; a benchmark passes others). Returns unordered pairs, ``int64[P, 2]``, ``i < j``.
    """
    n = len(grid)
    if n < 2 or k < 1:
        return np.zeros((0, 2), np.int64)
    import faiss

    own = np.ascontiguousarray(grid.reshape(n, -1))
    mirrored = np.ascontiguousarray(grid[:, :, ::-1].reshape(n, -1))  # the block means of the mirror image
    if index is None:
        index = faiss.IndexFlatIP(own.shape[1]) if n <= LAYOUT_EXACT_MAX else _inverted_lists(own)
    index.add(own)
    found = []
    for queries in (own, mirrored):
        sims, rows = index.search(queries, min(k + 1, n))
        i = np.repeat(np.arange(n, dtype=np.int64), rows.shape[1])
        j, s = rows.ravel().astype(np.int64), sims.ravel()
        keep = (j >= 0) & (j != i) & (s >= LAYOUT_MIN_CORRELATION)
        found.append(np.stack([np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])], axis=1))
    return np.unique(np.concatenate(found), axis=0)


#: Bump when :func:`layout_candidates` proposes other pairs: stored ones of older versions are ignored.
LAYOUT_CANDIDATES_VERSION = 1


def stored_layout_candidates(
    grid: np.ndarray, k: int, keys: np.ndarray, directory: Path | None = None
) -> np.ndarray:
    """:func:`layout_candidates` of the rows taken in content order, kept in ``directory`` by content.

    In content order (``keys``: :func:`exact_keys`, identical for identical images) the pairs are a function
    of the images alone — the approximate index's training sample and its ties otherwise follow the row
    order, i.e. file names — so renaming or relabelling files finds the pairs the audit before stored, and
    gives the pairs a from-scratch audit would. When no entry has exactly these layouts, the stored state
    nearest to them is updated if few rows changed (:func:`_searched_or_updated`). ``directory`` ``None``:
    always search.

    Returns:
        Unordered pairs of row numbers, ``int64[P, 2]``, ``i < j``.
    """
    order = np.argsort(keys, kind="stable")
    canonical = np.ascontiguousarray(grid[order])
    label = (
        f"layout-candidates-v{LAYOUT_CANDIDATES_VERSION}|{k}|{LAYOUT_MIN_CORRELATION}|{LAYOUT_EXACT_MAX}|"
        f"{LAYOUT_LIST_SIZE}|{LAYOUT_PROBES}"
    )
    key = derived.content_key(label, canonical) if directory is not None else ""
    stored = derived.load(directory, key)
    held = stored.get("pairs") if stored is not None else None
    fits = held is not None and held.ndim == 2 and held.shape[1] == 2
    if fits and (held.size == 0 or held.max() < len(grid)):  # a damaged entry is searched again
        local = held.astype(np.int64)
    else:
        local = _searched_or_updated(canonical, k, directory, label, key)
    if not len(local):
        return local
    return np.unique(np.sort(order[local], axis=1), axis=0)


def _searched_or_updated(
    canonical: np.ndarray, k: int, directory: Path | None, label: str, key: str
) -> np.ndarray:
    """The layout pairs of ``canonical``: the nearest stored state's, updated, when it differs by a few rows.

    An update keeps the stored pairs of the rows still there and searches only the added rows, exactly,
    against every row (mirrored or not: the correlation of a mirrored layout with another is the other's
    mirrored with it, so one direction covers both). That is the pairs a fresh search gives unless more
    than ``k`` layouts match one row (the fresh search keeps each row's ``k`` best), or the approximate
    index misses a pair the exact search of the added rows finds. Stored with each row's identity (a hash of
    its layout) so the next audit can update from it.
    """
    from datacheck.index import MAX_UPDATE_SHARE, row_ids

    if directory is None:
        return layout_candidates(canonical, k)
    ids = row_ids(canonical.reshape(len(canonical), -1))
    base = derived.closest_to_update(directory, label, ids, MAX_UPDATE_SHARE) or {}
    old_pairs = base.get("pairs")
    fits = old_pairs is not None and old_pairs.ndim == 2 and old_pairs.shape[1] == 2
    if fits and (old_pairs.size == 0 or old_pairs.max() < len(base["ids"])):  # a damaged one is not used
        local = _updated_pairs(canonical, k, ids, base["ids"], old_pairs.astype(np.int64))
    else:
        local = layout_candidates(canonical, k)
    derived.store(directory, key, {"pairs": local, "ids": ids, "label": np.array(label)})
    return local


def _updated_pairs(
    grid: np.ndarray, k: int, ids: np.ndarray, old_ids: np.ndarray, old_pairs: np.ndarray
) -> np.ndarray:
    """Stored pairs of the rows kept (renumbered) plus the added rows' exact matches (see above)."""
    n = len(grid)
    old_to_new = derived.new_positions(old_ids, ids)
    kept = old_to_new[old_pairs] if len(old_pairs) else np.zeros((0, 2), np.int64)
    kept = kept[(kept >= 0).all(axis=1)]
    added = np.setdiff1d(np.arange(n), old_to_new[old_to_new >= 0])
    found = _matches_of(grid, added, k)
    both = np.concatenate([np.sort(kept, axis=1), found]).reshape(-1, 2)
    return np.unique(both, axis=0)


def _matches_of(grid: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Exact search of ``rows``: pairs with their ``k`` most correlated layouts, as they are or mirrored.

    Kept at :data:`LAYOUT_MIN_CORRELATION` or more. Unordered, ``i < j``.
    """
    import faiss

    n = len(grid)
    if not len(rows) or n < 2:
        return np.zeros((0, 2), np.int64)
    own = np.ascontiguousarray(grid.reshape(n, -1))
    mirrored = np.ascontiguousarray(grid[:, :, ::-1].reshape(n, -1))
    index = faiss.IndexFlatIP(own.shape[1])
    index.add(own)
    found = []
    for queries in (own[rows], mirrored[rows]):
        sims, hits = index.search(np.ascontiguousarray(queries), min(k + 1, n))
        i = np.repeat(rows.astype(np.int64), hits.shape[1])
        j, s = hits.ravel().astype(np.int64), sims.ravel()
        keep = (j >= 0) & (j != i) & (s >= LAYOUT_MIN_CORRELATION)
        found.append(np.stack([np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])], axis=1))
    return np.unique(np.concatenate(found), axis=0)


def _inverted_lists(own: np.ndarray):
    """An empty faiss inverted-list index of ~:data:`LAYOUT_LIST_SIZE` layouts per list, its lists trained.

    Trained on a sample drawn with a fixed seed (~40 points per list, what faiss asks for): repeatable.
    """
    from datacheck.index import trained_inverted_lists

    n = len(own)
    lists = max(1, n // LAYOUT_LIST_SIZE)
    sample = own[np.sort(np.random.default_rng(0).choice(n, min(n, 40 * lists), replace=False))]
    return trained_inverted_lists(sample, lists, LAYOUT_PROBES)


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
