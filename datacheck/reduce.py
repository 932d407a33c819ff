"""Principal components, computed one way and, within an audit, once.

Every consumer that works in fewer dimensions than the bottleneck — the kNN candidate search, the labels
check's classifier, the report's map — reads the same basis through :meth:`AuditContext.reduced`: the
top principal axes of the L2-normalised vectors, from the covariance of a sample of at most
:data:`PCA_SAMPLE` rows chosen by content (one Gram matrix and a partial symmetric eigensolve). The axes of
an exact eigensolve are nested — the top 32 of a 256-axis fit are the top 32 — so one fit at the largest
size asked for serves every smaller one.

Rows are projected without whitening: each component keeps its own variance, so the weak directions a
small dataset cannot estimate stay small (whitening them cost the labels check a fifth of its average
precision on real label errors, docs/checks/labels.md).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from datacheck.halfrows import HalfUnitRows, as_rows

logger = logging.getLogger(__name__)

#: Most rows the covariance is estimated from (the axes of 20,000 embeddings are stable).
PCA_SAMPLE = 20_000
#: Axes fitted on first use: enough for every default consumer (labels 256, kNN search 128, map 32).
DEFAULT_AXES = 256


def content_sample(unit: np.ndarray, size: int) -> np.ndarray:
    """About ``size`` row indices chosen by the rows' content, not their position.

    A row is picked when a hash of its leading values falls in the first ``size / N`` of the range, so the
    same images are picked whatever else is added or removed: the basis of a dataset with 100 more images
    stays that of the dataset before (an updated kNN graph then agrees with a rebuild).
    """
    if len(unit) <= size:
        return np.arange(len(unit))
    bits = np.ascontiguousarray(unit[:, :8], dtype=np.float32).view(np.uint32).astype(np.uint64)
    mixed = (bits * np.arange(1, 17, 2, dtype=np.uint64) * np.uint64(0x9E3779B1)).sum(axis=1) % np.uint64(
        1 << 32
    )
    return np.flatnonzero(mixed < np.uint64(int(size / len(unit) * (1 << 32))))


#: Rows centred and projected at a time.
_PROJECT_ROWS = 65_536


@dataclass(frozen=True)
class PcaBasis:
    """Principal axes of a set of vectors.

    Attributes:
        mean: ``float32[D]`` mean of the sample the axes were fitted on.
        axes: ``float32[D, K]`` unit axes, by decreasing variance (``K = D``: the identity, no rotation).
    """

    mean: np.ndarray
    axes: np.ndarray

    @property
    def dims(self) -> int:
        """Number of axes."""
        return self.axes.shape[1]

    def project(self, vectors: np.ndarray, dims: int | None = None) -> np.ndarray:
        """``float32[N, d]``: the centred rows on the first ``d = min(dims, K)`` axes (all by default)."""
        keep = self.dims if dims is None else min(dims, self.dims)
        vectors = as_rows(vectors)
        if keep == self.dims == vectors.shape[1]:  # a full basis is the identity (see fit_basis)
            return vectors[:] - self.mean
        out = np.empty((len(vectors), keep), np.float32)
        for start in range(0, len(vectors), _PROJECT_ROWS):  # no centred copy of a million rows (5 GB)
            out[start : start + _PROJECT_ROWS] = (
                vectors[start : start + _PROJECT_ROWS] - self.mean
            ) @ self.axes[:, :keep]
        return out


def fit_basis(vectors: np.ndarray, dims: int, sample: int = PCA_SAMPLE) -> PcaBasis:
    """The top ``dims`` principal axes of ``vectors`` (all ``D`` dimensions: no rotation, only centring).

    Args:
        vectors: ``float32[N, D]`` rows (for the shared basis: the L2-normalised bottlenecks).
        dims: Axes wanted; ``D`` or more keeps every dimension unrotated.
        sample: Most rows the covariance is estimated from (:func:`content_sample`).
    """
    x = as_rows(vectors)
    n_dims = x.shape[1]
    rows = x[content_sample(x, sample)]
    mean = rows.mean(axis=0, dtype=np.float64).astype(np.float32)
    keep = min(dims, n_dims)
    if keep >= n_dims:
        return PcaBasis(mean, np.eye(n_dims, dtype=np.float32))
    import scipy.linalg

    centred = rows - mean
    gram = (centred.T @ centred).astype(np.float64)
    _, axes = scipy.linalg.eigh(gram, subset_by_index=[n_dims - keep, n_dims - 1])
    return PcaBasis(mean, np.ascontiguousarray(axes[:, ::-1], dtype=np.float32))


class SharedBasis:
    """One basis of one set of vectors, fitted on first use, refitted only when more axes are asked for.

    Thread-safe: checks may run side by side on the same context.
    """

    def __init__(self, vectors: np.ndarray | HalfUnitRows) -> None:
        self._vectors = vectors
        self._basis: PcaBasis | None = None
        self._projected: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def vectors(self) -> np.ndarray | HalfUnitRows:
        """The vectors this basis is of."""
        return self._vectors

    def basis(self, dims: int) -> PcaBasis:
        """A basis with at least ``min(dims, D)`` axes (:data:`DEFAULT_AXES` or more)."""
        wanted = min(max(dims, DEFAULT_AXES), self._vectors.shape[1])
        with self._lock:
            if self._basis is None or self._basis.dims < wanted:
                self._basis = fit_basis(self._vectors, wanted)
                self._projected = None
                logger.debug("PCA basis: %d axes of %d rows", wanted, len(self._vectors))
            return self._basis

    def reduced(self, dims: int) -> np.ndarray:
        """``float32[N, d]``: every row on the first ``d = min(dims, D)`` axes (a read-only view)."""
        basis = self.basis(dims)
        with self._lock:
            if self._projected is None:
                self._projected = basis.project(self._vectors)
                self._projected.flags.writeable = False
            return self._projected[:, : min(dims, basis.dims)]
