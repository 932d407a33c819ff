import numpy as np
import pandas as pd
import pytest

from datacheck.checks.base import Severity, Status
from datacheck.checks.quality import QualityParams, check_quality, robust_z
from tests.factories import make_context

N = 200


def _normal_stats(
    n: int = N, seed: int = 0, brightness: float = 120.0, contrast: float = 50.0
) -> pd.DataFrame:
    """Plausible stats of ordinary photos (columns as ``ImageStats.as_row``)."""
    rng = np.random.default_rng(seed)
    contrast_values = np.clip(rng.normal(contrast, contrast / 5, n), 1.0, None)
    return pd.DataFrame(
        {
            "width": rng.choice([640, 600, 800], n),
            "height": rng.choice([480, 450, 600], n),
            "brightness": np.clip(rng.normal(brightness, brightness / 5, n), 0, 255),
            "contrast": contrast_values,
            "sharpness": contrast_values**2 * np.exp(rng.normal(-1.9, 0.4, n)),
            "entropy": np.clip(rng.normal(7.2, 0.25, n), 0, 8),
            "grayscale": np.zeros(n, bool),
            "saturation": rng.uniform(0.2, 0.6, n),
        }
    )


PLANTED = {  # row -> (issue, overrides)
    3: ("dark", {"brightness": 8.0, "contrast": 3.0, "sharpness": 2.0, "entropy": 2.5}),
    17: ("bright", {"brightness": 250.0, "contrast": 3.0, "sharpness": 3.0, "entropy": 3.0}),
    42: ("blurry", {"sharpness": 50.0**2 * 0.002, "contrast": 50.0}),
    77: ("low_information", {"brightness": 200.0, "contrast": 1.5, "sharpness": 0.5, "entropy": 2.4}),
    101: ("tiny", {"width": 12, "height": 12}),
    150: ("odd_aspect", {"width": 1600, "height": 300, "sharpness": 50.0**2 * 0.002}),  # upscaled: soft
    199: ("grayscale", {"grayscale": True}),
}


def _planted_stats() -> pd.DataFrame:
    stats = _normal_stats()
    for row, (_, overrides) in PLANTED.items():
        for column, value in overrides.items():
            stats.loc[row, column] = value
    return stats


def _ctx(stats: pd.DataFrame):
    n = len(stats)
    vectors = np.random.default_rng(1).standard_normal((n, 8)).astype(np.float32)
    return make_context(vectors, np.arange(n) % 2, class_names=["cat", "dog"], stats=stats)


def test_planted_problems_are_found_once_each_and_nothing_else():
    ctx = _ctx(_planted_stats())
    res = check_quality(ctx, QualityParams())
    found = {(ctx.paths.index(f.files[0]), f.kind) for f in res.findings}
    assert found == {(row, issue) for row, (issue, _) in PLANTED.items()}
    by_kind = {f.kind: f for f in res.findings}
    assert by_kind["grayscale"].severity is Severity.INFO
    assert all(f.severity is Severity.WARN for f in res.findings if f.kind != "grayscale")
    assert res.status is Status.WARN
    assert all(f.extra["score"] > 0 and f.extra["issue"] == f.kind for f in res.findings)
    assert "12x12" in by_kind["tiny"].message
    assert res.metrics["counts"]["dark"] == 1 and res.metrics["images_flagged"] == len(PLANTED)


def test_uniformly_fine_dataset_yields_nothing():
    res = check_quality(_ctx(_normal_stats(seed=5)), QualityParams())
    assert res.status is Status.PASS and not res.findings
    assert "no quality problems" in res.summary


def test_dark_dataset_is_not_all_dark_but_its_black_frame_is():
    stats = _normal_stats(brightness=25.0, contrast=4.0, seed=2)
    stats.loc[0, ["brightness", "contrast"]] = [0.5, 0.3]
    res = check_quality(_ctx(stats), QualityParams())
    dark = [f for f in res.findings if f.kind == "dark"]
    assert len(dark) <= 3 and dark[0].files == (_ctx(stats).paths[0],)


def test_grayscale_not_reported_in_a_grayscale_dataset():
    stats = _normal_stats()
    stats["grayscale"] = np.arange(N) % 2 == 0
    res = check_quality(_ctx(stats), QualityParams())
    assert not [f for f in res.findings if f.kind == "grayscale"]
    assert res.metrics["grayscale_fraction"] == pytest.approx(0.5)


def test_cap_per_issue_keeps_counts_and_worst_first():
    stats = _normal_stats()
    stats.loc[[5, 6, 7], "width"] = [4, 6, 2]
    stats.loc[[5, 6, 7], "height"] = [4, 6, 2]
    res = check_quality(_ctx(stats), QualityParams(max_findings_per_issue=2))
    tiny = [f for f in res.findings if f.kind == "tiny"]
    assert len(tiny) == 2 and res.metrics["counts"]["tiny"] == 3
    assert tiny[0].files[0].endswith("img00007.jpg")  # the 2x2 one is the worst


def test_missing_stats_skip_and_partial_columns_work():
    vectors = np.zeros((4, 3), np.float32) + 1
    assert check_quality(make_context(vectors, [0, 0, 1, 1]), QualityParams()).status is Status.SKIPPED
    stats = _planted_stats()[["width", "height"]]
    res = check_quality(_ctx(stats), QualityParams())
    assert {f.kind for f in res.findings} == {"tiny", "odd_aspect"}
    assert res.metrics["checked"] == ["odd_aspect", "tiny"]


def test_robust_z():
    z = robust_z(np.array([1.0, 2.0, 3.0, 4.0, 100.0, np.nan]))
    assert z[2] == 0 and z[4] > 30 and np.isnan(z[5])
    assert np.all(robust_z(np.ones(5), 0.5) == 0)


def test_params_are_validated():
    with pytest.raises(ValueError, match="z_threshold must be greater than 0"):
        QualityParams(z_threshold=0)
    with pytest.raises(ValueError, match="dark_max_luma must be less than bright_min_luma"):
        QualityParams(dark_max_luma=230)
    with pytest.raises(ValueError, match="tiny_fraction must be at most 1"):
        QualityParams(tiny_fraction=1.5)
    with pytest.raises(ValueError, match="aspect_factor must be at least 1"):
        QualityParams(aspect_factor=0.5)
