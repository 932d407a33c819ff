"""The preconditioned softmax regression solves scikit-learn's LogisticRegression problem."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss as sklearn_log_loss

from datacheck.softmax import SoftmaxModel, fit_softmax, log_loss


def _problem(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three overlapping classes on features whose scales span four orders of magnitude."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = rng.normal(size=(3, 6))
    x = centres[labels] + rng.normal(size=(n, 6)) * 1.5
    return (x * np.array([30.0, 3.0, 1.0, 0.3, 0.03, 0.003])).astype(np.float32), labels


def _objective(model: SoftmaxModel, x: np.ndarray, labels: np.ndarray, c: float) -> float:
    """scikit-learn's lbfgs objective in float64: mean cross-entropy + ||W||² / (2·C·n)."""
    probs = model.predict_proba(x.astype(np.float64))
    column = np.searchsorted(model.classes, labels)
    loss = -np.log(probs[np.arange(len(labels)), column]).mean()
    return float(loss + (model.coef.astype(np.float64) ** 2).sum() / (2 * c * len(labels)))


def _sklearn(x: np.ndarray, labels: np.ndarray, c: float, tol: float) -> SoftmaxModel:
    fitted = LogisticRegression(C=c, tol=tol, max_iter=100_000).fit(x.astype(np.float64), labels)
    return SoftmaxModel(fitted.classes_, fitted.coef_, fitted.intercept_)


@pytest.mark.parametrize("c", [0.1, 10.0])
def test_reaches_scikit_learns_optimum(c):
    x, labels = _problem()
    ours = fit_softmax(x, labels, c, max_iter=1000)
    tight = _sklearn(x, labels, c, tol=1e-10)  # scikit-learn run to convergence in float64
    optimum = _objective(tight, x, labels, c)
    # our objective is summed from float32 products, so the solver cannot resolve it below a few float32
    # ulps of its value: 16 ulps of room
    assert _objective(ours, x, labels, c) <= optimum * (1 + 16 * np.finfo(np.float32).eps)
    # near the optimum the probabilities move with the square root of the objective's excess
    gap = max(_objective(ours, x, labels, c) - optimum, 0.0)
    assert np.abs(ours.predict_proba(x) - tight.predict_proba(x)).max() < 1e-2 + np.sqrt(gap)


def test_warm_start_from_the_solution_stays_there():
    """Started at its own solution the solver ends no worse, in far fewer iterations than from zero.

    Not necessarily in one or two: the first fit can stop where its float32 objective no longer resolves
    progress (a relative change below ``ftol``) with the largest gradient component still above ``tol`` —
    where exactly depends on the CPU's float32 summation order — and the warm start then goes on from there.
    """
    x, labels = _problem()
    first = fit_softmax(x, labels, 1.0, max_iter=1000)
    again = fit_softmax(x, labels, 1.0, max_iter=1000, start=first)
    assert again.iterations < first.iterations / 2
    floor = 1 + 16 * np.finfo(np.float32).eps  # the float32 objective's resolution, as above
    assert _objective(again, x, labels, 1.0) <= _objective(first, x, labels, 1.0) * floor


def test_covers_only_the_classes_it_was_given():
    x, labels = _problem()
    kept = labels != 1
    model = fit_softmax(x[kept], labels[kept] * 2, 1.0, max_iter=1000)  # classes 0 and 4
    assert model.classes.tolist() == [0, 4] and model.predict_proba(x).shape == (len(x), 2)
    np.testing.assert_allclose(model.predict_proba(x).sum(axis=1), 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="other classes"):
        fit_softmax(x, labels, 1.0, max_iter=10, start=model)


def test_log_loss_matches_scikit_learn_and_counts_missing_classes_as_certain_misses():
    x, labels = _problem()
    model = fit_softmax(x, labels, 1.0, max_iter=1000)
    probs = model.predict_proba(x)
    assert log_loss(labels, probs, model.classes) == pytest.approx(sklearn_log_loss(labels, probs), rel=1e-9)
    partial = fit_softmax(x[labels != 2], labels[labels != 2], 1.0, max_iter=1000)
    worst = -np.log(1e-15)
    share = np.mean(labels == 2)
    assert log_loss(labels, partial.predict_proba(x), partial.classes) >= share * worst
