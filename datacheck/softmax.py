"""Multinomial logistic regression (L2-penalised softmax) fitted by diagonally preconditioned L-BFGS.

The problem is scikit-learn's ``LogisticRegression(C=C)`` with the lbfgs solver: minimise the mean
cross-entropy plus ``||W||² / (2·C·n)``, the intercept unpenalised. scikit-learn runs L-BFGS on the raw
features; on bottleneck principal components (not whitened: their variances span orders of magnitude) that
is badly conditioned and needs ~100-150 iterations. Here the same problem is solved in standardised
coordinates ``V = W·diag(s)`` (each feature centred and divided by its standard deviation ``s``; the
penalty becomes ``Σ (V/s)²``, so the minimiser is exactly the same), where L-BFGS converges in ~30-50
iterations, each cheaper (one product each way, float32, no input validation). On 10,000 CIFAR-10
bottlenecks (256 components, ``C`` = 30) this reached the optimum 30x closer (largest probability error
0.002 vs 0.066) in 0.3 s against scikit-learn's 1.1 s at its default tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Stopping tolerance on the largest gradient component in standardised coordinates. 1e-4 stops 0.03 short
#: of the optimum's probabilities on CIFAR-10 bottlenecks; 1e-5 within 0.002, for 50 % more iterations.
TOLERANCE = 1e-5


@dataclass(frozen=True)
class SoftmaxModel:
    """A fitted model over the classes that had training rows.

    Attributes:
        classes: ``int[K]`` class indices the model knows (sorted).
        coef: ``float64[K, d]`` weights on the original features.
        intercept: ``float64[K]``.
        iterations: L-BFGS iterations the fit took.
    """

    classes: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    iterations: int = 0

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """``float64[N, K]``: class probabilities (columns in :attr:`classes` order)."""
        x = np.asarray(features, dtype=np.float32)
        logits = (x @ self.coef.T.astype(np.float32)).astype(np.float64) + self.intercept
        return _softmax(logits)


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def fit_softmax(
    features: np.ndarray,
    labels: np.ndarray,
    c: float,
    max_iter: int,
    start: SoftmaxModel | None = None,
    tol: float = TOLERANCE,
) -> SoftmaxModel:
    """Fit the penalised softmax regression of ``labels`` on ``features``.

    Args:
        features: ``float[n, d]`` training rows.
        labels: ``int[n]`` class index of each row; the model covers the classes present.
        c: Inverse L2 strength (scikit-learn's ``C``).
        max_iter: Most L-BFGS iterations.
        start: A model to start from (warm start); its classes must be those present in ``labels``.
        tol: Stopping tolerance (:data:`TOLERANCE`).

    Returns:
        The fitted :class:`SoftmaxModel`.
    """
    from scipy.optimize import minimize

    x = np.asarray(features, dtype=np.float32)
    classes, y = np.unique(labels, return_inverse=True)
    n, d = x.shape
    k = len(classes)
    mean = x.mean(axis=0, dtype=np.float64)
    # standardised coordinates; a Hessian-diagonal scaling (variance/4 + the penalty's 1/(C·n)) was tried and
    # needed 1.7x the iterations on CIFAR-10 bottlenecks for the same accuracy
    scale = np.sqrt(x.var(axis=0, dtype=np.float64))
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = ((x - mean.astype(np.float32)) / scale.astype(np.float32)).astype(np.float32)
    onehot = np.zeros((n, k), np.float32)
    onehot[np.arange(n), y] = 1.0
    # per-coefficient penalty weight in standardised coordinates: W = V / s
    penalty = (1.0 / scale**2)[:, None] / (c * n)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        v, b = theta[: d * k].reshape(d, k), theta[d * k :]
        logits = (z @ v.astype(np.float32)).astype(np.float64) + b
        logits -= logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits).sum(axis=1))
        loss = (log_norm - logits[np.arange(n), y]).sum() / n
        residual = (np.exp(logits - log_norm[:, None]) - onehot) / n
        grad_v = (z.T @ residual.astype(np.float32)).astype(np.float64) + penalty * v
        value = loss + 0.5 * float((penalty * v * v).sum())
        return value, np.concatenate([grad_v.ravel(), residual.sum(axis=0)])

    theta = np.zeros(d * k + k)
    if start is not None:
        if not np.array_equal(start.classes, classes):
            raise ValueError("the start model covers other classes than these labels")
        w = start.coef.T  # [d, k]
        theta[: d * k] = (w * scale[:, None]).ravel()
        theta[d * k :] = start.intercept + mean @ w
    options = {"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps}
    solution = minimize(objective, theta, jac=True, method="L-BFGS-B", options=options)
    v, b = solution.x[: d * k].reshape(d, k), solution.x[d * k :]
    w = v / scale[:, None]
    return SoftmaxModel(classes, np.ascontiguousarray(w.T), b - mean @ w, int(solution.nit))


def log_loss(labels: np.ndarray, probs: np.ndarray, classes: np.ndarray) -> float:
    """Mean negative log-probability of each row's label (0 probability for a class the model lacks)."""
    column = np.full(int(max(labels.max(), classes.max())) + 1, -1)
    column[classes] = np.arange(len(classes))
    picked = np.where(column[labels] >= 0, probs[np.arange(len(labels)), np.maximum(column[labels], 0)], 0.0)
    return float(-np.log(np.clip(picked, 1e-15, None)).mean())
