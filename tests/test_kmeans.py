"""The small k-means of :mod:`datacheck.probes.cluster`: what it finds and how it adds up clusters."""

from __future__ import annotations

import numpy as np

from datacheck.probes.cluster import _cluster_sums, group_sums, kmeans


def test_cluster_sums_equal_adding_rows_in_order() -> None:
    # np.add.at adds rows one by one in row order; the bincount per dimension must give the same floats
    rng = np.random.default_rng(0)
    points = rng.standard_normal((3_000, 6)) * 10.0 ** rng.integers(-3, 4, (3_000, 1))
    labels = rng.integers(0, 5, 3_000)
    expected = np.zeros((5, 6))
    np.add.at(expected, labels, points)
    assert np.array_equal(_cluster_sums(np.ascontiguousarray(points.T), labels, 5), expected)


def test_empty_cluster_sums_are_zero() -> None:
    points = np.arange(12.0).reshape(4, 3)
    sums = _cluster_sums(np.ascontiguousarray(points.T), np.array([0, 0, 2, 2]), 4)
    assert sums.shape == (4, 3)
    assert np.array_equal(sums[[1, 3]], np.zeros((2, 3)))
    assert np.array_equal(sums[0], points[0] + points[1])


def test_kmeans_recovers_separated_blobs() -> None:
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = np.repeat(np.arange(3), 200)
    points = centres[truth] + rng.standard_normal((600, 2))
    model = kmeans(points, 3, seed=0)
    # every blob is one cluster (cluster numbers are arbitrary)
    for blob in range(3):
        assert len(np.unique(model.labels[truth == blob])) == 1
    assert len(np.unique(model.labels)) == 3
    assert model.distances.shape == (600, 3)
    chosen = model.distances[np.arange(600), model.labels]
    assert np.isclose(model.inertia, chosen.sum())
    assert np.array_equal(model.labels, model.distances.argmin(axis=1))


def test_group_sums_equal_np_add_at_for_any_layout() -> None:
    rng = np.random.default_rng(2)
    points = rng.standard_normal((500, 7)).astype(np.float32)[:, ::2]  # float32, not contiguous
    labels = rng.integers(0, 6, 500)
    expected = np.zeros((6, 4))
    np.add.at(expected, labels, points)
    assert np.array_equal(group_sums(points, labels, 6), expected)
