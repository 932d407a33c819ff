"""Check results reused by content: same context, params and code → the stored result; any change → run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from datacheck import results_store
from datacheck.checks.base import CheckResult, CheckSpec, Finding, Severity, result
from datacheck.runner import run_one
from tests.factories import clustered_vectors, make_context


@dataclass(frozen=True)
class _Params:
    threshold: float = 0.5


CALLS: list[int] = []


def _demo(ctx, params: _Params) -> CheckResult:
    CALLS.append(ctx.n)
    first = int(np.flatnonzero(ctx.labels == 0)[0])
    extra = {"score": np.float32(1 / 3), "given": ctx.class_names[0], "pair": (1, 2)}
    finding = Finding("demo", Severity.WARN, "odd", "look", (ctx.paths[first],), extra)
    return result(
        "demo", "one finding", [finding], {"n": np.int64(ctx.n), "ratio": 1 / 3, "t": params.threshold}
    )


SPEC = CheckSpec("demo", _demo, _Params, "")


def _ctx(tmp_path: Path, labels_shift: int = 0):
    vectors, labels = clustered_vectors([10, 12], dim=16)
    labels = (labels + labels_shift) % 2
    sha = [f"{i:064x}" for i in range(len(labels))]
    ctx = make_context(vectors, labels, class_names=["cat", "dog"], file_sha256=sha)
    return dataclasses.replace(ctx, derived_dir=tmp_path / "derived")


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()


def test_an_unchanged_context_reuses_the_exact_result(tmp_path: Path) -> None:
    first = run_one(_ctx(tmp_path), SPEC, _Params())
    second = run_one(_ctx(tmp_path), SPEC, _Params())  # a new context object over the same data
    assert len(CALLS) == 1
    assert second.to_dict() | {"seconds": 0} == first.to_dict() | {"seconds": 0}
    assert second.metrics["ratio"] == 1 / 3  # exact, not the report's 4-decimal rounding
    assert second.findings[0].severity is Severity.WARN


def test_any_change_runs_the_check_again(tmp_path: Path, monkeypatch) -> None:
    run_one(_ctx(tmp_path), SPEC, _Params())
    run_one(_ctx(tmp_path), SPEC, _Params(threshold=0.7))  # other params
    run_one(_ctx(tmp_path, labels_shift=1), SPEC, _Params())  # relabelled
    moved = _ctx(tmp_path)
    vectors = moved.vectors.copy()
    vectors[0] = -vectors[0]
    run_one(dataclasses.replace(moved, vectors=vectors), SPEC, _Params())  # other vectors
    monkeypatch.setattr(results_store, "code_digest", lambda: "another version of datacheck")
    run_one(_ctx(tmp_path), SPEC, _Params())
    assert len(CALLS) == 5


def test_without_a_cache_folder_nothing_is_stored(tmp_path: Path) -> None:
    ctx = dataclasses.replace(_ctx(tmp_path), derived_dir=None)
    run_one(ctx, SPEC, _Params())
    run_one(ctx, SPEC, _Params())
    assert len(CALLS) == 2 and not (tmp_path / "derived").exists()
