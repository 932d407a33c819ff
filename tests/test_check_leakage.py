"""The ``leakage`` check: duplicates across splits, reported per pair with the right splits."""

from __future__ import annotations

import json

import pytest

from datacheck.checks.base import Severity, Status, registered
from datacheck.checks.duplicates import DuplicatesParams, check_duplicates
from datacheck.checks.leakage import LeakageParams, check_leakage
from datacheck.neardup import duplicate_pairs
from datacheck.params import ParamsError
from tests.test_check_duplicates import Planted
from tests.test_neardup import flipped, shifted


@pytest.fixture(scope="module")
def leaky():
    p = Planted(30, seed=31)  # rows 0..29: train
    rows = {
        "test_exact": p.copy(0),
        "test_shifted": p.copy(1, shifted(p.thumbs[1], -2, 2)),
        "train_flipped": p.copy(2, flipped(p.thumbs[2])),  # a duplicate inside train: not a leak
        "test_look_alike": p.look_alike(3, seed=301),
    }
    for k in range(6):
        p.look_alike(10 + k, seed=310 + k)  # distinct test images
    splits = ["train"] * 30 + ["test", "test", "train", "test"] + ["test"] * 6
    ctx = p.context(splits=splits)
    return ctx, rows, check_leakage(ctx, LeakageParams())


def test_leak_pairs_with_their_splits(leaky):
    ctx, rows, res = leaky
    assert res.status is Status.FAIL
    found = {(f.files, f.extra["match"]) for f in res.findings}
    assert found == {
        ((ctx.paths[rows["test_exact"]], ctx.paths[0]), "exact"),
        ((ctx.paths[rows["test_shifted"]], ctx.paths[1]), "near"),
    }
    for f in res.findings:
        assert f.kind == "leak" and f.severity is Severity.FAIL
        assert f.extra["splits"] == ["test", "train"]
        assert f.files[0].startswith("test/") and f.files[1].startswith("train/")
        assert f.advice == "Keep one copy, or move both into the same split."
        assert f.extra["score"] >= LeakageParams().min_score and f.extra["similarity"] >= 0.5
    assert res.findings[0].extra["match"] == "exact"  # strongest first


def test_metrics(leaky):
    _, _, res = leaky
    m = res.metrics
    assert m["pairs"] == 2 and m["pairs_by_splits"] == {"test/train": 2}
    assert m["test_images_leaked"] == 2 and m["test_fraction_leaked"] == pytest.approx(2 / 9)
    assert m["leaked_images"] == {"test": 2, "train": 2}
    assert "2 pairs of the same photo across splits" in res.summary and "22.2%" in res.summary
    assert m["same_photo_pairs"] == 2 and m["pairs_by_judgement"]["look_alike"] == 0
    json.dumps(res.to_dict())


def test_agrees_with_the_duplicates_check(leaky):
    ctx, _, res = leaky
    pairs = duplicate_pairs(ctx, LeakageParams())
    assert pairs is duplicate_pairs(ctx, DuplicatesParams())  # one computation, one definition
    row = {p: i for i, p in enumerate(ctx.paths)}
    groups = [{row[f] for f in g.files} for g in check_duplicates(ctx, DuplicatesParams()).findings]
    for leak in res.findings:
        a, b = (row[f] for f in leak.files)
        assert any({a, b} <= g for g in groups)


def test_no_splits_passes():
    p = Planted(10, seed=4)
    p.copy(0)
    res = check_leakage(p.context(), LeakageParams())
    assert res.status is Status.PASS and res.summary == "no splits" and not res.findings


def test_clean_splits_pass():
    p = Planted(20, seed=5)
    p.copy(0, flipped(p.thumbs[0]))  # duplicate within train only
    res = check_leakage(p.context(splits=["train"] * 15 + ["test"] * 5 + ["train"]), LeakageParams())
    assert res.status is Status.PASS and not res.findings
    assert res.summary == "no image appears in more than one split"
    assert res.metrics["test_images_leaked"] == 0


def test_an_exact_copy_in_three_splits():
    p = Planted(12, seed=6)
    val, test = p.copy(0), p.copy(0)
    splits = ["train"] * 12 + ["val", "test"]
    ctx = p.context(splits=splits)
    res = check_leakage(ctx, LeakageParams(max_findings=2))
    assert res.metrics["pairs_by_splits"] == {"test/train": 1, "test/val": 1, "train/val": 1}
    assert res.metrics["leaked_images"] == {"test": 1, "train": 1, "val": 1}
    assert len(res.findings) == 2 and "first 2 pairs listed" in res.summary
    assert {tuple(f.extra["splits"]) for f in res.findings} <= {
        ("test", "train"),
        ("test", "val"),
        ("train", "val"),
    }
    assert res.status is Status.FAIL
    assert check_leakage(ctx, LeakageParams(test_split="val")).metrics["test_images_leaked"] == 1
    assert ctx.paths[val].startswith("val/") and ctx.paths[test].startswith("test/")


def test_registered():
    spec = registered()["leakage"]
    assert spec.params_type is LeakageParams
    assert spec.make_params({"min_score": 0.85, "test_split": "val"}).near_params().min_score == 0.85
    with pytest.raises(ParamsError, match="max_findings must be at least 0, got -1"):
        spec.make_params({"max_findings": -1})
    with pytest.raises(ParamsError, match="min_cosine must be at most 1"):  # inherited from NearDupParams
        LeakageParams(min_cosine=1.5)
