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
from typing import TYPE_CHECKING, Any, Literal, TypeVar

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
    #: How the HTML report shows it: the check's :class:`ReportView`, attached by the runner.
    view: ReportView | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as it appears in report.json."""
        return {
            "id": self.id,
            "status": str(self.status),
            "summary": self.summary,
            "metrics": {k: _jsonable(v) for k, v in self.metrics.items()},
            "findings": [f.to_dict() for f in self.findings],
            "seconds": round(self.seconds, 3),
            "view": (self.view or ReportView()).to_dict(),
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


def skipped(check_id: str, reason: str) -> CheckResult:
    """The result of a check that cannot apply to this dataset: status ``skipped``, ``reason`` as summary."""
    return CheckResult(check_id, Status.SKIPPED, reason)


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
LimitKind = Literal["max_count", "max_fraction", "min_value", "max_value"]
#: Finding cards the HTML report draws (``report/static/app.js``, ``RENDERERS``).
CARDS = ("generic", "group", "label", "outlier", "quality", "file", "shortcut", "clusters")


@dataclass(frozen=True, slots=True)
class GateLimit:
    """A limit the gate can enforce on one of the check's metrics, declared by the check.

    Attributes:
        name: Its key in the config's ``[gate]`` table (and a :class:`~datacheck.gate.GatePolicy` field).
        metric: The metric it limits (dotted for nested metrics, e.g. ``counts.unreadable``).
        kind: ``max_count`` / ``max_fraction`` / ``max_value`` (the metric may not exceed it) or
            ``min_value`` (it may not fall below it).
        doc: One line for the starter config and the docs.
        default: The limit when the config sets none; ``None``: off, the findings' severities decide.
        counted_kinds: With a baseline, count new findings of these kinds instead of reading the metric.
    """

    name: str
    metric: str
    kind: LimitKind
    doc: str
    default: float | None = None
    counted_kinds: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReportView:
    """How the HTML report shows a check; the report itself computes nothing.

    Attributes:
        card: How each finding is drawn: ``generic`` (its fields and files), ``group`` (duplicate groups),
            ``label``, ``outlier``, ``quality``, ``file``, ``shortcut`` or ``clusters``.
        neighbours: Show each finding file's nearest neighbours (the audit's file map lists them).
        class_chart: Draw the per-class image counts above the findings.
    """

    card: str = "generic"
    neighbours: bool = False
    class_chart: bool = False

    def __post_init__(self) -> None:
        if self.card not in CARDS:
            raise ValueError(f"unknown finding card '{self.card}': use one of {', '.join(CARDS)}")

    def to_dict(self) -> dict[str, Any]:
        """As it appears in report.json (``checks[].view``)."""
        return {"card": self.card, "neighbours": self.neighbours, "class_chart": self.class_chart}


@dataclass(frozen=True)
class CheckSpec:
    """A registered check: its id, function, params type, one-line description and declarations."""

    id: str
    fn: CheckFn
    params_type: type
    description: str
    limits: tuple[GateLimit, ...] = ()
    view: ReportView = field(default_factory=ReportView)
    after: tuple[str, ...] = ()

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


def register(
    check_id: str,
    params: type,
    *,
    limits: Sequence[GateLimit] = (),
    view: ReportView | None = None,
    after: Sequence[str] = (),
) -> Callable[[CheckFn], CheckFn]:
    """Decorator registering a check function under a stable id.

    Args:
        check_id: The id in reports, configs and ``--checks`` (the module's name).
        params: The check's frozen params dataclass.
        limits: Gate limits on its metrics (``[gate]`` keys); none: the gate reads its findings' severities.
        view: How the HTML report draws its findings (default: generic cards).
        after: Checks computing a value this one reads from the context (``ctx.shared``): when checks run on
            several threads, this one is started after them instead of waiting beside them.
    """

    def decorate(fn: CheckFn) -> CheckFn:
        if check_id in _REGISTRY and _REGISTRY[check_id].fn is not fn:
            raise ValueError(f"check id '{check_id}' registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        spec = CheckSpec(
            check_id, fn, params, doc[0] if doc else "", tuple(limits), view or ReportView(), tuple(after)
        )
        _REGISTRY[check_id] = spec
        return fn

    return decorate


def registered() -> dict[str, CheckSpec]:
    """Snapshot of the registry (check modules must have been imported; see ``datacheck.checks``)."""
    return dict(_REGISTRY)
