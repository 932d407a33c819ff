"""``diversity``: a class far narrower than the others is reported; equally varied classes are not."""

import numpy as np
import pytest

from datacheck.checks.base import Status
from datacheck.checks.diversity import DiversityParams, diversity, effective_rank
from datacheck.params import ParamsError
from tests.factories import make_context


def _blobs(spreads, n=80, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(spreads), dim)) * 2
    vectors = np.concatenate(
        [c + s * rng.standard_normal((n, dim)) for c, s in zip(centres, spreads, strict=True)]
    )
    return vectors, np.repeat(np.arange(len(spreads)), n)


def test_narrow_class_is_reported():
    vectors, labels = _blobs([1.0, 1.0, 1.0, 0.15])
    ctx = make_context(vectors, labels, class_names=["airplane", "bird", "dog", "cat"])
    res = diversity(ctx, DiversityParams())
    assert [f.extra["class"] for f in res.findings] == ["cat"], res.summary
    finding = res.findings[0]
    assert finding.kind == "low_diversity" and finding.extra["ratio"] < 0.35 and finding.severity == "fail"
    assert finding.extra["effective_rank"] > 0  # shape, not size: an isotropic narrow blob has a normal rank
    assert len(finding.files) == 8 and all("/cat/" in f or f.startswith("cat/") for f in finding.files)


def test_equally_varied_classes_pass():
    vectors, labels = _blobs([1.0, 0.9, 1.1, 1.0])
    res = diversity(make_context(vectors, labels), DiversityParams())
    assert res.status is Status.PASS and res.findings == ()
    assert set(res.metrics["spread"]) == {"class0", "class1", "class2", "class3"}


def test_single_class_is_skipped():
    vectors, labels = _blobs([1.0])
    assert diversity(make_context(vectors, labels), DiversityParams()).status is Status.SKIPPED


def test_effective_rank_counts_directions():
    rng = np.random.default_rng(0)
    flat = np.zeros((200, 10))
    flat[:, :3] = rng.standard_normal((200, 3))
    assert effective_rank(flat) == pytest.approx(3.0, rel=0.1)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            {"narrow_ratio": 0.2, "fail_ratio": 0.3},
            r"fail_ratio must be at most narrow_ratio \(0\.2\), got 0\.3",
        ),
        ({"fail_ratio": 0}, "fail_ratio must be greater than 0, got 0"),
        ({"narrow_ratio": 1}, "narrow_ratio must be less than 1, got 1"),
        ({"min_class_size": 1}, "min_class_size must be at least 2, got 1"),
        ({"rank_sample": 1}, "rank_sample must be at least 2, got 1"),
        ({"n_examples": -1}, "n_examples must be at least 0, got -1"),
    ],
)
def test_params_are_validated(bad, message):
    with pytest.raises(ParamsError, match=message):
        DiversityParams(**bad)
    assert DiversityParams(narrow_ratio=0.3, fail_ratio=0.3).fail_ratio == 0.3
