"""Cross-validated class scores, one-vs-rest AUCs and the two tiny classifiers the probes use.

Both classifiers are closed-form and vectorised, so a probe over 60k rows costs milliseconds to a second:

* :func:`binned_naive_bayes` — categorical naive Bayes over small integer codes (quantile bins of numeric
  properties, or categories). For one column it is exactly the cross-validated histogram classifier, so it
  captures non-monotone effects (a class in the middle of the brightness range) that a linear model misses.
* :func:`shrunk_lda` — linear discriminant analysis with a pooled covariance shrunk towards its mean
  diagonal, for region descriptors of a few dozen dimensions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from datacheck.probes.cluster import group_sums

#: ``fit_predict(x_train, y_train, x_test, n_classes) -> float[n_test, n_classes]`` class scores.
FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class OvrAuc:
    """One-vs-rest AUC of each class with its Hanley–McNeil standard error.

    Attributes:
        auc: ``float[C]``; ``nan`` for a class with no positive or no negative rows.
        se: ``float[C]`` standard errors (``nan`` where ``auc`` is).
    """

    auc: np.ndarray
    se: np.ndarray

    @property
    def lower(self) -> np.ndarray:
        """A conservative AUC: two standard errors below the estimate."""
        return self.auc - 2.0 * self.se


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold number of each row, every class spread evenly over the folds."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        rng.shuffle(rows)
        folds[rows] = np.arange(len(rows)) % n_folds
    return folds


def stratified_subsample(labels: np.ndarray, max_rows: int, seed: int = 0) -> np.ndarray:
    """Sorted row numbers of at most ``max_rows`` rows, each class sampled at the same rate (all if fewer)."""
    n = len(labels)
    if n <= max_rows:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    rate = max_rows / n
    keep = [
        rng.choice(rows, size=max(1, round(rate * len(rows))), replace=False)
        for rows in (np.flatnonzero(labels == label) for label in np.unique(labels))
    ]
    return np.sort(np.concatenate(keep))


def cross_val_scores(
    features: np.ndarray, labels: np.ndarray, n_classes: int, fit_predict: FitPredict, folds: np.ndarray
) -> np.ndarray:
    """Out-of-fold class scores ``float[N, C]``: each row scored by a model that never saw it."""
    scores = np.zeros((len(labels), n_classes), dtype=np.float64)
    for fold in np.unique(folds):
        test = folds == fold
        scores[test] = fit_predict(features[~test], labels[~test], features[test], n_classes)
    return scores


def ovr_auc(scores: np.ndarray, labels: np.ndarray, n_classes: int) -> OvrAuc:
    """One-vs-rest AUC of ``scores[:, c]`` for each class ``c`` (ties count half)."""
    from scipy.stats import rankdata

    auc = np.full(n_classes, np.nan)
    se = np.full(n_classes, np.nan)
    for c in range(n_classes):
        positive = labels == c
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = rankdata(scores[:, c])
        auc[c] = (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        se[c] = hanley_mcneil_se(auc[c], n_pos, n_neg)
    return OvrAuc(auc, se)


def hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUC estimate (Hanley & McNeil, 1982)."""
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    return float(np.sqrt(max(var, 0.0)))


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose highest score is their label."""
    return float((scores.argmax(axis=1) == labels).mean()) if len(labels) else float("nan")


def majority_rate(labels: np.ndarray) -> float:
    """Accuracy of always guessing the largest class."""
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else float("nan")


def binned_naive_bayes(
    codes_train: np.ndarray, y_train: np.ndarray, codes_test: np.ndarray, n_classes: int, alpha: float = 1.0
) -> np.ndarray:
    """Categorical naive Bayes posteriors over integer codes ``int[N, F]`` (Laplace smoothing ``alpha``)."""
    prior = np.bincount(y_train, minlength=n_classes) + alpha
    log_post = np.tile(np.log(prior / prior.sum()), (len(codes_test), 1))
    for j in range(codes_train.shape[1]):
        n_codes = int(max(codes_train[:, j].max(), codes_test[:, j].max())) + 1
        counts = np.zeros((n_classes, n_codes))
        np.add.at(counts, (y_train, codes_train[:, j]), 1.0)
        counts += alpha
        log_like = np.log(counts / counts.sum(axis=1, keepdims=True))
        log_post += log_like[:, codes_test[:, j]].T
    return _softmax(log_post)


def shrunk_lda(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_classes: int, shrinkage: float = 0.2
) -> np.ndarray:
    """Linear discriminant posteriors with the pooled covariance shrunk towards its mean variance."""
    mean = x_train.mean(axis=0)
    scale = x_train.std(axis=0) + 1e-6
    xt = (x_train - mean) / scale
    xs = (x_test - mean) / scale
    counts = np.bincount(y_train, minlength=n_classes).astype(np.float64)
    sums = group_sums(xt, y_train, n_classes)
    centroids = sums / np.maximum(counts, 1.0)[:, None]
    within = xt - centroids[y_train]
    cov = within.T @ within / max(len(xt) - n_classes, 1)
    dim = cov.shape[0]
    cov = (1 - shrinkage) * cov + shrinkage * (np.trace(cov) / dim) * np.eye(dim)
    weights = np.linalg.solve(cov, centroids.T)  # [F, C]
    log_prior = np.log(np.maximum(counts, 0.5) / counts.sum())
    logits = xs @ weights - 0.5 * np.einsum("cf,fc->c", centroids, weights) + log_prior
    logits[:, counts == 0] = -np.inf
    return _softmax(logits)


def neighbour_class_scores(indices: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Share of each row's kNN neighbours in each class, ``float[N, C]`` (a leave-one-out kNN classifier)."""
    valid = indices >= 0
    neighbour_labels = np.where(valid, labels[np.maximum(indices, 0)], n_classes)
    counts = np.zeros((len(indices), n_classes + 1))
    np.add.at(counts, (np.repeat(np.arange(len(indices)), indices.shape[1]), neighbour_labels.ravel()), 1.0)
    return counts[:, :n_classes] / np.maximum(valid.sum(axis=1, keepdims=True), 1)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
