"""``outliers``: images far from every other image of their own class.

For each image, the mean cosine distance to its ``k`` nearest images *of the same class* is compared with the
other images of that class by a robust z-score (median/MAD). Those nearest same-class neighbours come from the
shared kNN graph when it holds enough of them (then they are exactly the nearest ones); otherwise, typically
for the outliers themselves, they are computed exactly against the class. See docs/checks/outliers.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from datacheck import derived
from datacheck.checks.base import CheckResult, Finding, ReportView, Severity, register, result, skipped
from datacheck.checks.quality import robust_z
from datacheck.context import AuditContext
from datacheck.halfrows import row_blocks
from datacheck.index import KnnParams, nearest_among, others_mask, unit_rows
from datacheck.params import Params, param

logger = logging.getLogger(__name__)

CHECK_ID = "outliers"

#: Rows compared against a class per matrix product (bounds memory at block × class size).
_BLOCK = 2048
#: Largest class searched exactly for the images the kNN graph lists too few classmates of.
EXACT_CLASS_MAX = 20_000


@dataclass(frozen=True)
class OutliersParams(Params):
    """Parameters of the ``outliers`` check.

    Attributes:
        k: Nearest same-class images whose mean cosine distance is an image's distance to its class.
        z_threshold: Robust z-score of that distance, within the class, from which an image is an outlier
            (severity ``info``).
        warn_z: Robust z-score from which an outlier is reported with severity ``warn``.
        min_scale: Floor of the class's MAD-based scale (cosine distance), so a very tight class does not turn
            small differences into outliers.
        min_class_images: Classes with fewer images are not assessed.
        max_findings: Most findings listed (highest score first); the metrics count all.
    """

    k: int = param(5, ge=1)
    z_threshold: float = param(4.0, gt=0)
    warn_z: float = 8.0
    min_scale: float = param(0.01, ge=0)
    min_class_images: int = 10
    max_findings: int = param(200, ge=0)

    def relations(self) -> list[str]:
        """``warn_z`` is at least ``z_threshold``; a class needs more than ``k`` images."""
        return [
            f"warn_z must be at least z_threshold ({self.z_threshold:g}), got {self.warn_z!r}"
            if self.warn_z < self.z_threshold
            else "",
            f"min_class_images must be greater than k ({self.k}), got {self.min_class_images!r}"
            if self.min_class_images <= self.k
            else "",
        ]


def _from_graph(ctx: AuditContext, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean similarity to the first ``k`` same-class neighbours in the graph, and how many it holds (<= k)."""
    idx, sims = ctx.knn.indices, ctx.knn.similarities
    same = (idx >= 0) & (ctx.labels[np.maximum(idx, 0)] == ctx.labels[:, None])
    rank = np.cumsum(same, axis=1)
    take = same & (rank <= k)
    found = take.sum(axis=1)
    total = np.where(take, sims, 0.0).sum(axis=1)
    return np.divide(total, found, out=np.zeros(len(found)), where=found > 0), found


def _nearest_members(ctx: AuditContext, rows: np.ndarray, members: np.ndarray, k: int) -> np.ndarray:
    """Mean similarity of each of ``rows`` to its ``k`` most similar ``members`` (itself excluded).

    Exact up to :data:`EXACT_CLASS_MAX` members; above, as the shared kNN graph is built (candidates from an
    inverted file in the reduced space, re-scored exactly): an exact search grows with the class size
    squared (a million images: most of this check's time).
    """
    if len(members) <= EXACT_CLASS_MAX:
        return _exact(ctx, rows, members, k)
    knn = KnnParams()
    found = nearest_among(unit_rows(ctx.vectors), ctx.reduced(knn.search_dim), rows, members, k, knn)
    similarity = found.mean(axis=1, dtype=np.float64)
    short = np.flatnonzero(np.isinf(found[:, -1]))  # the lists searched held fewer than k classmates
    if len(short):
        similarity[short] = _exact(ctx, rows[short], members, k)
    return similarity


def _exact(ctx: AuditContext, rows: np.ndarray, members: np.ndarray, k: int) -> np.ndarray:
    """:func:`_nearest_members` by an exact search.

    faiss' flat inner-product index: blocked BLAS products with a running top-k, no partition of a
    rows × members matrix, which was most of the time on large classes.
    """
    import faiss

    vectors = np.ascontiguousarray(ctx.vectors[members], dtype=np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    out = np.empty(len(rows))
    for start in range(0, len(rows), _BLOCK):
        block = rows[start : start + _BLOCK]
        _, found = index.search(np.ascontiguousarray(ctx.vectors[block], dtype=np.float32), k + 1)
        hits = members[found]  # k + 1 <= len(members): every hit is a member
        others = others_mask(hits, block)
        # the hits' similarities again, row by row: a row's value must not depend on which rows were searched
        # beside it (how the product was blocked), as it is kept for later audits
        query = ctx.vectors[block]
        sims = np.stack([np.einsum("bd,bd->b", query, ctx.vectors[hits[:, j]]) for j in range(k + 1)], axis=1)
        out[start : start + len(block)] = np.where(others, sims, 0.0).sum(axis=1) / k
    return out


def _stored_nearest_members(
    ctx: AuditContext, rows: np.ndarray, members: np.ndarray, k: int, keep: int
) -> np.ndarray:
    """:func:`_nearest_members`, reading back what an earlier audit computed for a class of these images.

    Kept by content in ``<derived_dir>/outliers`` (the ``keep`` most recent classes). Exact searches only:
    a row's value is then a function of its image and its class's images alone, so a class a data change
    left alone (images added to, removed from or relabelled in other classes) is not searched again, and
    the values are the ones a fresh audit computes.
    """
    from datacheck.results_store import code_digest

    if ctx.derived_dir is None or len(members) > EXACT_CLASS_MAX:
        return _nearest_members(ctx, rows, members, k)
    ids = ctx.content_ids
    directory = ctx.derived_dir / "outliers"
    key = derived.content_key(f"outliers-class|k{k}|{code_digest()}", np.sort(ids[members]))
    stored = derived.load(directory, key) or {}
    known, values = stored.get("ids", np.zeros(0, np.uint64)), stored.get("similarity", np.zeros(0))
    if known.shape != values.shape:  # damaged: searched again and stored over
        known, values = np.zeros(0, np.uint64), np.zeros(0)
    at, hit = derived.lookup(known, ids[rows])
    out = np.empty(len(rows))
    out[hit] = values[at[hit]]
    if not hit.all():
        out[~hit] = _nearest_members(ctx, rows[~hit], members, k)
        known, first = np.unique(np.concatenate([known, ids[rows[~hit]]]), return_index=True)
        values = np.concatenate([values, out[~hit]])[first]
        derived.store(directory, key, {"ids": known, "similarity": values}, keep=keep)
    return out


def class_distances(ctx: AuditContext, k: int, min_class_images: int) -> np.ndarray:
    """Mean cosine distance of every image to its ``k`` nearest same-class images (NaN for small classes)."""
    similarity, found = _from_graph(ctx, k)
    distance = np.full(ctx.n, np.nan)
    classes = np.unique(ctx.labels)
    for label in classes:
        members = np.flatnonzero(ctx.labels == label)
        if len(members) < min_class_images:
            continue
        kk = min(k, len(members) - 1)
        short = members[found[members] < kk]
        if len(short):
            keep = derived.KEPT_AUDITS * len(classes)
            similarity[short] = _stored_nearest_members(ctx, short, members, kk, keep=keep)
        distance[members] = 1.0 - similarity[members]
    return distance


def class_z_scores(distance: np.ndarray, labels: np.ndarray, min_scale: float) -> np.ndarray:
    """Robust z-score of each distance among the distances of its own class."""
    z = np.full(len(distance), np.nan)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if np.isfinite(distance[members]).any():
            z[members] = robust_z(distance[members], min_scale)
    return z


def nearest_classes(ctx: AuditContext) -> np.ndarray:
    """Class of each image's neighbourhood: similarity-weighted vote of its graph neighbours.

    Rows without neighbours get the class whose centroid is most similar.
    """
    n_classes = len(ctx.class_names)
    idx, sims = ctx.knn.indices, ctx.knn.similarities
    valid = idx >= 0
    weights = np.where(valid, np.clip(sims, 1e-6, None), 0.0)
    cells = np.arange(ctx.n)[:, None] * n_classes + ctx.labels[np.maximum(idx, 0)]
    votes = np.bincount(cells.ravel(), weights.ravel(), minlength=ctx.n * n_classes).reshape(ctx.n, n_classes)
    empty = votes.sum(axis=1) == 0
    if empty.any():
        centroids = np.zeros((n_classes, ctx.vectors.shape[1]))
        for start, block in row_blocks(ctx.vectors):  # HalfUnitRows are read by block
            np.add.at(centroids, ctx.labels[start : start + len(block)], block)
        votes[empty] = ctx.vectors[empty] @ centroids.T
    return votes.argmax(axis=1)


def _finding(
    ctx: AuditContext, path: str, row: int, z: float, distance: float, nearest: int, p: OutliersParams
) -> Finding:
    given = ctx.class_names[ctx.labels[row]]
    near = ctx.class_names[nearest]
    if near != given:
        advice = f"Check the image: if it shows a '{near}', relabel it; if it shows neither, remove it."
    else:
        advice = (
            f"Check that it is a real '{given}' image; if it is, collect more '{given}' images like it "
            "so the "
            "class covers this case, otherwise remove it."
        )
    return Finding(
        kind="outlier",
        severity=Severity.WARN if z >= p.warn_z else Severity.INFO,
        message=f"'{path}' is far from every other '{given}' image (distance {distance:.2f}, z={z:.1f}).",
        advice=advice,
        files=(path,),
        extra={"label": given, "nearest_class": near, "score": z, "distance": distance},
    )


@register(CHECK_ID, OutliersParams, view=ReportView(card="outlier", neighbours=True))
def check_outliers(ctx: AuditContext, params: OutliersParams) -> CheckResult:
    """Images far from every other image of their own class (kNN distance, robust z within the class)."""
    counts = np.bincount(ctx.labels, minlength=len(ctx.class_names)) if ctx.n else np.zeros(0, int)
    assessed = [c for c, n in zip(ctx.class_names, counts, strict=True) if n >= params.min_class_images]
    if not assessed or ctx.knn.k == 0:
        return skipped(CHECK_ID, f"skipped: no class has {params.min_class_images} or more images")
    distance = class_distances(ctx, params.k, params.min_class_images)
    z = class_z_scores(distance, ctx.labels, params.min_scale)
    flagged = np.flatnonzero(np.nan_to_num(z, nan=-np.inf) >= params.z_threshold)
    flagged = flagged[np.argsort(-z[flagged], kind="stable")]
    nearest = nearest_classes(ctx)
    paths = ctx.paths
    findings = [
        _finding(ctx, paths[i], int(i), float(z[i]), float(distance[i]), int(nearest[i]), params)
        for i in flagged[: params.max_findings]
    ]
    metrics = {
        "outliers": len(flagged),
        "warn": int((z[flagged] >= params.warn_z).sum()),
        "per_class": {c: int((ctx.labels[flagged] == i).sum()) for i, c in enumerate(ctx.class_names)},
        "classes_assessed": len(assessed),
        "median_distance": {
            c: float(np.nanmedian(distance[ctx.labels == i]))
            for i, c in enumerate(ctx.class_names)
            if c in assessed
        },
    }
    checked = int(np.isfinite(distance).sum())
    summary = (
        f"{len(flagged)} of {checked} images are far from the rest of their class"
        if len(flagged)
        else (f"no outliers among {checked} images")
    )
    return result(CHECK_ID, summary, findings, metrics)
