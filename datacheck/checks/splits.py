"""``splits``: categories that are really several, and pairs of categories the embeddings cannot tell apart.

**Split.** In the spirit of GEORGE (Sohoni et al. 2020, "No Subclass Left Behind"), each class is clustered on
its own — but on the shared kNN graph rather than on a UMAP projection (GEORGE's choice, ~100× dearer): the
graph restricted to the class is embedded spectrally (regularised normalised adjacency, Qin & Rohe 2013) and
k-means is run on the embedding for k in ``2..max_k``, in order of the eigengap. A clustering is *separated*
when few kNN edges cross between its clusters: its crossing ratio — the share of edges that cross, relative
to the share a random assignment of the same cluster sizes would give — is at most ``max_crossing``. The
first separated k whose clusters each hold at least ``min_cluster_fraction`` of the class and
``min_cluster_size`` images is reported, with ``score`` = 1 − crossing ratio; findings are ranked by it.
Each cluster is named by the ImageNet labels characteristic of its members (from ``ctx.logits``, see
:mod:`datacheck.probes.naming`), e.g. "sports car / convertible".

**Merge.** On the same graph, for each pair of classes ``a, b``: how often an image's neighbours belong to the
other class, relative to how often they would if the two classes were shuffled together (``mixing`` = 1:
indistinguishable, 0: perfectly separated). Pairs with ``mixing ≥ merge_mixing`` are reported.

Cost: per class one sparse eigen-decomposition (``max_k + 1`` vectors) and ``max_k − 1`` small k-means fits —
milliseconds per thousand images, no N×N matrix. See docs/checks/splits.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from datacheck.checks.base import CheckResult, Finding, Severity, Status, register, result
from datacheck.context import AuditContext
from datacheck.probes.cluster import kmeans
from datacheck.probes.naming import ImageNetNamer

logger = logging.getLogger(__name__)

CHECK_ID = "splits"

_ADVICE_SPLIT = (
    "Look at the clusters and, if they are different things, give each its own class (or make sure every "
    "kind is well represented)."
)
_ADVICE_MERGE = (
    "Check whether these classes really differ in the images; if annotators cannot tell them apart either, "
    "merge them or write a clearer labelling rule."
)


@dataclass(frozen=True)
class SplitsParams:
    """Parameters of the ``splits`` check.

    Attributes:
        max_k: Largest number of clusters tried per class (from 2).
        max_crossing: Largest crossing ratio (0 = no kNN edge between clusters, 1 = random) of a clustering
            that counts as separated. CIFAR-10 classes at 96 px score 0.27 or more; a class merged from
            automobile, ship and horse scores 0.13.
        min_cluster_fraction: Every cluster must hold at least this share of the class…
        min_cluster_size: …and at least this many images.
        regularisation: Spectral regularisation τ in units of the mean degree.
        merge_mixing: Neighbour mixing of two classes (1 = indistinguishable) from which a merge is reported.
        max_merges: Most merge findings reported (strongest first).
        n_names: Most ImageNet labels in a cluster's name.
        n_examples: Example files per cluster in ``files`` (``clusters[].files`` always lists every member).
        seed: Seed of k-means.
    """

    max_k: int = 5
    max_crossing: float = 0.2
    min_cluster_fraction: float = 0.1
    min_cluster_size: int = 20
    regularisation: float = 1.0
    merge_mixing: float = 0.75
    max_merges: int = 20
    n_names: int = 3
    n_examples: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_k < 2:
            raise ValueError(f"max_k must be at least 2, got {self.max_k}")
        if not 0.0 < self.max_crossing < 1.0:
            raise ValueError(f"max_crossing must be between 0 and 1, got {self.max_crossing}")
        if not 0.0 < self.min_cluster_fraction <= 0.5:
            raise ValueError(f"min_cluster_fraction must be in (0, 0.5], got {self.min_cluster_fraction}")
        if self.regularisation <= 0:
            raise ValueError(f"regularisation must be positive, got {self.regularisation}")
        if not 0.0 < self.merge_mixing <= 2.0:
            raise ValueError(f"merge_mixing must be in (0, 2], got {self.merge_mixing}")
        if self.min_cluster_size < 2 or self.max_merges < 0 or self.n_names < 1 or self.n_examples < 0:
            raise ValueError("min_cluster_size must be >= 2, max_merges and n_examples >= 0, n_names >= 1")


@dataclass(frozen=True)
class Clustering:
    """The chosen clustering of one class.

    Attributes:
        k: Number of clusters.
        separation: ``1 −`` its crossing ratio (1 = no kNN edge between clusters).
        assignment: ``int[n]`` cluster of each member (clusters numbered largest first).
        distance: ``float[n]`` each member's distance to its cluster centre (small = typical).
    """

    k: int
    separation: float
    assignment: np.ndarray
    distance: np.ndarray


@register(CHECK_ID, SplitsParams)
def splits(ctx: AuditContext, params: SplitsParams) -> CheckResult:
    """Classes whose images form separate clusters, and class pairs the embeddings cannot tell apart."""
    if ctx.n == 0 or not ctx.class_names:
        return CheckResult(CHECK_ID, Status.SKIPPED, "no embedded images")
    namer = ImageNetNamer(ctx.logits) if ctx.logits is not None else None
    split_findings = []
    labels = np.asarray(ctx.labels)
    for label, name in enumerate(ctx.class_names):
        members, rows, cols = class_graph(ctx.knn.indices, labels, label)
        clustering = cluster_class(len(members), rows, cols, params)
        if clustering is not None:
            split_findings.append(_split_finding(ctx, name, members, clustering, namer, params))
    split_findings.sort(key=lambda f: -f.extra["score"])
    merge_findings = _merge_findings(ctx, params)
    metrics = {
        "split_scores": {f.extra["class"]: f.extra["score"] for f in split_findings},
        "splittable_classes": len(split_findings),
        "merge_pairs": len(merge_findings),
    }
    return result(
        CHECK_ID, _summary(split_findings, merge_findings), split_findings + merge_findings, metrics
    )


def _summary(split_findings: list[Finding], merge_findings: list[Finding]) -> str:
    parts = []
    if split_findings:
        parts.append(
            "classes that look like several categories: "
            + ", ".join(f"{f.extra['class']} ({len(f.extra['clusters'])} clusters)" for f in split_findings)
        )
    if merge_findings:
        parts.append(
            "classes the embeddings barely tell apart: "
            + ", ".join(" & ".join(f.extra["classes"]) for f in merge_findings)
        )
    return "; ".join(parts) or "every class is one coherent group and every pair of classes is separable"


# ---------------------------------------------------------------------------------------------- clustering


def class_graph(
    indices: np.ndarray, labels: np.ndarray, label: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shared kNN graph restricted to one class.

    Returns:
        ``(members, rows, cols)``: the class's row numbers and its directed edges in member positions.
    """
    members = np.flatnonzero(labels == label)
    position = np.full(len(labels), -1, dtype=np.int64)
    position[members] = np.arange(len(members))
    neighbours = indices[members]
    inside = (neighbours >= 0) & (position[np.maximum(neighbours, 0)] >= 0)
    rows = np.repeat(np.arange(len(members)), neighbours.shape[1])[inside.ravel()]
    cols = position[neighbours.ravel()[inside.ravel()]]
    return members, rows, cols


def _spectral_embedding(
    n: int, rows: np.ndarray, cols: np.ndarray, dim: int, regularisation: float
) -> tuple[np.ndarray, np.ndarray]:
    """Leading eigenvalues and eigenvectors (largest first) of the regularised, normalised adjacency.

    The adjacency is ``A + τ/n·J`` (Qin & Rohe 2013).
    The ``τ/n·J`` term (τ = ``regularisation`` × mean degree, never materialised) keeps stray images and
    tiny disconnected bits from claiming eigenvectors of their own.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import LinearOperator, eigsh

    adjacency = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float64)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    tau = regularisation * max(float(degree.mean()), 1.0)
    scale = 1.0 / np.sqrt(degree + tau)

    def matvec(x: np.ndarray) -> np.ndarray:
        x = x.reshape(n, -1) * scale[:, None]
        return (adjacency @ x + tau / n * x.sum(axis=0, keepdims=True)) * scale[:, None]

    operator = LinearOperator((n, n), matvec=matvec, matmat=matvec, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(n)
    values, vectors = eigsh(operator, k=dim, which="LA", tol=1e-4, v0=v0)
    order = np.argsort(-values)
    return values[order], vectors[:, order]


def crossing_ratio(assignment: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> float:
    """Share of kNN edges that cross clusters, relative to a random assignment of the same cluster sizes.

    0 = no edge between clusters, 1 = no structure at all.
    """
    if len(rows) == 0:
        return 1.0
    crossing = float((assignment[rows] != assignment[cols]).mean())
    shares = np.bincount(assignment) / len(assignment)
    return crossing / max(1.0 - float((shares**2).sum()), 1e-12)


def cluster_class(n: int, rows: np.ndarray, cols: np.ndarray, params: SplitsParams) -> Clustering | None:
    """Spectral clustering of one class's kNN graph.

    Candidate k are tried in order of their eigengap (the classic choice of k in spectral clustering); the
    first whose clusters are all large enough and well separated (crossing ratio ≤ ``max_crossing``) wins.

    Args:
        n: Images in the class.
        rows: Edge sources (member positions).
        cols: Edge targets (member positions).
        params: Check parameters.

    Returns:
        The chosen clustering, ``None`` when no k qualifies (or the class is too small for two clusters).
    """
    min_size = max(params.min_cluster_size, int(np.ceil(params.min_cluster_fraction * n)))
    max_k = min(params.max_k, n // max(min_size, 1))
    if max_k < 2 or len(rows) == 0 or n <= max_k + 2:
        return None
    values, embedding = _spectral_embedding(n, rows, cols, max_k + 1, params.regularisation)
    gaps = values[1:max_k] - values[2 : max_k + 1]  # gap after the k-th eigenvalue, k = 2..max_k
    for k in (int(i) + 2 for i in np.argsort(-gaps, kind="stable")):
        space = embedding[:, :k] / np.maximum(np.linalg.norm(embedding[:, :k], axis=1, keepdims=True), 1e-12)
        model = kmeans(space, k, n_init=4, seed=params.seed)
        if np.bincount(model.labels, minlength=k).min() < min_size:
            continue
        ratio = crossing_ratio(model.labels, rows, cols)
        if ratio <= params.max_crossing:
            return _ordered(1.0 - ratio, model.labels, np.sqrt(model.distances))
    return None


def _ordered(score: float, assignment: np.ndarray, distances: np.ndarray) -> Clustering:
    """Renumber clusters largest first."""
    k = distances.shape[1]
    order = np.argsort(-np.bincount(assignment, minlength=k), kind="stable")
    rename = np.empty(k, dtype=np.int64)
    rename[order] = np.arange(k)
    return Clustering(k, score, rename[assignment], distances[np.arange(len(assignment)), assignment])


def _split_finding(
    ctx: AuditContext,
    class_name: str,
    members: np.ndarray,
    clustering: Clustering,
    namer: ImageNetNamer | None,
    params: SplitsParams,
) -> Finding:
    paths = ctx.paths
    clusters, examples = [], []
    for cluster in range(clustering.k):
        inside = np.flatnonzero(clustering.assignment == cluster)
        inside = inside[np.argsort(clustering.distance[inside], kind="stable")]
        rows = members[inside]
        name = namer.name(rows, max_names=params.n_names) if namer is not None else f"cluster {cluster + 1}"
        files = [paths[r] for r in rows]
        clusters.append({"size": len(rows), "name": name, "files": files})
        examples += files[: params.n_examples]
    names = " | ".join(f"{c['name']} ({c['size']})" for c in clusters)
    return Finding(
        kind="split",
        severity=Severity.INFO,
        message=(
            f"class '{class_name}' falls into {clustering.k} well-separated groups "
            f"(separation {clustering.separation:.2f}): {names}"
        ),
        advice=_ADVICE_SPLIT,
        files=tuple(examples),
        extra={"class": class_name, "score": clustering.separation, "clusters": clusters},
    )


# -------------------------------------------------------------------------------------------------- merges


def neighbour_mixing(indices: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``float[C, C]`` symmetric mixing of class pairs on the kNN graph (1 = shuffled together, 0 = apart).

    For classes ``a, b``: the share of ``a``'s neighbours (among those in ``a`` or ``b``) that are in ``b``,
    divided by the share expected if ``a`` and ``b`` were one class, averaged over both directions.
    """
    valid = indices >= 0
    rows = np.repeat(np.arange(len(indices)), indices.shape[1])[valid.ravel()]
    cols = indices.ravel()[valid.ravel()]
    edges = np.zeros((n_classes, n_classes))
    np.add.at(edges, (labels[rows], labels[cols]), 1.0)
    sizes = np.bincount(labels, minlength=n_classes).astype(np.float64)
    within = np.diag(edges)[:, None]
    observed = edges / np.maximum(within + edges, 1.0)
    expected = sizes[None, :] / np.maximum(sizes[:, None] + sizes[None, :] - 1, 1.0)
    ratio = observed / np.maximum(expected, 1e-12)
    mixing = (ratio + ratio.T) / 2
    np.fill_diagonal(mixing, 0.0)
    return mixing


def _merge_findings(ctx: AuditContext, params: SplitsParams) -> list[Finding]:
    n_classes = len(ctx.class_names)
    if n_classes < 2 or ctx.knn.k == 0:
        return []
    labels = np.asarray(ctx.labels)
    mixing = neighbour_mixing(ctx.knn.indices, labels, n_classes)
    sizes = np.bincount(labels, minlength=n_classes)
    pairs = [
        (float(mixing[a, b]), a, b)
        for a in range(n_classes)
        for b in range(a + 1, n_classes)
        if mixing[a, b] >= params.merge_mixing and min(sizes[a], sizes[b]) >= params.min_cluster_size
    ]
    pairs.sort(reverse=True)
    return [_merge_finding(ctx, a, b, score, params) for score, a, b in pairs[: params.max_merges]]


def _merge_finding(ctx: AuditContext, a: int, b: int, score: float, params: SplitsParams) -> Finding:
    labels = np.asarray(ctx.labels)
    indices = ctx.knn.indices
    names = [ctx.class_names[a], ctx.class_names[b]]
    paths = ctx.paths  # a property that builds a tuple: read it once
    examples = []
    for own, other in ((a, b), (b, a)):
        rows = np.flatnonzero(labels == own)
        crossing = ((labels[np.maximum(indices[rows], 0)] == other) & (indices[rows] >= 0)).sum(axis=1)
        examples += [paths[r] for r in rows[np.argsort(-crossing, kind="stable")][: params.n_examples]]
    return Finding(
        kind="merge",
        severity=Severity.WARN,
        message=(
            f"classes '{names[0]}' and '{names[1]}' are mixed together in the embedding space "
            f"(neighbour mixing {score:.2f}, where 1 means indistinguishable)"
        ),
        advice=_ADVICE_MERGE,
        files=tuple(examples),
        extra={"classes": names, "score": score},
    )
