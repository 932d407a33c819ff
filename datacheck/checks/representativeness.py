"""``representativeness``: do the training images look like the images the application will see?

Compares the training images with a *reference* set: the ``--reference`` folder (``ctx.reference``, images
like those of the deployment) or, without one, the test (or validation) split of the dataset. Skipped, with
a summary that says so, when neither exists.

* **Domain classifier.** Can a classifier tell reference images from training images? A shrunk LDA on a
  64-component PCA of the embeddings, cross-validated (``n_folds``), gives the AUC: 0.5 = the two sets look
  alike, 1 = every reference image is recognisably different. Reported from ``warn_auc`` (``fail`` from
  ``fail_auc``).
* **Coverage.** Among the ``coverage_k`` nearest neighbours of a reference image in training ∪ reference,
  how many are reference images? Where the training set covers the reference, neighbourhoods are mixed in
  proportion to the two set sizes; a reference image is *uncovered* when its count is improbable under that
  mixing (binomial tail < ``coverage_alpha``) — its neighbourhood holds reference images only: a kind of
  image the training set lacks. (The raw similarity to the nearest training image is reported too, but it
  is a poor criterion alone: a frog is about as similar to the nearest cat as a cat to the nearest cat.)
  When the uncovered share reaches
  ``min_uncovered_share``, the uncovered images are grouped (k-means) and every group of at least
  ``min_group_size`` is reported with a name: its characteristic ImageNet labels when the reference has
  logits, and the nearest training class.

Cost: at most ``max_rows`` images per side enter the classifier; the coverage search compares those reference
images with every training image, in a 128-component PCA space with an exact re-scoring of ``candidates``
neighbours (as the shared kNN graph does): about 1 s for 10k × 60k images.
See docs/checks/representativeness.md.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

from datacheck.blocks import RowsOf
from datacheck.checks.base import CheckResult, Finding, Severity, register, result, skipped
from datacheck.context import AuditContext
from datacheck.dataset import TEST, TRAIN, VAL, splits_with_role
from datacheck.index import l2_normalise
from datacheck.params import Params, param
from datacheck.probes import cv
from datacheck.probes.cluster import kmeans
from datacheck.probes.naming import ImageNetNamer
from datacheck.reduce import fit_basis

logger = logging.getLogger(__name__)

CHECK_ID = "representativeness"

#: Split names read as the training split, and (in order of preference) as the reference split.
TRAIN_SPLITS = splits_with_role(TRAIN)
REFERENCE_SPLITS = splits_with_role(TEST) + splits_with_role(VAL)

_ADVICE_GAP = (
    "Collect training images under the conditions of the reference images (same cameras, places, "
    "lighting and kinds of objects)."
)
_ADVICE_UNCOVERED = "Add training images like these examples, labelled, before relying on the model for them."


@dataclass(frozen=True)
class RepresentativenessParams(Params):
    """Parameters of the ``representativeness`` check.

    Attributes:
        warn_auc: Domain-classifier AUC from which the sets are reported as different…
        fail_auc: …with severity ``fail`` from this AUC.
        coverage_k: Neighbours looked at, among training and reference images together, per reference image.
        coverage_alpha: A reference image is uncovered when so many of its neighbours are reference images
            that a well-mixed neighbourhood would produce that count with probability below this.
        min_uncovered_share: Uncovered share of the reference from which uncovered groups are reported.
        min_group_size: Smallest group of uncovered images reported.
        max_groups: Most uncovered groups formed.
        n_folds: Cross-validation folds of the domain classifier.
        pca_dim: PCA components of the domain classifier.
        max_rows: Most images per side used (sampled).
        candidates: Neighbours retrieved in PCA space before exact re-scoring in the coverage search
            (at least ``coverage_k``).
        n_examples: Example files per finding.
        seed: Seed of sampling, folds and k-means.
    """

    warn_auc: float = param(0.75, ge=0.5, le=1)
    fail_auc: float = param(0.9, ge=0.5, le=1)
    coverage_k: int = param(10, ge=2)
    coverage_alpha: float = param(0.001, gt=0, lt=0.5)
    min_uncovered_share: float = param(0.02, gt=0, le=1)
    min_group_size: int = param(5, ge=1)
    max_groups: int = param(5, ge=1)
    n_folds: int = param(5, ge=2)
    pca_dim: int = param(64, ge=2)
    max_rows: int = param(5000, ge=10)
    candidates: int = 20
    n_examples: int = param(8, ge=0)
    seed: int = 0

    def relations(self) -> list[str]:
        """``warn_auc`` is at most ``fail_auc``; at least ``coverage_k`` candidates are retrieved."""
        return [
            f"warn_auc must be at most fail_auc ({self.fail_auc:g}), got {self.warn_auc!r}"
            if self.warn_auc > self.fail_auc
            else "",
            f"candidates must be at least coverage_k ({self.coverage_k}), got {self.candidates!r}"
            if self.candidates < self.coverage_k
            else "",
        ]


@dataclass(frozen=True)
class Comparison:
    """What is compared: training rows of the context and the reference images.

    Attributes:
        mode: ``"reference"`` (the ``--reference`` folder) or ``"split:<name>"`` (a split of the dataset).
        train_rows: Context rows of the training images.
        vectors: ``float32[M, D]`` reference embeddings (L2-normalised): an array, or the split's rows of the
            context's (:class:`RowsOf`).
        paths: Reference paths (relative to ``root``).
        root: Folder the reference paths are relative to (``""`` for dataset paths).
        logits: Reference ImageNet logits, when known (an array or :class:`RowsOf`).
    """

    mode: str
    train_rows: np.ndarray
    vectors: np.ndarray | RowsOf
    paths: tuple[str, ...]
    root: str
    logits: np.ndarray | RowsOf | None


@register(CHECK_ID, RepresentativenessParams)
def representativeness(ctx: AuditContext, params: RepresentativenessParams) -> CheckResult:
    """How well the training images cover a reference set (``--reference`` folder, else the test split)."""
    comparison = choose_comparison(ctx)
    if comparison is None:
        return skipped(
            CHECK_ID,
            "nothing to compare with: pass --reference with images like those the application will see, "
            "or use a dataset with train and test splits",
        )
    if len(comparison.train_rows) < 10 or len(comparison.vectors) < 10:
        return skipped(CHECK_ID, "needs at least 10 training and 10 reference images")
    rng = np.random.default_rng(params.seed)
    train_rows = _sample(comparison.train_rows, params.max_rows, rng)
    ref_rows = _sample(np.arange(len(comparison.vectors)), params.max_rows, rng)
    train = ctx.vectors[train_rows]
    reference = comparison.vectors[ref_rows]
    # The audit's shared basis is the dataset's alone: a basis of both sets is needed to see the directions
    # in which only the reference varies (fitted the same way, on its own rows).
    both = np.concatenate([train, reference])
    projection = fit_basis(both, min(max(params.pca_dim, 128), len(both) - 1), PCA_FIT_ROWS).axes
    auc, ref_scores = domain_auc(
        train @ projection[:, : params.pca_dim], reference @ projection[:, : params.pca_dim], params
    )
    coverage = neighbourhood_coverage(
        ctx.vectors, reference, projection, params, train_rows=comparison.train_rows
    )
    uncovered = np.flatnonzero(coverage.uncovered)
    similarity, nearest = coverage.similarity, coverage.nearest
    findings = []
    if auc >= params.warn_auc:
        findings.append(_gap_finding(comparison, ref_rows, ref_scores, auc, params))
    share = len(uncovered) / len(ref_rows)
    if share >= params.min_uncovered_share:
        findings += _uncovered_findings(
            ctx, comparison, ref_rows, uncovered, similarity, comparison.train_rows[nearest], params
        )
    metrics = {
        "mode": comparison.mode,
        "train_images": len(train_rows),
        "reference_images": len(ref_rows),
        "domain_auc": auc,
        "uncovered_share": share,
        "median_similarity": float(np.median(similarity)),
    }
    return result(CHECK_ID, _summary(comparison, auc, share, findings), findings, metrics)


def choose_comparison(ctx: AuditContext) -> Comparison | None:
    """The ``--reference`` set when given, else the dataset's test (or validation) split, else ``None``."""
    splits = np.array([s if s is not None else "" for s in ctx.splits], dtype=object)
    is_train = np.isin(splits, TRAIN_SPLITS)
    if ctx.reference is not None and len(ctx.reference.paths):
        train_rows = np.flatnonzero(is_train) if is_train.any() else np.arange(ctx.n)
        return Comparison(
            "reference",
            train_rows,
            np.asarray(ctx.reference.vectors),
            tuple(ctx.reference.paths),
            ctx.reference.root,
            getattr(ctx.reference, "logits", None),
        )
    if not is_train.any():
        return None
    for name in REFERENCE_SPLITS:
        rows = np.flatnonzero(splits == name)
        if len(rows):
            return Comparison(
                f"split:{name}",
                np.flatnonzero(is_train),
                RowsOf(ctx.vectors, rows),
                tuple(np.asarray(ctx.paths, dtype=object)[rows]),
                "",
                None if ctx.logits is None else RowsOf(ctx.logits, rows),
            )
    return None


def _sample(rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return rows if len(rows) <= limit else np.sort(rng.choice(rows, size=limit, replace=False))


#: Rows the PCA projection is fitted on (a sample; the axes of 4,000 embeddings are stable).
PCA_FIT_ROWS = 4000


def domain_auc(
    train: np.ndarray, reference: np.ndarray, params: RepresentativenessParams
) -> tuple[float, np.ndarray]:
    """Cross-validated AUC of a classifier telling reference from training points.

    Returns:
        The AUC, and each reference point's out-of-fold "reference" score (high = unlike the training set).
    """
    features = np.concatenate([train, reference]).astype(np.float64)
    labels = np.concatenate([np.zeros(len(train), np.int64), np.ones(len(reference), np.int64)])
    folds = cv.stratified_folds(labels, params.n_folds, params.seed)
    scores = cv.cross_val_scores(features, labels, 2, cv.shrunk_lda, folds)
    auc = float(cv.ovr_auc(scores, labels, 2).auc[1])
    return auc, scores[len(train) :, 1]


@dataclass(frozen=True)
class Coverage:
    """How well the training images cover each reference image.

    Attributes:
        uncovered: ``bool[M]`` reference images whose neighbourhood holds (almost) only reference images.
        reference_share: ``float[M]`` share of reference images among each one's neighbours.
        similarity: ``float[M]`` cosine similarity to the most similar training image.
        nearest: ``int[M]`` index (into the training points) of that image.
    """

    uncovered: np.ndarray
    reference_share: np.ndarray
    similarity: np.ndarray
    nearest: np.ndarray


def _search(index_points: np.ndarray, queries: np.ndarray, count: int) -> np.ndarray:
    """Row numbers of the ``count`` best inner products of each query (faiss flat index)."""
    import faiss

    index = faiss.IndexFlatIP(index_points.shape[1])
    index.add(np.ascontiguousarray(index_points, dtype=np.float32))
    _, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(count, len(index_points)))
    return found


def neighbourhood_coverage(
    train: np.ndarray,
    reference: np.ndarray,
    projection: np.ndarray,
    params: RepresentativenessParams,
    *,
    train_rows: np.ndarray | None = None,
) -> Coverage:
    """Neighbourhood composition of every reference point in training ∪ reference (see the module docstring).

    Candidates are retrieved in the PCA space, then re-scored with the exact cosine, a block of reference
    points at a time. The training points are ``train[train_rows]`` (all of ``train`` when ``None``), read in
    place: at a million images a copy of them, or of training ∪ reference, would be gigabytes.
    """
    from scipy.stats import binom

    rows = np.arange(len(train)) if train_rows is None else np.asarray(train_rows)
    n, m = len(rows), len(reference)
    # training ∪ reference on the axes, unit length, built in place: one array, no concatenated copy
    union_points = np.empty((n + m, projection.shape[1]), np.float32)
    _project(train, rows, projection, out=union_points[:n])
    union_points[n:] = l2_normalise(reference @ projection)
    found = _search(union_points, union_points[n:], params.candidates + 1)
    found = np.where(found < 0, n + np.arange(m)[:, None], found)  # padding counts as the point itself
    exact = _rescored(train, rows, reference, found)
    exact[found == n + np.arange(m)[:, None]] = -np.inf  # never your own neighbour
    order = np.argsort(-exact, axis=1)[:, : params.coverage_k]
    top = np.take_along_axis(found, order, axis=1)
    k = top.shape[1]
    count = (top >= n).sum(axis=1)
    expected = (m - 1) / max(n + m - 1, 1)
    tail = binom.sf(count - 1, k, expected)  # P(X >= count)
    similarity, nearest = _nearest_training(
        train, rows, union_points[:n], reference, projection, found, exact, params.candidates
    )
    return Coverage(tail < params.coverage_alpha, count / max(k, 1), similarity, nearest)


#: Rows projected, or reference points re-scored, per block: bounded temporaries at any dataset size.
_PROJECT_BLOCK = 65_536
_RESCORE_BLOCK = 1_024


def _project(vectors: np.ndarray, rows: np.ndarray, projection: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = l2_normalise(vectors[rows] @ projection)`` without gathering all the rows at once."""
    for start in range(0, len(rows), _PROJECT_BLOCK):
        block = rows[start : start + _PROJECT_BLOCK]
        out[start : start + len(block)] = l2_normalise(vectors[block] @ projection)


def _gather(train: np.ndarray, rows: np.ndarray, reference: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Union points ``ids`` (below ``len(rows)``: a training point, else reference), ``[*ids.shape, D]``."""
    flat = ids.ravel()
    is_train = flat < len(rows)
    out = np.empty((len(flat), train.shape[1]), np.result_type(train.dtype, reference.dtype))
    out[is_train] = train[rows[flat[is_train]]]
    out[~is_train] = reference[flat[~is_train] - len(rows)]
    return out.reshape(*ids.shape, -1)


def _rescored(train: np.ndarray, rows: np.ndarray, reference: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Exact inner product of each reference point with each of its candidates ``found`` (union ids)."""
    exact = np.empty(found.shape, np.result_type(train.dtype, reference.dtype))
    for start in range(0, len(found), _RESCORE_BLOCK):
        stop = start + _RESCORE_BLOCK
        candidates = _gather(train, rows, reference, found[start:stop])
        exact[start:stop] = np.einsum("md,mkd->mk", reference[start:stop], candidates, optimize=True)
    return exact


def _nearest_training(
    train: np.ndarray,
    rows: np.ndarray,
    train_points: np.ndarray,
    reference: np.ndarray,
    projection: np.ndarray,
    found: np.ndarray,
    exact: np.ndarray,
    candidates: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Most similar training point of each reference point (an index into ``rows``).

    Taken from the union candidates where one is among them, else from a search of the training points alone
    (``train_points``: their projections, unit length).
    """
    n = len(rows)
    masked = np.where(found < n, exact, -np.inf)
    best = masked.argmax(axis=1)
    similarity = masked[np.arange(len(found)), best]
    nearest = found[np.arange(len(found)), best]
    missing = np.flatnonzero(~np.isfinite(similarity))
    if len(missing):
        extra = _search(train_points, l2_normalise(reference[missing] @ projection), candidates)
        extra = np.maximum(extra, 0)
        scores = _rescored(train, rows, reference[missing], extra)
        pick = scores.argmax(axis=1)
        similarity[missing] = scores[np.arange(len(missing)), pick]
        nearest[missing] = extra[np.arange(len(missing)), pick]
    return similarity, nearest


def _gap_finding(
    comparison: Comparison,
    ref_rows: np.ndarray,
    ref_scores: np.ndarray,
    auc: float,
    params: RepresentativenessParams,
) -> Finding:
    order = np.argsort(-ref_scores, kind="stable")[: params.n_examples]
    what = "the reference images" if comparison.mode == "reference" else f"the {comparison.mode[6:]} split"
    return Finding(
        kind="domain_gap",
        severity=Severity.FAIL if auc >= params.fail_auc else Severity.WARN,
        message=(
            f"a classifier tells {what} apart from the training images with AUC {auc:.2f} "
            "(0.5 = indistinguishable): they are not drawn from the same kind of images"
        ),
        advice=_ADVICE_GAP,
        files=tuple(comparison.paths[ref_rows[i]] for i in order),
        extra={"auc": auc, "mode": comparison.mode, "root": comparison.root},
    )


def _uncovered_findings(
    ctx: AuditContext,
    comparison: Comparison,
    ref_rows: np.ndarray,
    uncovered: np.ndarray,
    similarity: np.ndarray,
    nearest_rows: np.ndarray,
    params: RepresentativenessParams,
) -> list[Finding]:
    vectors = comparison.vectors[ref_rows[uncovered]]
    k = max(1, min(params.max_groups, len(uncovered) // (4 * params.min_group_size)))
    grouping = kmeans(vectors, k, seed=params.seed)
    namer = ImageNetNamer(comparison.logits) if comparison.logits is not None else None
    findings = []
    for group in range(k):
        members = np.flatnonzero(grouping.labels == group)
        if len(members) < params.min_group_size:
            continue
        members = members[np.argsort(grouping.distances[members, group], kind="stable")]
        findings.append(
            _uncovered_finding(
                ctx, comparison, ref_rows, uncovered[members], similarity, nearest_rows, namer, params
            )
        )
    findings.sort(key=lambda f: -f.extra["size"])
    return findings


def _uncovered_finding(
    ctx: AuditContext,
    comparison: Comparison,
    ref_rows: np.ndarray,
    members: np.ndarray,
    similarity: np.ndarray,
    nearest_rows: np.ndarray,
    namer: ImageNetNamer | None,
    params: RepresentativenessParams,
) -> Finding:
    classes = Counter(ctx.class_names[ctx.labels[r]] for r in nearest_rows[members])
    nearest_class, _ = classes.most_common(1)[0]
    name = namer.name(ref_rows[members]) if namer is not None else f"images closest to '{nearest_class}'"
    median = float(np.median(similarity[members]))
    share = len(members) / len(ref_rows)
    return Finding(
        kind="uncovered",
        severity=Severity.WARN,
        message=(
            f"{len(members)} reference images ({share:.0%}) of a kind the training set lacks: {name} "
            f"(nearest training image similarity {median:.2f}; closest training class '{nearest_class}')"
        ),
        advice=_ADVICE_UNCOVERED,
        files=tuple(comparison.paths[ref_rows[m]] for m in members[: params.n_examples]),
        extra={
            "name": name,
            "size": len(members),
            "share": share,
            "similarity": median,
            "nearest_class": nearest_class,
            "mode": comparison.mode,
            "root": comparison.root,
            "all_files": [comparison.paths[ref_rows[m]] for m in members],
        },
    )


def _summary(comparison: Comparison, auc: float, share: float, findings: list[Finding]) -> str:
    against = "the reference images" if comparison.mode == "reference" else f"the {comparison.mode[6:]} split"
    groups = [f.extra["name"] for f in findings if f.kind == "uncovered"]
    text = f"training images vs {against}: domain AUC {auc:.2f}, {share:.0%} of {against} uncovered"
    if groups:
        text += "; missing from training: " + "; ".join(groups)
    return text
