"""``labels``: images whose label is probably wrong, with the label they look like.

How (see docs/checks/labels.md for the reasoning and the real-noise benchmark):

1. The L2-normalised bottlenecks are centred and rotated onto their top principal components (fitted on a
   sample), *not* whitened: scaling every component to unit variance amplified noise directions and cost
   a tenth of average precision on real human label errors (CIFAR-10N).
2. A multinomial logistic regression (scikit-learn's problem, solved by preconditioned L-BFGS in
   :mod:`datacheck.softmax`, 3-5x faster and closer to the optimum) gives **out-of-fold** class
   probabilities: stratified k-fold.
3. **Prune and refit**: the ``prune_fraction`` of images the first round finds least likely to carry their
   label are left out of the second round's training folds (still scored), so the suspects no longer pull
   the classifier towards their wrong labels. Each fold of the second round starts from the same fold's
   first-round model (the problem is strictly convex: the start changes the time, not the solution).
4. Optionally the neighbour vote of the shared kNN graph is mixed in (``knn_weight``; off by default: it did
   not help on real noise).
5. Confident learning (``cleanlab``) estimates how many labels are wrong and flags candidates; a candidate
   whose other class is predicted about as confidently as that class's own members are, and whose given
   class as weakly, is a ``label_issue``; the other candidates are listed as ``ambiguous``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
from threadpoolctl import threadpool_limits

from datacheck.blocks import RowsOf, map_blocks
from datacheck.checks.base import (
    CheckResult,
    Finding,
    GateLimit,
    ReportView,
    Severity,
    register,
    result,
    skipped,
)
from datacheck.context import AuditContext
from datacheck.params import Params, param
from datacheck.softmax import SoftmaxModel, fit_softmax, log_loss

logger = logging.getLogger(__name__)

CHECK_ID = "labels"

_FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")
_RANKINGS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")

#: Candidate ``C`` values when ``regularisation`` is chosen from the data, and the rows used to choose.
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
_C_SAMPLE = 5_000


@dataclass(frozen=True)
class LabelsParams(Params):
    """Parameters of the ``labels`` check.

    Attributes:
        folds: Cross-validation folds for the out-of-fold probabilities.
        pca_dims: Most principal components the classifier sees (0 = the full bottleneck); never more than
            one per 4 images, see :func:`feature_count`.
        regularisation: Inverse L2 strength ``C`` of the logistic regression; ``None`` chooses it from
            :data:`C_GRID` by held-out log-loss on (a sample of) the dataset itself.
        prune_fraction: Share of images, the least likely to carry their label after a first round, left
            out of the training folds of a second round (0 = one round).
        max_train_images: Most images each fold's model learns from (a stratified sample; 0 = all), so the
            time stays bounded on large datasets; every image is still scored.
        max_iter: Most L-BFGS iterations per fold.
        knn_weight: Weight of the kNN neighbour vote in the combined probabilities (0 = classifier only).
        min_margin: A label is also an issue, whatever confident learning estimates, when another class's
            combined probability exceeds the given label's by at least this (1 = confident learning only).
        filter_by: cleanlab ``find_label_issues`` method that decides which labels are issues.
        ranking: cleanlab label-quality score used to rank them.
        min_class_images: Classes with fewer images are left out (neither checked nor suggested); at least
            ``folds``.
        max_findings: Most findings listed (highest score first); the metrics count all.
        seed: Seed of the fold assignment and of the split that chooses ``C``.
    """

    folds: int = param(5, ge=2)
    pca_dims: int = param(256, ge=0)
    regularisation: float | None = param(None, gt=0)
    prune_fraction: float = param(0.1, ge=0, le=0.5)
    max_train_images: int = param(10_000, ge=0)
    max_iter: int = param(300, ge=1)
    knn_weight: float = param(0.0, ge=0, le=1)
    min_margin: float = param(0.6, gt=0, le=1)
    filter_by: str = param("prune_by_noise_rate", choices=_FILTERS)
    ranking: str = param("self_confidence", choices=_RANKINGS)
    min_class_images: int = 10
    max_findings: int = param(500, ge=0)
    seed: int = 0

    def relations(self) -> list[str]:
        """``min_class_images >= folds``; ``max_train_images`` is 0 (all) or at least 100."""
        return [
            f"min_class_images must be at least folds ({self.folds}), got {self.min_class_images!r}"
            if self.min_class_images < self.folds
            else "",
            f"max_train_images must be 0 or at least 100, got {self.max_train_images!r}"
            if 0 < self.max_train_images < 100
            else "",
        ]


# --------------------------------------------------------------------------------------------- features


def feature_count(n_rows: int, dims: int, n_dims: int) -> int:
    """Principal components to keep: ``dims`` (0 = all), at most ``n_dims`` and one per 4 rows.

    Unwhitened components carry their own variance, so the weak directions a small dataset cannot estimate
    stay small and the L2 penalty keeps them quiet: on 3,000 CIFAR-10N images 128, 256 and all 1,280
    components rank real label errors equally well (AP 0.485-0.488), 64 components worse (0.463).

    Args:
        n_rows: Images the classifier learns from.
        dims: The ``pca_dims`` parameter (0 = every dimension).
        n_dims: Dimensions of the vectors.

    Returns:
        The number of components, at least 1.
    """
    wanted = n_dims if dims == 0 else min(dims, n_dims)
    return max(1, min(wanted, n_rows // 4))


def choose_regularisation(features: np.ndarray | RowsOf, labels: np.ndarray, params: LabelsParams) -> float:
    """``params.regularisation``, or the ``C`` of :data:`C_GRID` with the lowest held-out log-loss.

    How strongly to regularise depends on how far apart the classes lie and how many images there are,
    so it is measured on the dataset: one stratified 80/20 split of at most 5,000 rows, a fit per
    candidate (each warm-started from the previous, smaller ``C``), the given labels as the target.
    """
    if params.regularisation is not None:
        return params.regularisation
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    if len(rows) > _C_SAMPLE:
        rows, _ = train_test_split(rows, train_size=_C_SAMPLE, stratify=labels, random_state=params.seed)
    train, held_out = train_test_split(rows, test_size=0.2, stratify=labels[rows], random_state=params.seed)
    model, losses = None, []
    for c in C_GRID:
        model = fit_softmax(features[train], labels[train], c, params.max_iter, start=model)
        probs = model.predict_proba(features[held_out])
        losses.append(log_loss(labels[held_out], probs, model.classes))
    return C_GRID[int(np.argmin(losses))]


@dataclass
class FoldModels:
    """The fitted model of each cross-validation fold, to warm-start a later round on the same folds.

    Starting fold ``f`` of round 2 from fold ``f`` of round 1 is leak-free (neither saw fold ``f``'s
    held-out rows), unlike starting it from another fold's model, which did.
    """

    models: list[SoftmaxModel] = field(default_factory=list)


def _training_rows(train: np.ndarray, labels: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """``train``, or a stratified sample of ``cap`` of its rows (0 = no cap)."""
    if not cap or len(train) <= cap:
        return train
    from sklearn.model_selection import train_test_split

    kept, _ = train_test_split(train, train_size=cap, stratify=labels[train], random_state=seed)
    return np.sort(kept)


def out_of_fold_probabilities(
    features: np.ndarray | RowsOf,
    labels: np.ndarray,
    n_classes: int,
    params: LabelsParams,
    trusted: np.ndarray | None = None,
    start: FoldModels | None = None,
) -> tuple[np.ndarray, FoldModels]:
    """Class probabilities of every row from a logistic regression that never saw that row.

    Args:
        features: ``float32[N, F]`` (an array, or rows of one: :class:`~datacheck.blocks.RowsOf`).
        labels: ``int[N]`` in ``0..n_classes-1``; every class needs at least ``params.folds`` rows.
        n_classes: Number of classes.
        params: Folds, iterations, training-row cap and seed (``params.regularisation`` is set: see
            :func:`choose_regularisation`).
        trusted: ``bool[N]``: rows the models may learn from (default all); every row is scored.
        start: The same folds' models from an earlier round, to start from.

    Returns:
        ``float64[N, n_classes]`` rows summing to 1 (0 for a class no training fold had), and the models.
    """
    from sklearn.model_selection import StratifiedKFold

    folds = list(
        StratifiedKFold(n_splits=params.folds, shuffle=True, random_state=params.seed).split(labels, labels)
    )

    def fit(fold: int) -> SoftmaxModel:
        train = folds[fold][0]
        if trusted is not None:
            train = train[trusted[train]]
        train = _training_rows(train, labels, params.max_train_images, params.seed + fold)
        begin = start.models[fold] if start is not None else None
        if begin is not None and not np.array_equal(begin.classes, np.unique(labels[train])):
            begin = None  # pruning emptied a class of this fold: start afresh
        return fit_softmax(features[train], labels[train], params.regularisation, params.max_iter, begin)

    # The folds are independent fits (numpy releases the GIL in their products): one per core, each on one
    # BLAS thread, so the probabilities are the same however many run at once.
    models = map_blocks(fit, range(len(folds)))
    probs = np.zeros((len(labels), n_classes))
    for (_, held_out), model in zip(folds, models, strict=True):
        probs[np.ix_(held_out, model.classes)] = model.predict_proba(features[held_out])
    return probs, FoldModels(list(models))


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
        model_probs: Out-of-fold classifier probabilities alone (after pruning, when it ran).
        is_issue: Candidates: cleanlab's verdict or the confident-disagreement rule, per row.
        is_wrong: Candidates that look mislabelled rather than ambiguous (:func:`looks_mislabelled`).
        score: ``1 - label quality`` per row (higher = more likely wrong).
        estimated_errors: cleanlab's confident-joint estimate of the number of wrong labels.
        components: Features the classifier saw.
        regularisation: The ``C`` the classifier used.
    """

    rows: np.ndarray
    classes: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    model_probs: np.ndarray
    is_issue: np.ndarray
    is_wrong: np.ndarray
    score: np.ndarray
    estimated_errors: int
    components: int
    regularisation: float

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


def looks_mislabelled(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Rows the model places in another class as firmly as that class's own members, and not in their own.

    Per class ``j`` the threshold ``t_j`` is the mean probability of ``j`` over the images labelled ``j``
    (cleanlab's per-class self-confidence), so the rule adapts to how separable each class is in this
    dataset: a row labelled ``i`` looks mislabelled when its most likely other class ``j`` has
    ``p_j >= t_j`` and ``p_i <= 1 - t_i``. Candidates that fail it are ambiguous: the model hesitates
    between classes, as it also does on correctly labelled images.
    """
    n_classes = probs.shape[1]
    rows = np.arange(len(labels))
    thresholds = np.array(
        [probs[labels == j, j].mean() if np.any(labels == j) else 1.0 for j in range(n_classes)]
    )
    others = probs.copy()
    others[rows, labels] = -1.0
    suggested = others.argmax(axis=1)
    return (others[rows, suggested] >= thresholds[suggested]) & (
        probs[rows, labels] <= 1 - thresholds[labels]
    )


def _model_probabilities(
    features: np.ndarray | RowsOf, labels: np.ndarray, n_classes: int, params: LabelsParams
) -> np.ndarray:
    """Out-of-fold probabilities; with pruning, a second round that does not learn from the suspects."""
    probs, fitted = out_of_fold_probabilities(features, labels, n_classes, params)
    if params.prune_fraction <= 0:
        return probs
    doubt = 1.0 - probs[np.arange(len(labels)), labels]
    trusted = doubt < np.quantile(doubt, 1.0 - params.prune_fraction)
    if np.bincount(labels[trusted], minlength=n_classes).min() < params.folds:
        return probs  # pruning would empty a class; keep the first round
    return out_of_fold_probabilities(features, labels, n_classes, params, trusted, start=fitted)[0]


def _content_order(ctx: AuditContext, rows: np.ndarray) -> np.ndarray:
    """``rows`` ordered by content hash, then label.

    Folds and samples are drawn in this order, so the findings depend on the images and labels alone, not on
    file names or the order in which a folder, shard or table lists them.
    """
    # ASCII bytes, 64 a row: as numpy unicode (4 bytes a character) a million hashes took 0.5 GB
    hashes = np.array(ctx.file_sha256, dtype="S64")[rows]
    return rows[np.lexsort((ctx.labels[rows], hashes))]


def score_labels(ctx: AuditContext, params: LabelsParams) -> LabelScores | str:
    """Run the label model; returns a reason string instead when there is too little to learn from."""
    from cleanlab.count import num_label_issues
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    counts = np.bincount(ctx.labels, minlength=len(ctx.class_names))
    classes = np.flatnonzero(counts >= params.min_class_images)
    if len(classes) < 2:
        return (
            f"needs at least 2 classes with {params.min_class_images} or more images each "
            f"({len(classes)} of {len(ctx.class_names)} have that many)"
        )
    rows = _content_order(ctx, np.flatnonzero(np.isin(ctx.labels, classes)))
    remap = np.full(len(ctx.class_names), -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    labels = remap[ctx.labels[rows]]
    start = time.perf_counter()
    # The projection is two large matrix products: BLAS threads pay off there.
    dims = feature_count(len(rows), params.pca_dims, ctx.vectors.shape[1])
    # the audit's shared basis (datacheck.reduce), not whitened; in content order without a copy of it
    features = RowsOf(ctx.reduced(dims), rows)
    # Single-threaded: the fits are many small operations where thread synchronisation costs more than it
    # saves, and on a busy (CI) machine OpenMP/BLAS threads contending for cores made them 5-20x slower.
    with threadpool_limits(limits=1):
        params = replace(params, regularisation=choose_regularisation(features, labels, params))
        model_probs = _model_probabilities(features, labels, len(classes), params)
    logger.debug("labels: out-of-fold probabilities in %.2f s", time.perf_counter() - start)
    probs = model_probs
    if params.knn_weight > 0 and ctx.knn.k > 0:
        prior = np.bincount(labels, minlength=len(classes)) / len(labels)
        knn = neighbour_vote(*_restricted_graph(ctx, rows), labels, len(classes), prior)
        probs = (1.0 - params.knn_weight) * model_probs + params.knn_weight * knn
    is_issue = find_label_issues(labels, probs, filter_by=params.filter_by, n_jobs=1)
    quality = get_label_quality_scores(labels, probs, method=params.ranking)
    confident = _confident_disagreement(labels, probs, params.min_margin)
    issues = np.asarray(is_issue, dtype=bool) | confident
    return LabelScores(
        rows,
        classes,
        labels,
        probs,
        model_probs,
        issues,
        issues & (looks_mislabelled(labels, probs) | confident),
        1.0 - quality,
        int(num_label_issues(labels, probs)),
        features.shape[1],
        float(params.regularisation),
    )


def _finding(
    ctx: AuditContext, paths: tuple[str, ...], scores: LabelScores, i: int, suggested: np.ndarray
) -> Finding:
    path = paths[scores.rows[i]]
    given = ctx.class_names[scores.classes[scores.labels[i]]]
    other = ctx.class_names[scores.classes[suggested[i]]]
    p_given = float(scores.probs[i, scores.labels[i]])
    p_other = float(scores.probs[i, suggested[i]])
    facts = f"(probability {p_other:.2f} vs {p_given:.2f})"
    extra = {
        "given": given,
        "suggested": other,
        "score": float(scores.score[i]),
        "given_probability": p_given,
        "suggested_probability": p_other,
    }
    if scores.is_wrong[i]:
        kind, severity = "label_issue", Severity.WARN
        message = f"'{path}' is labelled '{given}' but looks like '{other}' {facts}."
        advice = f"Review the label: it looks like '{other}'; relabel it, or remove it if it fits none."
    else:
        kind, severity = "ambiguous", Severity.INFO
        message = f"'{path}' is labelled '{given}' but could also be '{other}' {facts}."
        advice = f"Check it if you have time: the model hesitates between '{given}' and '{other}'."
    return Finding(kind, severity, message, advice, files=(path,), extra=extra)


def _metrics(ctx: AuditContext, scores: LabelScores, suggested: np.ndarray, params: LabelsParams) -> dict:
    wrong = np.flatnonzero(scores.is_wrong)
    names = [ctx.class_names[c] for c in scores.classes]
    confusions = Counter((names[scores.labels[i]], names[suggested[i]]) for i in wrong)
    return {
        "issues": len(wrong),
        "issue_fraction": len(wrong) / len(scores.rows),
        "ambiguous": int(scores.is_issue.sum() - len(wrong)),
        "estimated_errors": scores.estimated_errors,
        "estimated_error_fraction": scores.estimated_errors / len(scores.rows),
        "images_checked": len(scores.rows),
        "model_accuracy": float((scores.model_probs.argmax(axis=1) == scores.labels).mean()),
        "combined_accuracy": float((scores.probs.argmax(axis=1) == scores.labels).mean()),
        "issues_per_class": {name: int((scores.labels[wrong] == c).sum()) for c, name in enumerate(names)},
        "top_confusions": [
            {"given": g, "suggested": s, "count": n} for (g, s), n in confusions.most_common(10)
        ],
        "classes_left_out": [
            c for i, c in enumerate(ctx.class_names) if i not in set(scores.classes.tolist())
        ],
        "folds": params.folds,
        "components": scores.components,
        "regularisation": scores.regularisation,
    }


def _summary(metrics: dict, params: LabelsParams) -> str:
    wrong, checked, ambiguous = metrics["issues"], metrics["images_checked"], metrics["ambiguous"]
    text = (
        f"{wrong} of {checked} labels look wrong" if wrong else f"no label looks wrong among {checked} images"
    )
    if ambiguous:
        text += f", {ambiguous} more are ambiguous"
    text += (
        f" (confident-learning estimate: {metrics['estimated_errors']} label errors, ambiguous images"
        f" included; out-of-fold accuracy on the bottlenecks {metrics['model_accuracy']:.0%})"
    )
    if metrics["classes_left_out"]:
        left_out = len(metrics["classes_left_out"])
        text += f"; {left_out} classes with under {params.min_class_images} images not checked"
    return text


@register(
    CHECK_ID,
    LabelsParams,
    limits=[
        GateLimit(
            "max_label_issue_fraction",
            "issue_fraction",
            "max_fraction",
            "Largest fraction of likely label errors allowed.",
        )
    ],
    view=ReportView(card="label", neighbours=True),
)
def check_labels(ctx: AuditContext, params: LabelsParams) -> CheckResult:
    """Likely label errors: pruned out-of-fold classifier on the bottlenecks, judged by cleanlab."""
    scores = score_labels(ctx, params)
    if isinstance(scores, str):
        return skipped(CHECK_ID, f"skipped: {scores}")
    suggested = scores.suggested
    flagged = np.flatnonzero(scores.is_issue)
    # the ones that look wrong first, each group from the highest score down
    flagged = flagged[np.lexsort((-scores.score[flagged], ~scores.is_wrong[flagged]))]
    paths = ctx.paths
    findings = [_finding(ctx, paths, scores, int(i), suggested) for i in flagged[: params.max_findings]]
    metrics = _metrics(ctx, scores, suggested, params)
    return result(CHECK_ID, _summary(metrics, params), findings, metrics)
