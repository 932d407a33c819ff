"""The check contract: findings, results, statuses and the registry.

A check is a pure function ``(AuditContext, Params) -> CheckResult`` registered with :func:`register`.
Its params are a frozen dataclass whose field defaults are the only place those defaults are written.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from datacheck.context import AuditContext


class Status(StrEnum):
    """Outcome of one check."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"
    SKIPPED = "skipped"


class Severity(StrEnum):
    """How bad one finding is."""

    INFO = "info"
    WARN = "warn"
    FAIL = "fail"


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARN: 1, Severity.FAIL: 2}


@dataclass(frozen=True)
class Finding:
    """One problem a check found.

    Attributes:
        kind: Machine-readable type, e.g. ``"leak"`` or ``"label_issue"``.
        severity: info, warn or fail.
        message: What is wrong, in one sentence.
        advice: What to do about it, in one plain sentence.
        files: Dataset-relative paths involved (possibly empty).
        extra: The check's own fields (similarity, given, suggested, …), flattened into the JSON.
    """

    kind: str
    severity: Severity
    message: str
    advice: str
    files: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The finding as it appears in report.json."""
        return {
            "kind": self.kind,
            "severity": str(self.severity),
            "message": self.message,
            "advice": self.advice,
            "files": list(self.files),
            **{k: _jsonable(v) for k, v in self.extra.items()},
        }


@dataclass(frozen=True)
class CheckResult:
    """Everything one check reports."""

    id: str
    status: Status
    summary: str
    metrics: Mapping[str, Any] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The result as it appears in report.json."""
        return {
            "id": self.id,
            "status": str(self.status),
            "summary": self.summary,
            "metrics": {k: _jsonable(v) for k, v in self.metrics.items()},
            "findings": [f.to_dict() for f in self.findings],
            "seconds": round(self.seconds, 3),
        }


def status_from(findings: Sequence[Finding]) -> Status:
    """The status a set of findings implies: the worst severity (info-only findings still pass)."""
    worst = max((_SEVERITY_RANK[f.severity] for f in findings), default=0)
    return (Status.PASS, Status.WARN, Status.FAIL)[worst]


def result(
    check_id: str, summary: str, findings: Sequence[Finding], metrics: Mapping[str, Any] | None = None
) -> CheckResult:
    """Build a result whose status follows from its findings."""
    return CheckResult(check_id, status_from(findings), summary, dict(metrics or {}), tuple(findings))


def _jsonable(value: Any) -> Any:
    """Numpy scalars/arrays and tuples to plain JSON types; floats rounded for stable, readable output."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None  # strict JSON has no NaN/Infinity
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or hasattr(value, "tolist"):
        return [_jsonable(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]
    if isinstance(value, StrEnum):
        return str(value)
    return value


# ----------------------------------------------------------------------------------------------- registry

P = TypeVar("P")
CheckFn = Callable[["AuditContext", Any], CheckResult]


@dataclass(frozen=True)
class CheckSpec:
    """A registered check: its id, function, params type and a one-line description."""

    id: str
    fn: CheckFn
    params_type: type
    description: str

    def default_params(self) -> Any:
        """The params dataclass with every default."""
        return self.params_type()

    def make_params(self, overrides: Mapping[str, Any] | None = None) -> Any:
        """Params with ``overrides`` applied; unknown names raise ``KeyError`` naming them."""
        overrides = dict(overrides or {})
        names = {f.name for f in dataclasses.fields(self.params_type)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise KeyError(f"unknown parameter(s) for check '{self.id}': {', '.join(unknown)}")
        return self.params_type(**overrides)


_REGISTRY: dict[str, CheckSpec] = {}


def register(check_id: str, params: type) -> Callable[[CheckFn], CheckFn]:
    """Decorator registering a check function under a stable id."""

    def decorate(fn: CheckFn) -> CheckFn:
        if check_id in _REGISTRY and _REGISTRY[check_id].fn is not fn:
            raise ValueError(f"check id '{check_id}' registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[check_id] = CheckSpec(check_id, fn, params, doc[0] if doc else "")
        return fn

    return decorate


def registered() -> dict[str, CheckSpec]:
    """Snapshot of the registry (check modules must have been imported; see ``datacheck.checks``)."""
    return dict(_REGISTRY)
