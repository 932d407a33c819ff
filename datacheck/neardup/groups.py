"""Duplicate pairs → groups: greedy stars, so a chain of look-alikes cannot snowball into one group."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from datacheck.neardup.candidates import _groups_of


def duplicate_groups(n: int, pairs: pd.DataFrame, keys: np.ndarray | None = None) -> list[np.ndarray]:
    """Groups of duplicates: row numbers (ascending) of every group of at least two images.

    Identical images (same ``keys`` value) always share a group. Beyond that the groups are *stars*, not
    connected components: images — each set of identical copies counting as one — are visited by decreasing
    number of duplicate partners, and an unassigned one leads a group of itself and its unassigned partners;
    an image left alone this way joins the group of its best-scoring partner. Every member is thus a verified
    duplicate of the leader or of a member, so a chain of look-alikes (A ≈ B ≈ C ≈ …, common for ships on a
    flat horizon) cannot snowball into one giant group.

    Args:
        n: Number of rows.
        pairs: Frame with ``i``, ``j`` and ``score`` columns (see :func:`duplicate_pairs`).
        keys: Per-row key of identical images (:func:`exact_keys`), or ``None``.
    """
    node = np.unique(keys, return_inverse=True)[1] if keys is not None else np.arange(n)
    a, b = node[pairs["i"].to_numpy()], node[pairs["j"].to_numpy()]
    distinct = a != b
    a, b, score = a[distinct], b[distinct], pairs["score"].to_numpy()[distinct]
    n_nodes = int(node.max()) + 1 if n else 0
    graph = sparse.coo_matrix((np.r_[score, score], (np.r_[a, b], np.r_[b, a])), shape=(n_nodes, n_nodes))
    graph = graph.tocsr()
    graph.sum_duplicates()
    group = _star_groups(graph)
    # identical copies of an image without near duplicates form a group of their own (singletons drop out)
    labels = np.where(group[node] >= 0, group[node], group.max(initial=-1) + 1 + node)
    return _groups_of(labels)


def _star_groups(graph: sparse.csr_matrix) -> np.ndarray:
    """Greedy star clustering of a symmetric weighted graph: group id per node, -1 for isolated nodes."""
    degree = np.diff(graph.indptr)
    group = np.full(graph.shape[0], -1, np.int64)
    leaders = 0
    for leader in np.argsort(-degree, kind="stable"):
        if degree[leader] == 0:
            break
        if group[leader] >= 0:
            continue
        partners = graph.indices[graph.indptr[leader] : graph.indptr[leader + 1]]
        free = partners[group[partners] < 0]
        if len(free):
            group[leader] = group[free] = leaders
            leaders += 1
    for node in np.flatnonzero((group < 0) & (degree > 0)):  # every partner already taken
        start, stop = graph.indptr[node], graph.indptr[node + 1]
        group[node] = group[graph.indices[start + int(np.argmax(graph.data[start:stop]))]]
    return group
