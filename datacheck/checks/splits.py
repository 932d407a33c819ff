"""``splits``: categories that are really several, and pairs of categories the embeddings cannot tell apart.

**Split.** In the spirit of GEORGE (Sohoni et al. 2020, "No Subclass Left Behind"), each class is clustered on
its own — but on the shared kNN graph rather than on a UMAP projection (GEORGE's choice, ~100× dearer): the
graph restricted to the class is embedded spectrally (regularised normalised adjacency, Qin & Rohe 2013) and
k-means is run on the embedding for k in ``2..max_k``, in order of the eigengap, keeping clusterings
whose clusters each hold at least ``min_cluster_fraction`` of the class and ``min_cluster_size`` images.
Each gets a *separation*: 1 − its crossing ratio (the share of kNN edges that cross between clusters,
relative to the share a random assignment of the same cluster sizes would give). The decision is relative
to the dataset: a class is worth splitting when its best separation is at least halfway from the other
classes' typical separation to that of unions of two other classes (and above every other class); with
fewer than 3 classes, at least ``1 − max_crossing``. The first k in eigengap order at that level is
reported; ``score`` says how merge-like the class is (0 = a typical single class, 1 = a typical union of
two), and findings are ranked by it.
Each cluster is named by the ImageNet labels characteristic of its members (from ``ctx.logits``, see
:mod:`datacheck.probes.naming`), e.g. "sports car / convertible".

**Merge.** On the same graph, for each pair of classes ``a, b``: how often an image's neighbours belong to the
other class, relative to how often they would if the two classes were shuffled together (``mixing`` = 1:
indistinguishable, 0: perfectly separated). Pairs with ``mixing ≥ merge_mixing`` are reported.

Cost: per class, and per reference pair (at most ``reference_pairs``), one sparse eigen-decomposition
(``max_k + 1`` vectors) and ``max_k − 1`` small k-means fits — no N×N matrix; 5 s at 60,000 images.
See docs/checks/splits.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datacheck import derived
from datacheck.checks.base import CheckResult, Finding, ReportView, Severity, register, result, skipped
from datacheck.context import AuditContext
from datacheck.params import Params, param
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
class SplitsParams(Params):
    """Parameters of the ``splits`` check.

    Attributes:
        max_k: Largest number of clusters tried per class (from 2).
        max_crossing: Largest crossing ratio (0 = no kNN edge between clusters, 1 = random) of a clustering
            that counts as separated — only when the dataset has too few classes (under 3) to measure what
            a single class and a merge of two classes look like in it (see :func:`reference_separations`).
        min_cluster_fraction: Every cluster must hold at least this share of the class…
        min_cluster_size: …and at least this many images.
        regularisation: Spectral regularisation τ in units of the mean degree.
        merge_mixing: Neighbour mixing of two classes (1 = indistinguishable) from which a merge is reported.
        max_merges: Most merge findings reported (strongest first).
        n_names: Most ImageNet labels in a cluster's name.
        n_examples: Example files per cluster in ``files`` (``clusters[].files`` always lists every member).
        reference_pairs: Most pairs of classes merged on the fly to measure how separated a merge of two
            real categories is in this dataset.
        seed: Seed of k-means and of the reference pairs.
    """

    max_k: int = param(5, ge=2)
    max_crossing: float = param(0.2, gt=0, lt=1)
    min_cluster_fraction: float = param(0.1, gt=0, le=0.5)
    min_cluster_size: int = param(20, ge=2)
    regularisation: float = param(1.0, gt=0)
    merge_mixing: float = param(0.75, gt=0, le=2)
    max_merges: int = param(20, ge=0)
    n_names: int = param(3, ge=1)
    n_examples: int = param(3, ge=0)
    reference_pairs: int = param(12, ge=1)
    seed: int = 0


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


@dataclass(frozen=True)
class Reference:
    """How separated ordinary classes, and merges of two of them, are in this dataset.

    Attributes:
        single: Best separation of each class (by class index).
        pairs: ``((a, b), separation)`` of the unions of sampled class pairs.
    """

    single: dict[int, float]
    pairs: list[tuple[tuple[int, int], float]]

    def threshold(self, label: int, fallback: float) -> tuple[float, float, float]:
        """``(threshold, typical single, typical merge)`` for ``label``, from the *other* classes only.

        The threshold is halfway between the median separation of single classes and the median of merged
        pairs — a class is worth splitting when its own structure looks more like two categories put together
        than like one — and at least the separation of every other class. Without at least one other class
        and one pair, ``fallback`` (``1 − max_crossing``).
        """
        singles = [v for c, v in self.single.items() if c != label]
        merges = [v for (a, b), v in self.pairs if label not in (a, b)]
        if not singles or not merges:
            return fallback, float("nan"), float("nan")
        single, merge = float(np.median(singles)), float(np.median(merges))
        if merge <= single:  # merges look no different from single classes here: nothing to go on
            return fallback, single, merge
        # and above every other class: a class is only worth splitting when it stands out among them
        return max((single + merge) / 2, max(singles)), single, merge


@register(CHECK_ID, SplitsParams, view=ReportView(card="clusters"))
def splits(ctx: AuditContext, params: SplitsParams) -> CheckResult:
    """Classes whose images form separate clusters, and class pairs the embeddings cannot tell apart."""
    if ctx.n == 0 or not ctx.class_names:
        return skipped(CHECK_ID, "no embedded images")
    namer = ImageNetNamer(ctx.logits) if ctx.logits is not None else None
    labels = np.asarray(ctx.labels)
    store = None
    if ctx.derived_dir is not None:  # room for the groups of a few audits: every class and reference pair
        groups = len(ctx.class_names) + params.reference_pairs
        store = ProfileStore(ctx.derived_dir / "splits", derived.KEPT_AUDITS * groups)
    profiles = {
        label: stored_profile(class_graph(ctx.knn.indices, labels, label), params, store)
        for label in range(len(ctx.class_names))
    }
    reference = reference_separations(ctx.knn.indices, labels, profiles, params, store)
    split_findings = []
    for label, name in enumerate(ctx.class_names):
        members, candidates = profiles[label]
        threshold, single, merge = reference.threshold(label, 1.0 - params.max_crossing)
        chosen = choose_clustering(candidates, threshold)
        if chosen is not None:
            score = _merge_likeness(best_separation(candidates), single, merge)
            split_findings.append(_split_finding(ctx, name, members, chosen, score, namer, params))
    split_findings.sort(key=lambda f: -f.extra["score"])
    merge_findings = _merge_findings(ctx, params)
    metrics = {
        "split_scores": {f.extra["class"]: f.extra["score"] for f in split_findings},
        "separations": {ctx.class_names[c]: v for c, v in reference.single.items()},
        "merged_pair_separation": float(np.median([v for _, v in reference.pairs]))
        if reference.pairs
        else None,
        "splittable_classes": len(split_findings),
        "merge_pairs": len(merge_findings),
    }
    return result(
        CHECK_ID, _summary(split_findings, merge_findings), split_findings + merge_findings, metrics
    )


def _merge_likeness(separation: float, single: float, merge: float) -> float:
    """0 at the typical single class, 1 at the typical merge of two classes (linear in between).

    Without references (fewer than 3 classes) the separation itself, so scores still rank classes.
    """
    if np.isnan(single) or np.isnan(merge) or merge <= single:
        return separation
    return (separation - single) / (merge - single)


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
    return group_graph(indices, np.flatnonzero(labels == label))


def group_graph(indices: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shared kNN graph restricted to ``members`` (row numbers): ``(members, rows, cols)``."""
    position = np.full(len(indices), -1, dtype=np.int64)
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


def separation_profile(
    members: np.ndarray, rows: np.ndarray, cols: np.ndarray, params: SplitsParams
) -> tuple[np.ndarray, list[Clustering]]:
    """Spectral clusterings of one group's kNN graph whose clusters are big enough, in eigengap order.

    k = 2..``max_k`` are tried in order of the gap after the k-th eigenvalue (the classic choice of k in
    spectral clustering), largest gap first.

    Args:
        members: The group's row numbers.
        rows: Edge sources (member positions).
        cols: Edge targets (member positions).
        params: Check parameters.

    Returns:
        ``(members, clusterings)``; no clustering when the group is too small for two clusters.
    """
    n = len(members)
    min_size = max(params.min_cluster_size, int(np.ceil(params.min_cluster_fraction * n)))
    max_k = min(params.max_k, n // max(min_size, 1))
    if max_k < 2 or len(rows) == 0 or n <= max_k + 2:
        return members, []
    values, embedding = _spectral_embedding(n, rows, cols, max_k + 1, params.regularisation)
    gaps = values[1:max_k] - values[2 : max_k + 1]  # gap after the k-th eigenvalue, k = 2..max_k
    candidates = []
    for k in (int(i) + 2 for i in np.argsort(-gaps, kind="stable")):
        space = embedding[:, :k] / np.maximum(np.linalg.norm(embedding[:, :k], axis=1, keepdims=True), 1e-12)
        model = kmeans(space, k, n_init=4, seed=params.seed)
        if np.bincount(model.labels, minlength=k).min() < min_size:
            continue
        ratio = crossing_ratio(model.labels, rows, cols)
        candidates.append(_ordered(1.0 - ratio, model.labels, np.sqrt(model.distances)))
    return members, candidates


@dataclass(frozen=True)
class ProfileStore:
    """Where group profiles are kept (:func:`stored_profile`), and how many of them at most."""

    directory: Path
    keep: int


def stored_profile(
    graph: tuple[np.ndarray, np.ndarray, np.ndarray], params: SplitsParams, store: ProfileStore | None
) -> tuple[np.ndarray, list[Clustering]]:
    """:func:`separation_profile` of ``graph = (members, rows, cols)``, kept in ``store`` by content.

    The clusterings depend only on the group's size, its edges (in member positions) and the parameters,
    so a class whose kNN edges a data change left alone (a few images added to another class, another
    class relabelled) is not clustered again; the stored floats are the computed ones, so the result is the
    same as computing afresh. ``store`` ``None``: always compute.
    """
    from datacheck.results_store import code_digest

    members, rows, cols = graph
    if store is None:
        return separation_profile(members, rows, cols, params)
    label = f"splits-profile|{params!r}|{code_digest()}"
    key = derived.content_key(label, np.array([len(members)], np.int64), rows, cols)
    stored = derived.load(store.directory, key)
    if stored is not None:
        try:
            return members, _unpack_profile(stored, len(members))
        except (KeyError, ValueError) as err:  # damaged or foreign: computed again and stored over
            logger.debug("splits: ignoring a stored profile (%s)", err)
    members, candidates = separation_profile(members, rows, cols, params)
    derived.store(store.directory, key, _pack_profile(candidates), keep=store.keep)
    return members, candidates


def _pack_profile(candidates: list[Clustering]) -> dict[str, np.ndarray]:
    arrays = {"k": np.array([c.k for c in candidates], np.int64)}
    arrays["separation"] = np.array([c.separation for c in candidates], np.float64)
    for i, c in enumerate(candidates):
        arrays[f"assignment{i}"], arrays[f"distance{i}"] = c.assignment, c.distance
    return arrays


def _unpack_profile(stored: dict[str, np.ndarray], n: int) -> list[Clustering]:
    """The clusterings of :func:`_pack_profile`; ``ValueError`` unless each assigns ``n`` members."""
    out = [
        Clustering(int(k), float(sep), stored[f"assignment{i}"], stored[f"distance{i}"])
        for i, (k, sep) in enumerate(zip(stored["k"], stored["separation"], strict=True))
    ]
    if any(c.assignment.shape != (n,) or c.distance.shape != (n,) for c in out):
        raise ValueError("a stored clustering does not fit the group")
    return out


def best_separation(candidates: list[Clustering]) -> float:
    """The highest separation among the candidate clusterings (0 without any)."""
    return max((c.separation for c in candidates), default=0.0)


def choose_clustering(candidates: list[Clustering], threshold: float) -> Clustering | None:
    """The first clustering, in eigengap order, separated at least as well as ``threshold`` (or ``None``).

    Trying k in eigengap order rather than taking the largest separated k keeps a clustering that also
    halves one coherent group from being chosen; the separation of every k is still measured, so the
    decision (is the class worth splitting?) uses the best of them.
    """
    return next((c for c in candidates if c.separation >= threshold), None)


def reference_separations(
    indices: np.ndarray,
    labels: np.ndarray,
    profiles: dict[int, tuple[np.ndarray, list[Clustering]]],
    params: SplitsParams,
    store: ProfileStore | None = None,
) -> Reference:
    """Best separation of every class, and of the unions of up to ``reference_pairs`` random class pairs.

    ``store``: where group profiles are kept (:func:`stored_profile`); ``None``: always compute.
    """
    single = {label: best_separation(candidates) for label, (_, candidates) in profiles.items() if candidates}
    classes = sorted(single)
    pairs = [(a, b) for i, a in enumerate(classes) for b in classes[i + 1 :]]
    rng = np.random.default_rng(params.seed)
    if len(pairs) > params.reference_pairs:
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), params.reference_pairs, replace=False))]
    merged = []
    for a, b in pairs:
        members = np.flatnonzero((labels == a) | (labels == b))
        _, candidates = stored_profile(group_graph(indices, members), params, store)
        if candidates:
            merged.append(((a, b), best_separation(candidates)))
    return Reference(single, merged)


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
    score: float,
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
        extra={
            "class": class_name,
            "score": score,
            "separation": clustering.separation,
            "clusters": clusters,
        },
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
