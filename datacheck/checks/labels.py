"""``labels``: images whose label is probably wrong, with the label they look like.

How (see docs/checks/labels.md for the reasoning and the benchmark):

1. The L2-normalised bottlenecks are reduced with PCA (fitted on a sample) and standardised.
2. A multinomial logistic regression gives **out-of-fold** class probabilities: stratified k-fold, each fold's
   model warm-started from the previous one (the problem is strictly convex, so the starting point changes the
   time to converge, not the solution).
3. The neighbour vote of the shared kNN graph (similarity-weighted labels of each image's nearest
   neighbours, excluding itself) is mixed in: ``p = (1 - knn_weight) · p_model + knn_weight · p_knn``.
4. Confident learning (``cleanlab.filter.find_label_issues``) decides which labels are issues, together with
   a confident-disagreement rule (another class ahead by ``min_margin``) for the cases its error-count
   estimate misses; ``cleanlab.rank.get_label_quality_scores`` ranks them; ``score = 1 - label quality``.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from datacheck.checks.base import CheckResult, Finding, Severity, Status, register, result
from datacheck.context import AuditContext

logger = logging.getLogger(__name__)

CHECK_ID = "labels"

_FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")
_RANKINGS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")

#: Rows used to fit the PCA (the projection is then applied to every row).
_PCA_SAMPLE = 20_000

#: Fewest principal components kept for a small dataset (see :func:`feature_count`).
_MIN_COMPONENTS = 32


@dataclass(frozen=True)
class LabelsParams:
    """Parameters of the ``labels`` check.

    Attributes:
        folds: Cross-validation folds for the out-of-fold probabilities.
        pca_dims: Most principal components the classifier sees (0 = the full bottleneck); fewer on small
            datasets, see :func:`feature_count`.
        regularisation: Inverse L2 strength ``C`` of the logistic regression.
        max_iter: Most L-BFGS iterations per fold.
        knn_weight: Weight of the kNN neighbour vote in the combined probabilities (0 = classifier only).
        min_margin: A label is also an issue, whatever confident learning estimates, when another class's
            combined probability exceeds the given label's by at least this (1 = confident learning only).
        filter_by: cleanlab ``find_label_issues`` method that decides which labels are issues.
        ranking: cleanlab label-quality score used to rank them.
        min_class_images: Classes with fewer images are left out (neither checked nor suggested); at least
            ``folds``.
        max_findings: Most findings listed (highest score first); the metrics count all.
        seed: Seed of the fold assignment and the PCA.
    """

    folds: int = 5
    pca_dims: int = 256
    regularisation: float = 1.0
    max_iter: int = 300
    knn_weight: float = 0.3
    min_margin: float = 0.6
    filter_by: str = "prune_by_noise_rate"
    ranking: str = "self_confidence"
    min_class_images: int = 10
    max_findings: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        problems = [
            f"folds must be >= 2, got {self.folds}" if self.folds < 2 else "",
            f"pca_dims must be >= 0, got {self.pca_dims}" if self.pca_dims < 0 else "",
            f"regularisation must be > 0, got {self.regularisation}" if self.regularisation <= 0 else "",
            f"max_iter must be >= 1, got {self.max_iter}" if self.max_iter < 1 else "",
            f"knn_weight must be within 0..1, got {self.knn_weight}" if not 0 <= self.knn_weight <= 1 else "",
            f"min_margin must be within 0..1, got {self.min_margin}" if not 0 < self.min_margin <= 1 else "",
            f"filter_by must be one of {', '.join(_FILTERS)}" if self.filter_by not in _FILTERS else "",
            f"ranking must be one of {', '.join(_RANKINGS)}" if self.ranking not in _RANKINGS else "",
            f"min_class_images must be >= folds ({self.folds}), got {self.min_class_images}"
            if self.min_class_images < self.folds
            else "",
            f"max_findings must be >= 0, got {self.max_findings}" if self.max_findings < 0 else "",
        ]
        problems = [p for p in problems if p]
        if problems:
            raise ValueError("; ".join(problems))


# --------------------------------------------------------------------------------------------- features


def feature_count(n_rows: int, n_classes: int, dims: int, n_dims: int) -> int:
    """Principal components to keep: ``dims``, but about ten images per class per component at most.

    Whitened noise directions cost accuracy when there are few images per parameter: on 10,000 CIFAR-10
    images 256 components scored 67 % out of fold and 128 components 69 %, while on 60,000 images 256 beat
    128 (75.5 % vs 74.1 %). At least 32 components are kept (never more than one per 4 rows).

    Args:
        n_rows: Images the classifier learns from.
        n_classes: Classes.
        dims: The ``pca_dims`` parameter (0 = every dimension).
        n_dims: Dimensions of the vectors.

    Returns:
        The number of components, at most ``n_dims``.
    """
    if dims == 0:
        return n_dims
    by_size = max(_MIN_COMPONENTS, n_rows // (10 * max(n_classes, 1)))
    return max(1, min(dims, n_dims, by_size, n_rows // 4))


def reduce_features(vectors: np.ndarray, dims: int, seed: int = 0) -> np.ndarray:
    """Principal components, each scaled to unit variance (whitened).

    The basis comes from the eigenvectors of the covariance of at most 20,000 sampled rows (one Gram
    matrix and a partial symmetric eigensolve: a few times cheaper than randomized SVD at this size).
    Whitening makes the L-BFGS fits converge in 2-4x fewer iterations, at the same accuracy.

    Args:
        vectors: ``float32[N, D]`` rows.
        dims: Components kept (at most ``D``); ``D`` or more keeps every dimension, centred and scaled.
        seed: Random state of the sample.

    Returns:
        ``float32[N, min(dims, D)]`` features with zero mean and unit variance.
    """
    x = np.asarray(vectors, dtype=np.float32)
    keep = min(dims, x.shape[1])
    mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    if keep < x.shape[1]:
        import scipy.linalg

        rng = np.random.default_rng(seed)
        sample = x if len(x) <= _PCA_SAMPLE else x[rng.choice(len(x), _PCA_SAMPLE, replace=False)]
        centred = sample - mean
        gram = (centred.T @ centred).astype(np.float64)
        _, basis = scipy.linalg.eigh(gram, subset_by_index=[x.shape[1] - keep, x.shape[1] - 1])
        x = (x - mean) @ basis[:, ::-1].astype(np.float32)
    else:
        x = x - mean
    return x / np.maximum(x.std(axis=0), 1e-6)


def out_of_fold_probabilities(
    features: np.ndarray, labels: np.ndarray, n_classes: int, params: LabelsParams
) -> np.ndarray:
    """Class probabilities of every row from a logistic regression that never saw that row.

    Args:
        features: ``float32[N, F]``.
        labels: ``int[N]`` in ``0..n_classes-1``; every class needs at least ``params.folds`` rows.
        n_classes: Number of classes.
        params: Folds, regularisation, iterations and seed.

    Returns:
        ``float64[N, n_classes]`` rows summing to 1.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    probs = np.zeros((len(labels), n_classes))
    folds = StratifiedKFold(n_splits=params.folds, shuffle=True, random_state=params.seed)
    model = LogisticRegression(C=params.regularisation, max_iter=params.max_iter, warm_start=True, tol=1e-4)
    for train, held_out in folds.split(features, labels):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(features[train], labels[train])
        probs[np.ix_(held_out, model.classes_)] = model.predict_proba(features[held_out])
    return probs


def neighbour_vote(
    indices: np.ndarray, similarities: np.ndarray, labels: np.ndarray, n_classes: int, prior: np.ndarray
) -> np.ndarray:
    """Similarity-weighted label distribution of each row's neighbours, smoothed towards ``prior``.

    Args:
        indices: ``int[N, k]`` neighbour rows (``-1`` = none), restricted to the rows being scored.
        similarities: ``float[N, k]`` cosine similarities.
        labels: ``int[N]`` labels of the rows.
        n_classes: Number of classes.
        prior: ``float[n_classes]`` class frequencies (weight one neighbour's worth).

    Returns:
        ``float64[N, n_classes]`` rows summing to 1.
    """
    valid = indices >= 0
    weights = np.where(valid, np.clip(similarities, 0.0, None), 0.0).astype(np.float64)
    n = len(labels)
    cells = np.arange(n)[:, None] * n_classes + labels[np.where(valid, indices, 0)]
    votes = np.bincount(cells.ravel(), weights.ravel(), minlength=n * n_classes).reshape(n, n_classes)
    votes += prior[None, :]
    return votes / votes.sum(axis=1, keepdims=True)


def _restricted_graph(ctx: AuditContext, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shared kNN graph over ``rows`` only, neighbours renumbered to positions in ``rows``."""
    position = np.full(ctx.n, -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    indices = ctx.knn.indices[rows]
    mapped = np.where(indices >= 0, position[np.maximum(indices, 0)], -1)
    return mapped, ctx.knn.similarities[rows]


# ------------------------------------------------------------------------------------------------ check


@dataclass(frozen=True)
class LabelScores:
    """Per-row outputs of the label model, for the rows it scored.

    Attributes:
        rows: Context row numbers scored.
        classes: Context class index of each model class.
        labels: Given label of each scored row (model class index).
        probs: Combined probabilities ``[len(rows), len(classes)]``.
        model_probs: Out-of-fold classifier probabilities alone.
        is_issue: cleanlab's verdict per row.
        score: ``1 - label quality`` per row (higher = more likely wrong).
        components: Features the classifier saw.
    """

    rows: np.ndarray
    classes: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    model_probs: np.ndarray
    is_issue: np.ndarray
    score: np.ndarray
    components: int

    @property
    def suggested(self) -> np.ndarray:
        """Most probable class other than the given one (model class index)."""
        masked = self.probs.copy()
        masked[np.arange(len(self.labels)), self.labels] = -1.0
        return masked.argmax(axis=1)


def _confident_disagreement(labels: np.ndarray, probs: np.ndarray, min_margin: float) -> np.ndarray:
    """Rows where another class beats the given label by at least ``min_margin`` of probability.

    Confident learning estimates how many labels of each class are wrong by counting rows above per-class
    thresholds (the class's mean self-confidence). On small or very clean datasets those thresholds are near 1
    and the estimate falls short: on the ``shapes`` sample it kept 2 of 6 planted errors whose suggested class
    had probability 0.82-0.95 against 0.02-0.13. On CIFAR-10 (60k, 5 % flips) every such row was already
    flagged; on clean CIFAR-10 the rule adds 6 rows to cleanlab's 6,210.
    """
    if min_margin >= 1:
        return np.zeros(len(labels), dtype=bool)
    rows = np.arange(len(labels))
    given = probs[rows, labels]
    others = probs.copy()
    others[rows, labels] = -1.0
    return others.max(axis=1) - given >= min_margin


def score_labels(ctx: AuditContext, params: LabelsParams) -> LabelScores | str:
    """Run the label model; returns a reason string instead when there is too little to learn from."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    counts = np.bincount(ctx.labels, minlength=len(ctx.class_names))
    classes = np.flatnonzero(counts >= params.min_class_images)
    if len(classes) < 2:
        return (
            f"needs at least 2 classes with {params.min_class_images} or more images each "
            f"({len(classes)} of {len(ctx.class_names)} have that many)"
        )
    rows = np.flatnonzero(np.isin(ctx.labels, classes))
    remap = np.full(len(ctx.class_names), -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    labels = remap[ctx.labels[rows]]
    start = time.perf_counter()
    # Single-threaded: the fits are many small operations where thread synchronisation costs more than it
    # saves, and on a busy (CI) machine OpenMP/BLAS threads contending for cores made them 5-20x slower.
    with threadpool_limits(limits=1):
        dims = feature_count(len(rows), len(classes), params.pca_dims, ctx.vectors.shape[1])
        features = reduce_features(ctx.vectors[rows], dims, params.seed)
        model_probs = out_of_fold_probabilities(features, labels, len(classes), params)
    logger.debug("labels: out-of-fold probabilities in %.2f s", time.perf_counter() - start)
    probs = model_probs
    if params.knn_weight > 0 and ctx.knn.k > 0:
        prior = np.bincount(labels, minlength=len(classes)) / len(labels)
        knn = neighbour_vote(*_restricted_graph(ctx, rows), labels, len(classes), prior)
        probs = (1.0 - params.knn_weight) * model_probs + params.knn_weight * knn
    is_issue = find_label_issues(labels, probs, filter_by=params.filter_by, n_jobs=1)
    quality = get_label_quality_scores(labels, probs, method=params.ranking)
    issues = np.asarray(is_issue, dtype=bool) | _confident_disagreement(labels, probs, params.min_margin)
    return LabelScores(rows, classes, labels, probs, model_probs, issues, 1.0 - quality, features.shape[1])


def _finding(
    ctx: AuditContext, paths: tuple[str, ...], scores: LabelScores, i: int, suggested: np.ndarray
) -> Finding:
    path = paths[scores.rows[i]]
    given = ctx.class_names[scores.classes[scores.labels[i]]]
    other = ctx.class_names[scores.classes[suggested[i]]]
    p_given = float(scores.probs[i, scores.labels[i]])
    p_other = float(scores.probs[i, suggested[i]])
    return Finding(
        kind="label_issue",
        severity=Severity.WARN,
        message=(
            f"'{path}' is labelled '{given}' but looks like '{other}' "
            f"(probability {p_other:.2f} vs {p_given:.2f})."
        ),
        advice=f"Review the label: it looks like '{other}'; relabel it, or remove it if it fits no class.",
        files=(path,),
        extra={
            "given": given,
            "suggested": other,
            "score": float(scores.score[i]),
            "given_probability": p_given,
            "suggested_probability": p_other,
        },
    )


def _metrics(ctx: AuditContext, scores: LabelScores, suggested: np.ndarray, params: LabelsParams) -> dict:
    flagged = np.flatnonzero(scores.is_issue)
    names = [ctx.class_names[c] for c in scores.classes]
    confusions = Counter((names[scores.labels[i]], names[suggested[i]]) for i in flagged)
    return {
        "issues": len(flagged),
        "issue_fraction": len(flagged) / len(scores.rows),
        "images_checked": len(scores.rows),
        "model_accuracy": float((scores.model_probs.argmax(axis=1) == scores.labels).mean()),
        "combined_accuracy": float((scores.probs.argmax(axis=1) == scores.labels).mean()),
        "issues_per_class": {name: int((scores.labels[flagged] == c).sum()) for c, name in enumerate(names)},
        "top_confusions": [
            {"given": g, "suggested": s, "count": n} for (g, s), n in confusions.most_common(10)
        ],
        "classes_left_out": [
            c for i, c in enumerate(ctx.class_names) if i not in set(scores.classes.tolist())
        ],
        "folds": params.folds,
        "components": scores.components,
    }


@register(CHECK_ID, LabelsParams)
def check_labels(ctx: AuditContext, params: LabelsParams) -> CheckResult:
    """Likely label errors: out-of-fold classifier + kNN vote on the bottlenecks, judged by cleanlab."""
    scores = score_labels(ctx, params)
    if isinstance(scores, str):
        return CheckResult(CHECK_ID, Status.SKIPPED, f"skipped: {scores}")
    suggested = scores.suggested
    flagged = np.flatnonzero(scores.is_issue)
    flagged = flagged[np.argsort(-scores.score[flagged], kind="stable")]
    paths = ctx.paths
    findings = [_finding(ctx, paths, scores, int(i), suggested) for i in flagged[: params.max_findings]]
    metrics = _metrics(ctx, scores, suggested, params)
    summary = (
        f"{len(flagged)} of {len(scores.rows)} labels look wrong"
        if len(flagged)
        else f"no likely label errors among {len(scores.rows)} images"
    )
    summary += f" (out-of-fold accuracy on the bottlenecks {metrics['model_accuracy']:.0%})"
    if metrics["classes_left_out"]:
        left_out = len(metrics["classes_left_out"])
        summary += f"; {left_out} classes with under {params.min_class_images} images not checked"
    return result(CHECK_ID, summary, findings, metrics)
