"""``splits``: a class merged from distinct groups is found, ranked first and its clusters named; merges."""

import numpy as np
import pytest

from datacheck.checks.base import Status
from datacheck.checks.splits import SplitsParams, crossing_ratio, neighbour_mixing, splits
from datacheck.index import KnnParams
from datacheck.probes.naming import ImageNetNamer, imagenet_name
from tests.factories import clustered_vectors, make_context

#: ImageNet ids the synthetic sub-groups "look like": sports car, container ship, sorrel.
SUBGROUP_IMAGENET = (817, 510, 339)


def _logits(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noisy logits whose top class follows the sub-group (id ``SUBGROUP_IMAGENET[g]``; -1 = random)."""
    logits = rng.normal(0, 1, (len(groups), 1000)).astype(np.float32)
    for g, imagenet in enumerate(SUBGROUP_IMAGENET):
        logits[groups == g, imagenet] += 6
    return logits


def _merged_dataset(seed: int = 0):
    """'vehicle' = three distinct blobs (car, ship, horse); 'cat' and 'dog' are one blob each."""
    vectors, blob = clustered_vectors([90, 90, 90, 120, 120], dim=32, spread=0.5, seed=seed)
    labels = np.array([0, 0, 0, 1, 2])[blob]
    groups = np.where(blob < 3, blob, -1)
    logits = _logits(groups, np.random.default_rng(seed))
    return vectors, labels, logits, groups


def _context(vectors, labels, logits, names=("vehicle", "cat", "dog")):
    return make_context(
        vectors, labels, class_names=list(names), logits=logits, knn=KnnParams(k=10, candidates=30)
    )


def test_merged_class_is_ranked_first_with_named_clusters():
    vectors, labels, logits, _ = _merged_dataset()
    res = splits(_context(vectors, labels, logits), SplitsParams())
    found = [f for f in res.findings if f.kind == "split"]
    assert found and found[0].extra["class"] == "vehicle", res.summary
    clusters = found[0].extra["clusters"]
    assert len(clusters) == 3
    assert sorted(c["size"] for c in clusters) == [90, 90, 90]
    names = " | ".join(c["name"] for c in clusters)
    for imagenet in SUBGROUP_IMAGENET:
        assert imagenet_name(imagenet) in names
    members = [f for c in clusters for f in c["files"]]
    assert len(members) == len(set(members)) == 270  # every member listed, once
    assert found[0].severity == "info" and found[0].advice
    assert 0.8 < found[0].extra["score"] <= 1.0


def test_coherent_classes_are_not_split():
    vectors, labels = clustered_vectors([150, 150, 150], dim=32, spread=0.5, seed=1)
    res = splits(make_context(vectors, labels, knn=KnnParams(k=10, candidates=30)), SplitsParams())
    assert res.status is Status.PASS and res.findings == (), res.summary


def test_indistinguishable_classes_are_reported_as_merge():
    vectors, blob = clustered_vectors([200, 100], dim=32, spread=0.5, seed=2)
    rng = np.random.default_rng(0)
    labels = np.where(blob == 0, rng.integers(0, 2, len(blob)), 2)  # blob 0 labelled at random as a or b
    ctx = make_context(
        vectors, labels, class_names=["husky", "malamute", "cat"], knn=KnnParams(k=10, candidates=30)
    )
    res = splits(ctx, SplitsParams())
    merges = [f for f in res.findings if f.kind == "merge"]
    assert [f.extra["classes"] for f in merges] == [["husky", "malamute"]]
    assert merges[0].extra["score"] > 0.8 and res.status is Status.WARN


def test_clusters_are_named_without_logits():
    vectors, labels, _, _ = _merged_dataset()
    res = splits(_context(vectors, labels, None), SplitsParams())
    names = [c["name"] for c in res.findings[0].extra["clusters"]]
    assert names == ["cluster 1", "cluster 2", "cluster 3"]


def test_neighbour_mixing_and_crossing_ratio():
    indices = np.array([[1], [0], [3], [2]])
    labels = np.array([0, 0, 1, 1])
    assert neighbour_mixing(indices, labels, 2)[0, 1] == 0.0
    assignment = np.array([0, 0, 1, 1])
    assert crossing_ratio(assignment, np.array([0, 1, 2, 3]), np.array([1, 0, 3, 2])) == 0.0
    assert crossing_ratio(assignment, np.array([0, 2]), np.array([2, 0])) == pytest.approx(2.0)  # all cross


def test_namer_prefers_characteristic_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (100, 1000)).astype(np.float32)
    logits[:, 999] += 5  # a label everybody gets ("toilet tissue") names nothing
    logits[:50, 817] += 4
    assert ImageNetNamer(logits).name(np.arange(50)).startswith(imagenet_name(817))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"max_k": 1}, "max_k must be at least 2"),
        ({"max_crossing": 1.5}, "max_crossing must be less than 1"),
        ({"min_cluster_fraction": 0}, "min_cluster_fraction must be greater than 0"),
        ({"merge_mixing": 2.5}, "merge_mixing must be at most 2"),
        ({"reference_pairs": 0}, "reference_pairs must be at least 1"),
    ],
)
def test_params_are_validated(bad, message):
    with pytest.raises(ValueError, match=message):
        SplitsParams(**bad)


def _blobs_with_merge(separated_by: float, seed: int = 0):
    """Three one-blob classes and a fourth made of two blobs ``separated_by`` apart (in blob spreads)."""
    rng = np.random.default_rng(seed)
    dim = 32
    centres = rng.standard_normal((5, dim)) * 3
    centres[4] = centres[3] + separated_by * rng.standard_normal(dim) / np.sqrt(dim)
    blob = np.repeat(np.arange(5), 120)
    vectors = (centres[blob] + rng.standard_normal((len(blob), dim))).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 3])[blob]
    return vectors, labels


def test_split_decision_is_relative_to_the_dataset():
    """A merge of two touching blobs is less separated than an absolute cut-off wants, but far more than
    this dataset's single classes: the relative rule reports it, the old absolute rule (max_crossing 0.2
    for every dataset) does not."""
    vectors, labels = _blobs_with_merge(separated_by=4.0)
    ctx = make_context(vectors, labels, knn=KnnParams(k=10, candidates=30))
    res = splits(ctx, SplitsParams())
    found = [f for f in res.findings if f.kind == "split"]
    assert [f.extra["class"] for f in found] == ["class3"], res.summary
    assert found[0].extra["separation"] < 0.8  # below the absolute rule's 1 − max_crossing
    assert found[0].extra["score"] > 0.5  # past halfway from a typical single class to a typical merge
    assert res.metrics["merged_pair_separation"] > max(
        res.metrics["separations"][c] for c in ("class0", "class1", "class2")
    )


def test_reference_threshold_and_fallback():
    from datacheck.checks.splits import Reference

    ref = Reference(single={0: 0.6, 1: 0.62, 2: 0.9}, pairs=[((0, 1), 0.85), ((0, 2), 0.95), ((1, 2), 0.9)])
    threshold, single, merge = ref.threshold(2, fallback=0.8)
    assert (single, merge) == (0.61, 0.85) and threshold == pytest.approx((0.61 + 0.85) / 2)
    # never below another class's own separation
    assert ref.threshold(0, fallback=0.8)[0] == pytest.approx(max((0.62 + 0.9) / 2, 0.9))
    # two classes: no pair to learn from, the absolute fallback
    assert Reference(single={0: 0.6, 1: 0.7}, pairs=[]).threshold(0, fallback=0.8)[0] == 0.8


def test_stored_group_profiles_give_the_fresh_result_and_skip_unchanged_classes(tmp_path, monkeypatch):
    import dataclasses

    from datacheck.checks import splits as splits_module

    computed = []
    original = splits_module.separation_profile

    def counting(members, rows, cols, params):
        computed.append(len(members))
        return original(members, rows, cols, params)

    monkeypatch.setattr(splits_module, "separation_profile", counting)
    vectors, labels, logits, _ = _merged_dataset()
    fresh = splits(_context(vectors, labels, logits), SplitsParams()).to_dict()
    first_count = len(computed)
    stored_ctx = dataclasses.replace(_context(vectors, labels, logits), derived_dir=tmp_path)

    computed.clear()
    assert splits(stored_ctx, SplitsParams()).to_dict() == fresh
    assert len(computed) == first_count  # nothing stored yet
    computed.clear()
    assert splits(stored_ctx, SplitsParams()).to_dict() == fresh
    assert computed == []  # every group's profile read back

    # relabel ten cats as dogs: 'vehicle' (270) keeps its graph and is not clustered again, nor is the union
    # of cat and dog (the same 240 images); cat, dog and the pairs of vehicle with either are
    relabelled = labels.copy()
    relabelled[np.flatnonzero(labels == 1)[:10]] = 2
    computed.clear()
    again = splits(
        dataclasses.replace(_context(vectors, relabelled, logits), derived_dir=tmp_path), SplitsParams()
    )
    assert sorted(computed) == [110, 130, 380, 400] and first_count == 6
    assert again.to_dict() == splits(_context(vectors, relabelled, logits), SplitsParams()).to_dict()


def test_a_damaged_stored_profile_is_computed_again(tmp_path):
    import dataclasses

    vectors, labels, logits, _ = _merged_dataset()
    fresh = splits(_context(vectors, labels, logits), SplitsParams()).to_dict()
    ctx = dataclasses.replace(_context(vectors, labels, logits), derived_dir=tmp_path)
    splits(ctx, SplitsParams())
    for stored in (tmp_path / "splits").glob("*.npz"):  # valid archives that do not fit their groups
        np.savez(
            stored,
            k=np.array([2]),
            separation=np.array([0.5]),
            assignment0=np.zeros(3),
            distance0=np.zeros(3),
        )
    assert splits(ctx, SplitsParams()).to_dict() == fresh
