"""The pre-training gate: turns check results into a verdict. Consumers print it; they do not recompute it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from datacheck.checks.base import CheckResult, Status

FailOn = Literal["warn", "fail"]

_FAILING: dict[str, frozenset[Status]] = {
    "fail": frozenset({Status.FAIL, Status.ERROR}),
    "warn": frozenset({Status.WARN, Status.FAIL, Status.ERROR}),
}


@dataclass(frozen=True)
class GateResult:
    """The verdict and the checks that caused it."""

    passed: bool
    violations: tuple[dict[str, Any], ...] = ()
    fail_on: FailOn = "fail"

    def to_dict(self) -> dict[str, Any]:
        """As it appears in report.json."""
        return {"passed": self.passed, "fail_on": self.fail_on, "violations": list(self.violations)}


def evaluate(results: Sequence[CheckResult], fail_on: FailOn = "fail") -> GateResult:
    """The gate fails when any check's status reaches ``fail_on`` (a crashed check always fails it)."""
    failing = _FAILING[fail_on]
    violations = tuple(
        {"check": r.id, "status": str(r.status), "summary": r.summary} for r in results if r.status in failing
    )
    return GateResult(not violations, violations, fail_on)
