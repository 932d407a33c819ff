import numpy as np
import pytest

from datacheck.checks.balance import BalanceParams, check_balance
from datacheck.checks.base import Severity, Status
from datacheck.params import ParamsError
from tests.factories import make_context


def _ctx(counts: dict[str, dict[str, int]] | dict[str, int]):
    """A context with the given images per class (``{class: n}``) or per split (``{split: {class: n}}``)."""
    nested = counts if isinstance(next(iter(counts.values())), dict) else {None: counts}
    names = sorted({c for per in nested.values() for c in per})
    labels, splits = [], []
    for split, per in nested.items():
        for cls, n in per.items():
            labels += [names.index(cls)] * n
            splits += [split] * n
    vectors = np.random.default_rng(0).standard_normal((len(labels), 4)).astype(np.float32)
    return make_context(
        vectors, labels, class_names=names, splits=splits if nested.keys() != {None} else None
    )


def _kinds(res):
    return sorted((f.kind, f.severity.value, f.extra.get("class")) for f in res.findings)


def test_balanced_dataset_passes():
    res = check_balance(_ctx({"cat": 150, "dog": 160, "fox": 140}), BalanceParams())
    assert res.status is Status.PASS and not res.findings
    assert res.metrics["class_counts"] == {"cat": 150, "dog": 160, "fox": 140}
    assert res.metrics["imbalance_ratio"] == pytest.approx(160 / 140)


def test_soft_and_hard_minimums_with_advice():
    res = check_balance(_ctx({"cat": 150, "dog": 40, "fox": 12}), BalanceParams())
    assert res.status is Status.FAIL
    found = {f.extra["class"]: f for f in res.findings if f.kind == "too_few_images"}
    assert found["fox"].severity is Severity.FAIL and found["dog"].severity is Severity.WARN
    assert "cat" not in found
    assert "collect at least 60 more 'dog' images" in found["dog"].advice.lower()
    assert "collect at least 8 more 'fox' images" in found["fox"].advice.lower()
    assert len(found["fox"].files) == 12 and all(
        "/fox/" in f or f.startswith("fox/") for f in found["fox"].files
    )


def test_imbalance_ratio():
    res = check_balance(_ctx({"cat": 2500, "dog": 200}), BalanceParams())
    (finding,) = [f for f in res.findings if f.kind == "imbalance"]
    assert finding.extra["ratio"] == pytest.approx(12.5) and finding.extra["smallest"] == "dog"
    assert "collect at least 50 more 'dog' images" in finding.advice.lower()
    assert res.status is Status.WARN
    assert (
        check_balance(_ctx({"cat": 2500, "dog": 200}), BalanceParams(max_imbalance=20)).status is Status.PASS
    )


def test_splits_missing_classes_and_eval_minimum():
    counts = {
        "train": {"cat": 400, "dog": 400, "fox": 400},
        "test": {"cat": 50, "dog": 4, "owl": 30},  # fox never tested, owl never trained, only 4 test dogs
    }
    res = check_balance(_ctx(counts), BalanceParams())
    kinds = _kinds(res)
    assert ("missing_class", "fail", "owl") in kinds
    assert ("missing_class", "warn", "fox") in kinds
    assert ("too_few_eval_images", "warn", "dog") in kinds
    assert not any(k == "too_few_images" for k, *_ in kinds)  # owl is reported as missing, not as too few
    owl = next(f for f in res.findings if f.extra.get("class") == "owl")
    assert len(owl.files) == 30 and all(f.startswith("test/owl/") for f in owl.files)
    assert res.findings[0].severity is Severity.FAIL
    assert res.metrics["split_counts"]["test"]["fox"] == 0
    assert res.metrics["smallest_class_count"] == 0  # owl has no training images


def test_minimums_use_the_training_split_only():
    res = check_balance(
        _ctx({"train": {"cat": 150, "dog": 15}, "test": {"cat": 30, "dog": 90}}), BalanceParams()
    )
    dog = next(f for f in res.findings if f.kind == "too_few_images")
    assert dog.extra == {"class": "dog", "split": "train", "count": 15, "minimum": 20}
    assert all(f.startswith("train/dog/") for f in dog.files)


def test_split_fractions():
    good = check_balance(
        _ctx({"train": {"a": 400, "b": 400}, "val": {"a": 50, "b": 50}, "test": {"a": 50, "b": 50}}),
        BalanceParams(),
    )
    assert good.status is Status.PASS and good.metrics["split_fractions"]["test"] == pytest.approx(0.1)
    bad = check_balance(_ctx({"train": {"a": 300, "b": 300}, "test": {"a": 300, "b": 300}}), BalanceParams())
    fractions = {f.extra["split"] for f in bad.findings if f.kind == "split_fraction"}
    assert fractions == {"test"}  # train holds exactly 50%: allowed
    tiny = check_balance(_ctx({"train": {"a": 990, "b": 990}, "test": {"a": 10, "b": 10}}), BalanceParams())
    assert any(f.kind == "split_fraction" and f.extra["split"] == "test" for f in tiny.findings)


def test_single_class_fails():
    res = check_balance(_ctx({"cat": 300}), BalanceParams())
    assert res.status is Status.FAIL and res.findings[0].kind == "single_class"


def test_params_are_validated():
    with pytest.raises(ParamsError, match=r"hard_min_images must be at most min_images \(100\), got 200"):
        BalanceParams(hard_min_images=200, min_images=100)
    with pytest.raises(ParamsError, match="hard_min_images must be at least 0, got -1"):
        BalanceParams(hard_min_images=-1)
    with pytest.raises(ParamsError, match=r"max_imbalance must be at least 1, got 0\.5"):
        BalanceParams(max_imbalance=0.5)
    with pytest.raises(ParamsError, match="min_eval_images must be at least 0"):
        BalanceParams(min_eval_images=-1)
    with pytest.raises(ParamsError, match="min_train_fraction must be at most 1"):
        BalanceParams(min_train_fraction=1.5)
    for bad in [(0.5, 0.2), (0.1, 1.5), (0.1, 0.2, 0.3), ("a", "b"), 0.3]:
        with pytest.raises(ParamsError, match="heldout_fraction must be"):
            BalanceParams(heldout_fraction=bad)
    with pytest.raises(ParamsError, match="train_split must be a split name"):
        BalanceParams(train_split="")
    assert BalanceParams(heldout_fraction=[0.1, 0.3]).heldout_fraction == (0.1, 0.3)
    assert BalanceParams(heldout_fraction=(0, 1)).heldout_fraction == (0.0, 1.0)
    assert BalanceParams(hard_min_images=0, min_images=0).min_images == 0
