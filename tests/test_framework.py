import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import pytest

from datacheck import gate
from datacheck.checks.base import CheckResult, CheckSpec, Finding, Severity, Status, result
from datacheck.report import SCHEMA_VERSION, Report
from datacheck.runner import run_checks, run_one
from tests.factories import clustered_vectors, make_context


@dataclass(frozen=True)
class _Params:
    threshold: float = 0.5


def _finds_class0(ctx, params: _Params) -> CheckResult:
    files = [p for p, label in zip(ctx.paths, ctx.labels, strict=True) if label == 0][:2]
    finding = Finding(
        "demo", Severity.WARN, "class0 is odd", "look at class0", tuple(files), {"score": np.float32(0.25)}
    )
    return result("demo", "one finding", [finding], {"n": np.int64(ctx.n), "ratio": 1 / 3})


def _crashes(ctx, params: _Params) -> CheckResult:
    raise RuntimeError("boom")


@pytest.fixture
def ctx():
    vectors, labels = clustered_vectors([10, 12], dim=16)
    return make_context(vectors, labels, class_names=["cat", "dog"])


def test_status_follows_worst_severity():
    info = Finding("a", Severity.INFO, "m", "a")
    warn = Finding("b", Severity.WARN, "m", "a")
    fail = Finding("c", Severity.FAIL, "m", "a")
    assert result("x", "s", []).status is Status.PASS
    assert result("x", "s", [info]).status is Status.PASS
    assert result("x", "s", [info, warn]).status is Status.WARN
    assert result("x", "s", [warn, fail]).status is Status.FAIL


def test_crashing_check_becomes_error_and_others_still_run(ctx, caplog):
    specs = [CheckSpec("crash", _crashes, _Params, ""), CheckSpec("demo", _finds_class0, _Params, "")]
    start = time.perf_counter()
    with caplog.at_level(logging.ERROR):
        results = run_checks(ctx, specs, {"crash": _Params(), "demo": _Params()})
    elapsed = time.perf_counter() - start
    assert [r.status for r in results] == [Status.ERROR, Status.WARN]
    assert "boom" in results[0].summary
    assert "Traceback" in caplog.text or "boom" in caplog.text
    assert 0 < results[1].seconds <= elapsed  # each check's own time, within the whole run


def test_unknown_params_are_named():
    spec = CheckSpec("demo", _finds_class0, _Params, "")
    assert spec.make_params({"threshold": 0.9}).threshold == 0.9
    with pytest.raises(KeyError, match="thresold"):
        spec.make_params({"thresold": 0.9})


def test_report_json_matches_schema(ctx):
    res = run_one(ctx, CheckSpec("demo", _finds_class0, _Params, ""), _Params())
    report = Report(
        dataset={
            "root": "/d",
            "layout": "classes",
            "images": 22,
            "unreadable": 0,
            "classes": {},
            "splits": {},
        },
        embedding={"model": "test"},
        checks=(res,),
        gate=gate.evaluate([res]),
    )
    doc = json.loads(report.to_json())
    assert doc["schema_version"] == SCHEMA_VERSION == 1
    assert doc["tool"]["name"] == "datacheck"
    assert set(doc) >= {"dataset", "embedding", "checks", "gate"}
    check = doc["checks"][0]
    assert check["status"] == "warn" and check["metrics"] == {"n": 22, "ratio": 0.3333}
    finding = check["findings"][0]
    assert finding == {
        "kind": "demo",
        "severity": "warn",
        "message": "class0 is odd",
        "advice": "look at class0",
        "files": ["cat/img00000.jpg", "cat/img00001.jpg"],
        "score": 0.25,
    }
    assert doc["gate"] == {"passed": True, "fail_on": "fail", "violations": []}
    frame = report.findings("demo")
    assert list(frame["kind"]) == ["demo"] and frame.loc[0, "score"] == 0.25
    with pytest.raises(KeyError, match="not in this report"):
        report.check("nope")


def test_gate_thresholds(ctx):
    warn = result("a", "s", [Finding("x", Severity.WARN, "m", "a", ("a.jpg",))])
    error = CheckResult("b", Status.ERROR, "s")
    assert gate.evaluate([warn]).passed
    assert not gate.evaluate([warn], "warn").passed
    verdict = gate.evaluate([warn, error])
    assert not verdict.passed and [v["check"] for v in verdict.violations] == ["b"]


def test_write_creates_json_and_csv(tmp_path, ctx):
    res = run_one(ctx, CheckSpec("demo", _finds_class0, _Params, ""), _Params())
    report = Report({"root": "/d"}, {}, (res,), gate.evaluate([res]))
    paths = report.write(tmp_path / "out")
    assert json.loads(paths["json"].read_text())["checks"][0]["id"] == "demo"
    csv = paths["csv"].read_text().splitlines()
    assert csv[0] == "check,kind,severity,message,advice,files"
    assert "cat/img00000.jpg;cat/img00001.jpg" in csv[1]


def _comparable(res: CheckResult) -> tuple:
    return res.id, res.status, res.summary, json.dumps(res.metrics, sort_keys=True, default=str), res.findings


def test_checks_on_several_threads_give_the_results_of_one_after_another():
    from datacheck.runner import build_params, select_checks

    vectors, labels = clustered_vectors([30, 30, 30, 30], dim=24, seed=3)
    vectors[60] = vectors[5]  # a cross-split copy for duplicates and leakage
    splits = ["train" if i % 4 else "test" for i in range(len(labels))]
    specs = select_checks()
    params = build_params(specs, {})
    one_by_one = run_checks(make_context(vectors, labels, splits=splits), specs, params, workers=1)
    threaded = run_checks(make_context(vectors, labels, splits=splits), specs, params, workers=3)
    assert [_comparable(r) for r in threaded] == [_comparable(r) for r in one_by_one]
    assert [r.id for r in threaded] == [s.id for s in specs]  # results in the order asked for


def test_a_shared_value_is_computed_once_across_threads(ctx):
    from concurrent.futures import ThreadPoolExecutor

    calls = []

    def compute() -> int:
        calls.append(1)
        time.sleep(0.05)  # long enough for every thread to ask while the first computes
        return 42

    with ThreadPoolExecutor(4) as pool:
        values = list(pool.map(lambda _: ctx.shared("answer", compute), range(8)))
    assert values == [42] * 8 and len(calls) == 1


def test_a_check_reading_anothers_shared_value_is_started_after_it():
    from datacheck.runner import _thread_order, select_checks

    order = [s.id for s in _thread_order(select_checks())]
    assert order.index("leakage") > order.index("duplicates")
    assert order[-1] == "leakage"  # the only check that waits on another
