"""The gate rule on synthetic results: limits decide when set, baselines forgive old findings."""

from datacheck.checks.base import CheckResult, Finding, Severity, Status, result
from datacheck.gate import Baseline, GatePolicy, evaluate


def _leak(a: str, b: str) -> Finding:
    return Finding("leak", Severity.FAIL, "copy across splits", "keep one", (a, b))


def test_limits_replace_the_severity_rule_for_their_check():
    leakage = result(
        "leakage", "2 pairs", [_leak("a", "b"), _leak("c", "d")], {"pairs": 2, "same_photo_pairs": 2}
    )
    assert not evaluate([leakage]).passed  # default max_leak_pairs = 0
    assert evaluate([leakage], policy=GatePolicy(max_leak_pairs=2)).passed
    verdict = evaluate([leakage], policy=GatePolicy(max_leak_pairs=1))
    assert verdict.violations[0]["rule"] == "max_leak_pairs" and verdict.violations[0]["value"] == 2


def test_nested_metrics_and_minimums():
    files = result(
        "files",
        "1 unreadable",
        [Finding("unreadable", Severity.FAIL, "m", "a", ("x.jpg",))],
        {"counts": {"unreadable": 1}},
    )
    balance = CheckResult("balance", Status.PASS, "ok", {"smallest_class_count": 12, "imbalance_ratio": 3.0})
    assert not evaluate([files]).passed
    assert evaluate([files], policy=GatePolicy(max_unreadable=1)).passed
    assert evaluate([balance]).passed
    verdict = evaluate([balance], policy=GatePolicy(min_images_per_class=20, max_imbalance_ratio=2.0))
    assert {v["rule"] for v in verdict.violations} == {"min_images_per_class", "max_imbalance_ratio"}


def test_baseline_forgives_by_content_hash_and_fractions_may_not_grow():
    old_doc = {
        "map": {"path": ["train/a.png", "test/b.png"], "sha256": ["h1", "h2"]},
        "checks": [
            {
                "id": "leakage",
                "findings": [{"kind": "leak", "files": ["train/a.png", "test/b.png"]}],
                "metrics": {"pairs": 1, "same_photo_pairs": 1},
            },
            {"id": "duplicates", "findings": [], "metrics": {"duplicate_fraction": 0.10}},
        ],
    }
    baseline = Baseline.from_report(old_doc, "old.json")
    renamed = result(
        "leakage", "1 pair", [_leak("train/a2.png", "test/b2.png")], {"pairs": 1, "same_photo_pairs": 1}
    )
    hashes = {"train/a2.png": "h1", "test/b2.png": "h2", "test/c.png": "h3"}
    verdict = evaluate([renamed], hashes=hashes, baseline=baseline)
    assert verdict.passed and verdict.forgiven == 1
    new = result(
        "leakage",
        "2 pairs",
        [_leak("train/a2.png", "test/b2.png"), _leak("train/a2.png", "test/c.png")],
        {"pairs": 2, "same_photo_pairs": 2},
    )
    assert not evaluate([new], hashes=hashes, baseline=baseline).passed
    dup = CheckResult("duplicates", Status.WARN, "s", {"duplicate_fraction": 0.08})
    policy = GatePolicy(max_duplicate_fraction=0.05)
    assert not evaluate([dup], policy=policy).passed
    assert evaluate([dup], policy=policy, hashes=hashes, baseline=baseline).passed  # not worse than before
    worse = CheckResult("duplicates", Status.WARN, "s", {"duplicate_fraction": 0.12})
    assert not evaluate([worse], policy=policy, hashes=hashes, baseline=baseline).passed


def test_crashed_check_always_fails_the_gate():
    crashed = CheckResult("labels", Status.ERROR, "the check crashed: boom")
    verdict = evaluate([crashed], policy=GatePolicy(max_label_issue_fraction=1.0))
    assert not verdict.passed and verdict.violations[0]["rule"] == "crashed"
