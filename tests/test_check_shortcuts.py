"""``shortcuts``: planted global and local cues are found and named; a clean control stays quiet."""

import numpy as np
import pandas as pd
import pytest

from datacheck.checks.base import Status
from datacheck.checks.shortcuts import ShortcutsParams, shortcuts
from datacheck.probes import cv
from datacheck.probes.regions import CENTRE, ThumbGrid, cell_name, outer_regions
from tests.factories import clustered_vectors, make_context

N_PER_CLASS = 80
CLASSES = ["airplane", "cat", "dog", "frog"]


def _thumbs(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth random backgrounds with a class-tinted 'object' in the centre (a fairly predictive centre)."""
    n = len(labels)
    coarse = rng.integers(40, 215, (n, 4, 4, 3)).astype(np.float32)
    thumbs = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2) + rng.normal(0, 12, (n, 32, 32, 3))
    tints = np.array([[30, 0, -30], [-20, 25, 0], [0, -25, 25], [20, 20, -40]], dtype=np.float32)
    thumbs[:, 10:22, 10:22] += tints[labels][:, None, None, :] + rng.normal(0, 25, (n, 1, 1, 3))
    return np.clip(thumbs, 0, 255).astype(np.uint8)


def _stats(labels: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Image stats with a natural class difference: frogs are greener (AUC ≈ 0.75, not a shortcut)."""
    n = len(labels)
    green = np.where(labels == 3, 15.0, 0.0)
    return pd.DataFrame(
        {
            "width": np.full(n, 32),
            "height": np.full(n, 32),
            "format": ["JPEG"] * n,
            "file_size": rng.normal(1000, 150, n).round().astype(int),
            "brightness": rng.normal(120, 30, n),
            "contrast": rng.normal(50, 12, n),
            "saturation": rng.uniform(0.1, 0.5, n),
            "mean_r": rng.normal(120, 20, n),
            "mean_g": rng.normal(120, 20, n) + green,
            "mean_b": rng.normal(115, 20, n),
            "sharpness": rng.lognormal(4, 0.5, n),
            "entropy": rng.normal(7, 0.3, n),
            "grayscale": np.zeros(n, bool),
            "jpeg_quality": np.full(n, 75),
            "camera": [None] * n,
        }
    )


def _dataset(seed: int = 0):
    vectors, labels = clustered_vectors([N_PER_CLASS] * len(CLASSES), dim=32, spread=0.6, seed=seed)
    rng = np.random.default_rng(seed)
    return vectors, labels, _stats(labels, rng), _thumbs(labels, rng)


def _stamp(thumbs: np.ndarray, rows: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """A fixed black-and-white 5×8 'logo' blended into the bottom-right corner."""
    pattern = np.random.default_rng(42).random((5, 8)) < 0.5
    out = thumbs.astype(np.float32).copy()
    logo = np.where(pattern[..., None], 255.0, 0.0)
    out[np.ix_(rows, range(26, 31), range(23, 31))] = (
        alpha * logo + (1 - alpha) * out[np.ix_(rows, range(26, 31), range(23, 31))]
    )
    return out.clip(0, 255).astype(np.uint8)


def _run(vectors, labels, stats, thumbs, **params):
    ctx = make_context(vectors, labels, class_names=CLASSES, stats=stats, thumbs=thumbs)
    return shortcuts(ctx, ShortcutsParams(**params))


def _cues(res) -> dict[str, list[str]]:
    return {f.extra["cue"]: f.extra["classes"] for f in res.findings}


def test_clean_control_stays_quiet():
    res = _run(*_dataset())
    assert res.status is Status.PASS, res.summary
    assert res.findings == ()
    assert res.metrics["baseline"] == pytest.approx(0.25)
    assert res.metrics["property_accuracy"]["colour cast"] < 0.5  # frogs are greener, and that is fine


def test_planted_global_cue_is_found_and_named():
    vectors, labels, stats, thumbs = _dataset()
    stats.loc[labels == 1, "brightness"] += 110  # every cat photo taken in bright sun
    res = _run(vectors, labels, stats, thumbs)
    cues = _cues(res)
    assert cues.get("brightness") == ["cat"], res.summary
    finding = next(f for f in res.findings if f.extra["cue"] == "brightness")
    assert finding.extra["accuracy"] > finding.extra["baseline"] == pytest.approx(0.25)
    assert "cat images are" in finding.extra["effect"] and "brighter" in finding.extra["effect"]
    assert finding.files and all("/cat/" in f or f.startswith("cat/") for f in finding.files)
    assert finding.severity in ("warn", "fail") and finding.advice
    assert "colour cast" not in cues


def test_planted_local_cue_is_found_in_its_corner():
    vectors, labels, stats, thumbs = _dataset()
    thumbs = _stamp(thumbs, np.flatnonzero(labels == 2))
    res = _run(vectors, labels, stats, thumbs)
    cues = _cues(res)
    assert cues.get("corner:bottom-right") == ["dog"], res.summary
    finding = next(f for f in res.findings if f.extra["cue"] == "corner:bottom-right")
    assert finding.extra["auc"]["dog"] > 0.95 > finding.extra["centre_auc"]["dog"]
    assert "bottom-right corner" in finding.message
    assert finding.severity == "fail"  # AUC above fail_auc


def test_unintended_property_is_flagged_at_a_lower_strength():
    vectors, labels, stats, thumbs = _dataset()
    rng = np.random.default_rng(3)
    png = np.where(labels == 3, rng.random(len(labels)) < 0.85, rng.random(len(labels)) < 0.05)
    stats["format"] = np.where(png, "PNG", "JPEG")
    res = _run(vectors, labels, stats, thumbs)
    finding = next(f for f in res.findings if f.extra["cue"] == "file format")
    assert finding.extra["classes"] == ["frog"]
    assert "PNG" in finding.extra["effect"]


def test_fail_threshold_is_configurable():
    vectors, labels, stats, thumbs = _dataset()
    stats.loc[labels == 1, "brightness"] += 110
    strict = _run(vectors, labels, stats, thumbs, fail_auc=0.5)
    assert strict.status is Status.FAIL
    lenient = _run(vectors, labels, stats, thumbs, fail_auc=1.0)
    assert lenient.status is Status.WARN


def test_tiny_or_single_class_is_skipped():
    vectors, labels = clustered_vectors([5], dim=8)
    res = shortcuts(make_context(vectors, labels), ShortcutsParams())
    assert res.status is Status.SKIPPED


def test_without_stats_or_thumbs_it_passes_quietly():
    vectors, labels = clustered_vectors([30, 30], dim=8)
    res = shortcuts(make_context(vectors, labels), ShortcutsParams())
    assert res.status is Status.PASS and res.metrics["region_rows"] == 0


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"n_folds": 1}, "n_folds must be at least 2"),
        ({"content_auc": 0.3}, "content_auc must be at least 0.5"),
        ({"fail_auc": 1.1}, "fail_auc must be at most 1"),
        ({"region_excess": -0.1}, "region_excess must be at least 0"),
        ({"min_class_size": 1}, "min_class_size must be at least 2"),
    ],
)
def test_params_are_validated(bad, message):
    with pytest.raises(ValueError, match=message):
        ShortcutsParams(**bad)


def test_region_names_and_descriptors():
    assert cell_name(3, 3) == ("corner:bottom-right", "the bottom-right corner")
    assert cell_name(0, 1)[0] == "edge:top-centre-left"
    regions = outer_regions()
    assert len({r.name for r in regions}) == 14
    thumbs = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    grid = ThumbGrid(thumbs)
    assert CENTRE.describe(grid).shape == (5, 52)
    assert all(r.describe(grid).shape[0] == 5 for r in regions)
    np.testing.assert_allclose(
        grid.cell_mean[:, 0, 0], thumbs[:, :8, :8].astype(float).mean(axis=(1, 2)), rtol=1e-5
    )


def test_ovr_auc_and_naive_bayes_basics():
    labels = np.array([0] * 50 + [1] * 50)
    perfect = np.stack([1.0 - labels, labels.astype(float)], axis=1)
    auc = cv.ovr_auc(perfect, labels, 2)
    assert auc.auc == pytest.approx([1.0, 1.0]) and np.all(auc.lower > 0.9)
    codes = labels[:, None].copy()
    scores = cv.cross_val_scores(codes, labels, 2, cv.binned_naive_bayes, cv.stratified_folds(labels, 3))
    assert cv.accuracy(scores, labels) == 1.0


def test_only_the_training_split_is_probed():
    vectors, labels, stats, thumbs = _dataset()
    splits = np.where(np.arange(len(labels)) % 4 == 0, "test", "train")
    thumbs = _stamp(thumbs, np.flatnonzero((labels == 2) & (splits == "train")))  # test dogs are clean
    ctx = make_context(vectors, labels, class_names=CLASSES, stats=stats, thumbs=thumbs, splits=list(splits))
    res = shortcuts(ctx, ShortcutsParams())
    assert res.metrics["probed_images"] == int((splits == "train").sum())
    finding = next(f for f in res.findings if f.extra["cue"] == "corner:bottom-right")
    assert all(path.startswith("train/") for path in finding.files)
