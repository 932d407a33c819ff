"""``representativeness``: a reference with a kind of image the training set lacks; train vs test; skipped."""

import dataclasses

import numpy as np
import pytest

from datacheck.checks.base import Status
from datacheck.checks.representativeness import RepresentativenessParams, representativeness
from datacheck.context import ReferenceSet
from datacheck.index import KnnParams, l2_normalise
from tests.factories import clustered_vectors, make_context

KNN = KnnParams(k=10, candidates=30)


def _blobs(seed=0):
    """Five blobs: 0-2 are training classes, 3 is a kind of image only the reference has."""
    return clustered_vectors([300, 300, 300, 60], dim=32, spread=0.6, seed=seed)


def test_missing_kind_in_reference_is_found():
    vectors, blob = _blobs()
    rng = np.random.default_rng(0)
    held_out = (blob < 3) & (rng.random(len(blob)) < 0.2)
    train = (blob < 3) & ~held_out
    reference = held_out | (blob == 3)
    ctx = make_context(vectors[train], blob[train], class_names=["cat", "dog", "ship"], knn=KNN)
    ref_paths = tuple(f"{'frog' if b == 3 else 'seen'}/{i}.jpg" for i, b in enumerate(blob[reference]))
    ctx = dataclasses.replace(
        ctx, reference=ReferenceSet(ref_paths, l2_normalise(vectors[reference]), "/deploy")
    )
    res = representativeness(ctx, RepresentativenessParams())
    assert res.metrics["mode"] == "reference"
    uncovered = [f for f in res.findings if f.kind == "uncovered"]
    assert uncovered, res.summary
    frogs = [p for f in uncovered for p in f.extra["all_files"]]
    assert sum(p.startswith("frog/") for p in frogs) >= 50
    assert sum(p.startswith("seen/") for p in frogs) <= 5
    assert uncovered[0].extra["root"] == "/deploy" and uncovered[0].extra["nearest_class"] in (
        "cat",
        "dog",
        "ship",
    )
    # Separating the novel share perfectly and the rest not at all gives AUC 0.5 + share/2; ask for half
    # of that gain (the AUC's sampling spread here is ~0.02).
    frog_share = sum(p.startswith("frog/") for p in ref_paths) / len(ref_paths)
    assert res.metrics["domain_auc"] > 0.5 + 0.25 * frog_share
    assert res.status is Status.WARN


def test_same_distribution_split_passes():
    vectors, labels = clustered_vectors([200, 200, 200], dim=32, spread=0.6, seed=1)
    splits = np.where(np.random.default_rng(1).random(len(labels)) < 0.2, "test", "train")
    ctx = make_context(vectors, labels, splits=list(splits), knn=KNN)
    res = representativeness(ctx, RepresentativenessParams())
    assert res.metrics["mode"] == "split:test"
    assert res.status is Status.PASS and res.findings == (), res.summary
    assert res.metrics["domain_auc"] < 0.65 and res.metrics["uncovered_share"] < 0.02


def test_shifted_test_split_is_a_domain_gap():
    vectors, labels = clustered_vectors([200, 200], dim=32, spread=0.6, seed=2)
    splits = np.where(np.arange(len(labels)) % 4 == 0, "test", "train")
    vectors = vectors.copy()
    vectors[splits == "test"] += 1.5 * np.random.default_rng(2).standard_normal(32)  # a new camera
    res = representativeness(
        make_context(vectors, labels, splits=list(splits), knn=KNN), RepresentativenessParams()
    )
    gap = [f for f in res.findings if f.kind == "domain_gap"]
    assert gap and gap[0].extra["auc"] > 0.9 and gap[0].severity == "fail"
    assert all(f.startswith("test/") for f in gap[0].files)


def test_without_reference_or_splits_it_is_skipped_with_a_reason():
    vectors, labels = clustered_vectors([50, 50], dim=16)
    res = representativeness(make_context(vectors, labels), RepresentativenessParams())
    assert res.status is Status.SKIPPED and "--reference" in res.summary


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"warn_auc": 0.95, "fail_auc": 0.9}, "warn_auc must be at most fail_auc"),
        ({"warn_auc": 0.4}, "warn_auc must be at least 0.5"),
        ({"coverage_alpha": 0.7}, "coverage_alpha must be less than 0.5"),
        ({"candidates": 3}, "candidates must be at least coverage_k"),
        ({"max_rows": 5}, "max_rows must be at least 10"),
        ({"n_examples": -1}, "n_examples must be at least 0"),
    ],
)
def test_params_are_validated(bad, message):
    with pytest.raises(ValueError, match=message):
        RepresentativenessParams(**bad)


def test_a_split_is_read_in_place_as_its_rows_would_be_gathered():
    from datacheck.checks.representativeness import RowsOf
    from datacheck.probes.naming import mean_probabilities

    rng = np.random.default_rng(0)
    array, rows = rng.normal(size=(50, 1000)).astype(np.float16), np.array([3, 7, 11, 40])
    split = RowsOf(array, rows)
    assert len(split) == 4 and split.shape == (4, 1000)
    np.testing.assert_array_equal(split[np.array([2, 0])], array[[11, 3]])
    np.testing.assert_array_equal(mean_probabilities(split), mean_probabilities(array[rows]))
