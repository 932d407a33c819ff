import numpy as np
import pytest

from datacheck.checks.base import Severity, Status
from datacheck.checks.outliers import OutliersParams, check_outliers, class_distances
from tests.factories import clustered_vectors, make_context

NAMES = ["cat", "dog", "fox"]


def _with_outliers():
    vectors, labels = clustered_vectors([80, 80, 80], dim=32, spread=0.5, seed=0)
    rng = np.random.default_rng(7)
    junk = rng.standard_normal(32).astype(np.float32) * 3  # unlike anything: a corrupted frame
    dog_like = vectors[labels == 1][:20].mean(axis=0)  # a dog filed under cat
    vectors = np.vstack([vectors, junk, dog_like])
    labels = np.append(labels, [0, 0])
    return make_context(vectors, labels, class_names=NAMES), len(labels) - 2, len(labels) - 1


def test_planted_outliers_are_found_with_their_nearest_class():
    ctx, junk, dog_like = _with_outliers()
    res = check_outliers(ctx, OutliersParams())
    found = {ctx.paths.index(f.files[0]): f for f in res.findings}
    assert set(found) == {junk, dog_like}
    assert found[dog_like].extra["nearest_class"] == "dog"
    assert "relabel" in found[dog_like].advice and "'dog'" in found[dog_like].advice
    assert all(f.extra["label"] == "cat" and f.extra["score"] >= 4 for f in found.values())
    assert found[junk].severity in (Severity.INFO, Severity.WARN)
    scores = [f.extra["score"] for f in res.findings]
    assert scores == sorted(scores, reverse=True)
    assert res.metrics["per_class"] == {"cat": 2, "dog": 0, "fox": 0}


def test_clean_clusters_have_no_outliers():
    vectors, labels = clustered_vectors([80, 80, 80], dim=32, spread=0.5, seed=1)
    res = check_outliers(make_context(vectors, labels, class_names=NAMES), OutliersParams())
    assert res.status is Status.PASS and not res.findings


def test_severity_levels():
    ctx, *_ = _with_outliers()
    res = check_outliers(ctx, OutliersParams(z_threshold=4, warn_z=4))
    assert {f.severity for f in res.findings} == {Severity.WARN} and res.status is Status.WARN
    res = check_outliers(ctx, OutliersParams(z_threshold=4, warn_z=1e9))
    assert res.status is Status.PASS and res.findings  # info findings only


def test_distances_match_brute_force():
    ctx, *_ = _with_outliers()
    k = 5
    distance = class_distances(ctx, k, 10)
    sims = ctx.vectors @ ctx.vectors.T
    np.fill_diagonal(sims, -np.inf)
    for row in range(ctx.n):
        same = sims[row, ctx.labels == ctx.labels[row]]
        expected = 1 - np.sort(same)[-k:].mean()
        assert distance[row] == pytest.approx(expected, abs=1e-5)


def test_small_classes_are_not_assessed():
    vectors, labels = clustered_vectors([80, 6], dim=16, seed=2)
    ctx = make_context(vectors, labels)
    res = check_outliers(ctx, OutliersParams())
    assert np.isnan(class_distances(ctx, 5, 10)[labels == 1]).all()
    assert res.metrics["classes_assessed"] == 1
    vectors, labels = clustered_vectors([6, 6], dim=16, seed=2)
    assert check_outliers(make_context(vectors, labels), OutliersParams()).status is Status.SKIPPED


def test_params_are_validated():
    with pytest.raises(ValueError, match="warn_z must be at least z_threshold"):
        OutliersParams(z_threshold=5, warn_z=4)
    with pytest.raises(ValueError, match="min_class_images must be greater than k"):
        OutliersParams(k=10, min_class_images=10)
    with pytest.raises(ValueError, match="k must be at least 1, got 0"):
        OutliersParams(k=0)
    with pytest.raises(ValueError, match="z_threshold must be greater than 0") as err:
        OutliersParams(z_threshold=0, max_findings=-1)
    assert "max_findings must be at least 0" in str(err.value)  # every problem at once


def test_large_classes_are_searched_as_the_graph_is_built_and_find_the_same_outliers(monkeypatch):
    """Above EXACT_CLASS_MAX the classmates come from an inverted file (linear in the class size)."""
    from datacheck.checks import outliers

    ctx, *_ = _with_outliers()
    exact_distance = class_distances(ctx, 5, 10)
    exact = check_outliers(ctx, OutliersParams())
    monkeypatch.setattr(outliers, "EXACT_CLASS_MAX", 20)  # every class of 80 searched approximately
    approximate_distance = class_distances(ctx, 5, 10)
    # 242 rows in 3 classes: each list is searched whole or not at all, so the recall is near-perfect; a
    # missed neighbour can only make an image look farther (a lower similarity replaces a higher one)
    assert np.all(approximate_distance >= exact_distance - 1e-6)
    assert np.mean(np.isclose(approximate_distance, exact_distance, atol=1e-6)) > 0.95
    approximate = check_outliers(ctx, OutliersParams())
    assert {f.files for f in approximate.findings} == {f.files for f in exact.findings}


def test_a_class_left_alone_is_not_searched_again_and_gives_the_same_distances(tmp_path, monkeypatch):
    import dataclasses
    import hashlib

    from datacheck.checks import outliers
    from datacheck.index import KnnParams

    vectors, labels = clustered_vectors([40, 40, 40], dim=16, spread=0.5, seed=1)
    knn = KnnParams(k=3, candidates=10)  # fewer graph neighbours than k = 5: every row is searched exactly

    def context(v: np.ndarray, lab: np.ndarray, derived):
        shas = [hashlib.sha256(row.tobytes()).hexdigest() for row in v]  # content ids, as files give them
        ctx = make_context(v, lab, class_names=NAMES, knn=knn, file_sha256=shas)
        return dataclasses.replace(ctx, derived_dir=derived)

    searched = []
    search = outliers._nearest_members

    def counting(ctx, rows, members, k):
        searched.append(int(ctx.labels[members[0]]))
        return search(ctx, rows, members, k)

    monkeypatch.setattr(outliers, "_nearest_members", counting)
    class_distances(context(vectors, labels, tmp_path), 5, 10)
    assert sorted(searched) == [0, 1, 2]
    # five new 'fox' images: only the fox class is searched again
    added = vectors[labels == 2][:5] + np.float32(0.05)
    grown_v, grown_l = np.vstack([vectors, added]), np.append(labels, [2] * 5)
    searched.clear()
    incremental = class_distances(context(grown_v, grown_l, tmp_path), 5, 10)
    assert searched == [2]
    fresh = class_distances(context(grown_v, grown_l, None), 5, 10)
    np.testing.assert_array_equal(incremental, fresh)  # the stored values are the computed ones
