import numpy as np
import pytest

from datacheck.checks.base import Severity, Status
from datacheck.checks.labels import (
    C_GRID,
    LabelsParams,
    check_labels,
    choose_regularisation,
    feature_count,
    looks_mislabelled,
    neighbour_vote,
    score_labels,
)
from datacheck.params import ParamsError
from tests.factories import clustered_vectors, make_context

NAMES = ["cat", "dog", "fox", "owl"]


def _flipped(n_flips: int, counts=(60, 60, 60, 60), seed: int = 0):
    vectors, labels = clustered_vectors(list(counts), dim=32, spread=0.6, seed=seed)
    rng = np.random.default_rng(seed + 1)
    rows = rng.choice(len(labels), n_flips, replace=False)
    noisy = labels.copy()
    noisy[rows] = (labels[rows] + rng.integers(1, len(counts), n_flips)) % len(counts)
    return vectors, labels, noisy, rows


def test_planted_flips_are_found_with_the_right_suggestion():
    vectors, truth, noisy, rows = _flipped(12)
    ctx = make_context(vectors, noisy, class_names=NAMES)
    res = check_labels(ctx, LabelsParams())
    assert res.status is Status.WARN
    found = {ctx.paths.index(f.files[0]): f for f in res.findings}
    hits = set(found) & set(rows.tolist())
    assert len(hits) >= 10  # recall >= 83%
    assert len(found) - len(hits) <= 2  # precision
    for row in hits:
        f = found[row]
        assert f.kind == "label_issue" and f.severity is Severity.WARN
        assert f.extra["given"] == NAMES[noisy[row]] and f.extra["suggested"] == NAMES[truth[row]]
        assert f.files == (ctx.paths[row],)
        assert f"looks like '{NAMES[truth[row]]}'" in f.advice
    scores = [f.extra["score"] for f in res.findings]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert res.metrics["issues"] == len(res.findings)
    assert 0.9 < res.metrics["model_accuracy"] < 0.97


def test_clean_dataset_has_few_or_no_findings():
    vectors, labels = clustered_vectors([60, 60, 60, 60], dim=32, spread=0.6, seed=3)
    res = check_labels(make_context(vectors, labels, class_names=NAMES), LabelsParams())
    assert len(res.findings) <= 2
    assert res.metrics["model_accuracy"] > 0.98


def test_knn_vote_alone_and_model_alone_both_work():
    vectors, _, noisy, rows = _flipped(10, seed=0)
    ctx = make_context(vectors, noisy, class_names=NAMES)
    for params in (LabelsParams(knn_weight=0.0), LabelsParams(knn_weight=1.0)):
        found = {ctx.paths.index(f.files[0]) for f in check_labels(ctx, params).findings}
        assert len(found & set(rows.tolist())) >= 8


def test_skips_without_two_big_enough_classes():
    vectors, labels = clustered_vectors([40], dim=8)
    res = check_labels(make_context(vectors, labels), LabelsParams())
    assert res.status is Status.SKIPPED and "2 classes" in res.summary
    vectors, labels = clustered_vectors([30, 4], dim=8)
    assert check_labels(make_context(vectors, labels), LabelsParams()).status is Status.SKIPPED


def test_small_classes_are_left_out_not_fatal():
    vectors, _, noisy, _ = _flipped(0, counts=(60, 60, 60, 6))
    res = check_labels(make_context(vectors, noisy, class_names=NAMES), LabelsParams())
    assert res.status is not Status.SKIPPED
    assert res.metrics["classes_left_out"] == ["owl"] and res.metrics["images_checked"] == 180
    assert "not checked" in res.summary
    assert all(f.extra["suggested"] != "owl" and f.extra["given"] != "owl" for f in res.findings)


def test_max_findings_caps_the_list_not_the_count():
    vectors, _, noisy, _ = _flipped(12)
    res = check_labels(make_context(vectors, noisy, class_names=NAMES), LabelsParams(max_findings=3))
    assert len(res.findings) == 3 and res.metrics["issues"] >= 10


def test_neighbour_vote():
    indices = np.array([[1, 2], [0, -1], [0, 1]])
    sims = np.array([[0.9, 0.5], [0.9, 0.0], [0.5, 0.5]], np.float32)
    votes = neighbour_vote(indices, sims, np.array([0, 1, 1]), 2, np.array([0.0, 0.0]))
    np.testing.assert_allclose(votes, [[0, 1], [1, 0], [0.5, 0.5]])


def test_params_are_validated():
    with pytest.raises(ParamsError, match="folds must be at least 2, got 1"):
        LabelsParams(folds=1)
    with pytest.raises(ParamsError, match=r"knn_weight must be at most 1, got 1\.5"):
        LabelsParams(knn_weight=1.5)
    with pytest.raises(ParamsError, match=r"min_class_images must be at least folds \(10\), got 5"):
        LabelsParams(folds=10, min_class_images=5)
    with pytest.raises(ParamsError, match=r"filter_by must be one of prune_by_noise_rate, .*got 'nope'"):
        LabelsParams(filter_by="nope")
    with pytest.raises(ParamsError, match="ranking must be one of self_confidence"):
        LabelsParams(ranking="nope")
    with pytest.raises(ParamsError, match="min_margin must be greater than 0, got 0"):
        LabelsParams(min_margin=0)
    with pytest.raises(ParamsError, match="regularisation must be greater than 0"):
        LabelsParams(regularisation=0.0)
    with pytest.raises(ParamsError, match=r"prune_fraction must be at most 0\.5"):
        LabelsParams(prune_fraction=0.6)
    with pytest.raises(ParamsError, match="max_train_images must be 0 or at least 100, got 50"):
        LabelsParams(max_train_images=50)
    with pytest.raises(ParamsError, match="pca_dims must be at least 0, got -1; max_iter must be at least 1"):
        LabelsParams(pca_dims=-1, max_iter=0)  # every problem at once
    assert LabelsParams(max_train_images=0, regularisation=None).max_train_images == 0


def test_a_group_of_consistent_errors_is_found():
    """Six fox-like images (a little dog-like too) filed under 'dog', like the planted errors of ``shapes``.

    Confident learning alone keeps only 2 of them: each is less sure than the average fox, so its estimate
    of the number of errors falls short; the confident-disagreement margin recovers the rest.
    """
    vectors, labels = clustered_vectors([60, 60, 60, 60], dim=32, spread=0.6, seed=6)
    rng = np.random.default_rng(0)
    fox, dog = vectors[labels == 2].mean(axis=0), vectors[labels == 1].mean(axis=0)
    group = 0.7 * fox + 0.3 * dog + 0.6 * rng.standard_normal((6, 32)).astype(np.float32)
    ctx = make_context(np.vstack([vectors, group]), np.append(labels, [1] * 6), class_names=NAMES)
    planted = set(range(240, 246))
    res = check_labels(ctx, LabelsParams())
    found = {ctx.paths.index(f.files[0]): f.extra["suggested"] for f in res.findings}
    assert set(found) == planted and set(found.values()) == {"fox"}
    only_cleanlab = check_labels(ctx, LabelsParams(min_margin=1.0))
    assert len(planted & {ctx.paths.index(f.files[0]) for f in only_cleanlab.findings}) < 6


def test_feature_count_caps_by_dimensions_and_rows():
    assert feature_count(60_000, 256, 1280) == 256
    assert feature_count(3_000, 256, 1280) == 256  # unwhitened: small sets keep every useful component
    assert feature_count(40, 256, 1280) == 10  # never more than one per 4 rows
    assert feature_count(500, 0, 1280) == 125
    assert feature_count(60_000, 0, 1280) == 1280
    assert feature_count(60_000, 256, 64) == 64


def _confusable(seed: int, n: int = 150, dim: int = 64, pairs: int = 3, noise: float = 0.15):
    """Classes in look-alike pairs; labels flipped only to the partner, likelier near the partner.

    That is how people mislabel (cat/dog, car/truck), unlike uniform random flips. Rows are shuffled:
    files come in path order, not grouped by their true class.
    """
    rng = np.random.default_rng(seed)
    centres = []
    for _ in range(pairs):
        centre, offset = 1.5 * rng.standard_normal(dim), rng.standard_normal(dim)
        offset *= 0.5 * np.sqrt(dim) / 4 / np.linalg.norm(offset)
        centres += [centre + offset, centre - offset]
    centres = np.array(centres)
    truth = np.repeat(np.arange(2 * pairs), n)
    x = centres[truth] + rng.standard_normal((len(truth), dim))
    partner = truth ^ 1
    closer = np.linalg.norm(x - centres[truth], axis=1) - np.linalg.norm(x - centres[partner], axis=1)
    flipped = rng.random(len(truth)) < 2 * noise / (1 + np.exp(-closer))
    noisy = np.where(flipped, partner, truth)
    order = rng.permutation(len(truth))
    return x[order].astype(np.float32), truth[order], noisy[order]


def test_ranks_look_alike_errors_better_than_a_plain_out_of_fold_baseline():
    """The baseline a careful user writes: cleanlab's self-confidence over scikit-learn's default logistic
    regression, out of fold. The check (C from the data, pruned refit) must rank real-like errors better."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.model_selection import cross_val_predict

    check_ap, baseline_ap = [], []
    for seed in range(5):
        x, truth, noisy = _confusable(seed)
        wrong = truth != noisy
        ctx = make_context(x, noisy)
        scores = score_labels(ctx, LabelsParams())
        full = np.zeros(len(noisy))
        full[scores.rows] = scores.score
        check_ap.append(average_precision_score(wrong, full))
        probs = cross_val_predict(
            LogisticRegression(max_iter=1000), ctx.vectors, noisy, method="predict_proba"
        )
        baseline_ap.append(average_precision_score(wrong, 1 - probs[np.arange(len(noisy)), noisy]))
    assert np.mean(check_ap) > np.mean(baseline_ap), (check_ap, baseline_ap)


def test_looks_mislabelled_uses_each_class_s_own_confidence():
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 0])
    probs = np.array(
        [[0.95, 0.05], [0.95, 0.05], [0.95, 0.05], [0.3, 0.7], [0.3, 0.7], [0.4, 0.6], [0.2, 0.8], [0.5, 0.5]]
    )
    # thresholds: class 0's images hold 0 at 0.71 on average, class 1's hold 1 at 0.67
    wrong = looks_mislabelled(labels, probs)
    # row 6: labelled 0 at 0.2 (≤ 1 − 0.71) and 1 at 0.8 (≥ 0.67): mislabelled; row 7 (0.5 / 0.5): ambiguous
    assert wrong.tolist() == [False] * 6 + [True, False]


def test_summary_estimates_errors_and_ambiguous_findings_are_info():
    vectors, _, noisy, _ = _flipped(12)
    res = check_labels(make_context(vectors, noisy, class_names=NAMES), LabelsParams())
    m = res.metrics
    assert m["estimated_errors"] >= 1 and f"{m['estimated_errors']} label errors" in res.summary
    kinds = {f.kind: f.severity for f in res.findings}
    assert (
        kinds.get("label_issue") is Severity.WARN and kinds.get("ambiguous", Severity.INFO) is Severity.INFO
    )
    assert m["issues"] == sum(f.kind == "label_issue" for f in res.findings)
    assert m["ambiguous"] == sum(f.kind == "ambiguous" for f in res.findings)
    assert m["regularisation"] in C_GRID


def test_regularisation_fixed_or_chosen_from_the_grid():
    vectors, labels = clustered_vectors([60, 60, 60], dim=32, spread=0.6, seed=2)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert choose_regularisation(unit, labels, LabelsParams(regularisation=0.7)) == 0.7
    assert choose_regularisation(unit, labels, LabelsParams()) in C_GRID


def test_findings_do_not_depend_on_names_or_listing_order():
    """The same images and labels listed in another order under other names (a folder vs a shard or a table)
    give the same findings: folds are drawn in content order."""
    vectors, _, noisy, _ = _flipped(12, seed=4)
    hashes = [f"{i:064x}" for i in np.random.default_rng(5).permutation(len(noisy))]
    first = make_context(vectors, noisy, class_names=NAMES, file_sha256=hashes)
    order = np.random.default_rng(6).permutation(len(noisy))
    renamed = [f"shard-{j:03d}.tar/{i}.jpg" for j, i in enumerate(order)]
    second = make_context(
        vectors[order], noisy[order], class_names=NAMES, file_sha256=[hashes[i] for i in order], paths=renamed
    )
    by_content = {
        (f.kind, first.file_sha256[first.paths.index(f.files[0])], f.extra["suggested"], f.extra["score"])
        for f in check_labels(first, LabelsParams()).findings
    }
    assert len(by_content) >= 10
    assert by_content == {
        (f.kind, second.file_sha256[second.paths.index(f.files[0])], f.extra["suggested"], f.extra["score"])
        for f in check_labels(second, LabelsParams()).findings
    }
