"""The pre-training gate: turns check results into a verdict. Consumers print it; they do not recompute it.

Rules, per check:

* if the policy sets a limit on one of the check's metrics (:class:`GatePolicy`; the limits are declared by
  the checks themselves), the limits decide;
* otherwise the check violates the gate when one of its findings reaches ``fail_on`` (a crashed check always
  does).

With a baseline (an earlier report.json), findings already present in the baseline are forgiven: a finding
is identified by its check, kind and the *content hashes* of its files, so renaming or moving files does not
make an old finding new. Count limits then count only new findings; fraction limits fail only when the
fraction is above the limit and above the baseline's.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from datacheck.checks.base import CheckResult, Finding, GateLimit, Status
from datacheck.errors import UsageError
from datacheck.params import ParamsError, Range

FailOn = Literal["warn", "fail"]
#: Findings of this severity fail the gate unless the config or ``--fail-on`` says otherwise.
DEFAULT_FAIL_ON: FailOn = "fail"

_RANK = {"info": 0, "warn": 1, "fail": 2}


def checked_fail_on(value: object) -> FailOn:
    """``value`` if it is a valid gate threshold, else a usage error naming the choices."""
    if value not in typing.get_args(FailOn):
        raise UsageError(f"fail_on must be {' or '.join(map(repr, typing.get_args(FailOn)))}, got {value!r}")
    return value  # type: ignore[return-value]


def declared_limits() -> dict[str, tuple[str, GateLimit]]:
    """Every gate limit the checks declare (:func:`datacheck.checks.base.register`): name → (check, limit)."""
    from datacheck.checks import all_checks

    return {limit.name: (spec.id, limit) for spec in all_checks().values() for limit in spec.limits}


class GatePolicy:
    """Limits the gate enforces on check metrics; a limit set to ``None`` leaves the check to its findings.

    The limits and their defaults are the ones the checks declare (``GateLimit``; listed with
    ``datacheck init`` and in docs/configuration.md), so a check brings its own. Construct with keyword
    arguments, e.g. ``GatePolicy(max_leak_pairs=2)``; read a limit as an attribute.
    """

    __slots__ = ("_values",)

    def __init__(self, **values: float | None) -> None:
        declared = declared_limits()
        unknown = sorted(set(values) - set(declared))
        if unknown:
            raise ParamsError(f"unknown gate limit(s) {', '.join(unknown)}; known: {', '.join(declared)}")
        resolved: dict[str, float | None] = {}
        for name, (_, limit) in declared.items():
            value = values.get(name, limit.default)
            _validate_limit(name, limit, value)
            resolved[name] = value
        object.__setattr__(self, "_values", resolved)

    def __getattr__(self, name: str) -> float | None:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no gate limit named '{name}'") from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("GatePolicy is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GatePolicy) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items())))

    def __repr__(self) -> str:
        return f"GatePolicy({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    def as_dict(self) -> dict[str, float | None]:
        """Every limit by name (``None``: off)."""
        return dict(self._values)

    def limits_for(self, check_id: str) -> dict[str, tuple[GateLimit, float]]:
        """The limits set (not ``None``) that apply to one check."""
        return {
            name: (limit, bound)
            for name, (owner, limit) in declared_limits().items()
            if owner == check_id and (bound := self._values[name]) is not None
        }


def _validate_limit(name: str, limit: GateLimit, value: object) -> None:
    """The params' range check (a count or value at least 0, a fraction from 0 to 1), plus whole counts."""
    bounds = Range(ge=0, le=1 if limit.kind == "max_fraction" else None, optional=True)
    problem = bounds.problem(name, value)
    counted = limit.kind == "max_count" and isinstance(value, int | float)
    if problem is None and counted and not float(value).is_integer():
        problem = f"{name} must be a whole number, got {value!r}"
    if problem is not None:
        raise ParamsError(problem)


@dataclass(frozen=True)
class GateResult:
    """The verdict and the reasons for it."""

    passed: bool
    violations: tuple[dict[str, Any], ...] = ()
    fail_on: FailOn = DEFAULT_FAIL_ON
    baseline: str | None = None
    forgiven: int = 0

    def to_dict(self) -> dict[str, Any]:
        """As it appears in report.json."""
        out: dict[str, Any] = {
            "passed": self.passed,
            "fail_on": self.fail_on,
            "violations": list(self.violations),
        }
        if self.baseline is not None:
            out["baseline"] = {"report": self.baseline, "findings_forgiven": self.forgiven}
        return out


def file_hashes(file_map: Mapping[str, Any] | None) -> dict[str, str]:
    """Path → content hash from a report's file index (``map``), for rename-proof finding identities."""
    if not file_map:
        return {}
    return {p: h for p, h in zip(file_map.get("path", []), file_map.get("sha256", []), strict=False) if h}


def finding_identity(check_id: str, finding: Mapping[str, Any] | Finding, hashes: Mapping[str, str]) -> str:
    """A rename-proof identity: check, kind and the sorted content hashes (or paths) of the files."""
    kind = finding.kind if isinstance(finding, Finding) else finding["kind"]
    files = finding.files if isinstance(finding, Finding) else finding.get("files", [])
    return "|".join([check_id, kind, *sorted(hashes.get(f, f"path:{f}") for f in files)])


@dataclass(frozen=True)
class Baseline:
    """Finding identities and metrics of an earlier report."""

    source: str
    identities: frozenset[str]
    metrics: Mapping[str, Mapping[str, Any]]

    @classmethod
    def from_report(cls, doc: Mapping[str, Any], source: str) -> Baseline:
        """Read a parsed report.json."""
        hashes = file_hashes(doc.get("map"))
        identities = frozenset(
            finding_identity(check["id"], f, hashes)
            for check in doc.get("checks", [])
            for f in check["findings"]
        )
        return cls(source, identities, {c["id"]: c.get("metrics", {}) for c in doc.get("checks", [])})


def _metric(result: CheckResult, name: str) -> float | None:
    """A metric by dotted path (``counts.unreadable``); ``None`` when the check does not report it."""
    value: Any = result.metrics
    for part in name.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _limit_violation(
    result: CheckResult,
    name: str,
    limit: GateLimit,
    bound: float,
    new_findings: Sequence[Finding],
    baseline: Baseline | None,
) -> dict[str, Any] | None:
    value = _metric(result, limit.metric)
    if limit.counted_kinds and baseline is not None:
        value = float(sum(f.kind in limit.counted_kinds for f in new_findings))
    if value is None:
        return None
    broken = value < bound if limit.kind == "min_value" else value > bound
    if broken and baseline is not None and limit.kind in ("max_fraction", "max_value"):
        before = baseline.metrics.get(result.id, {}).get(limit.metric)
        broken = not isinstance(before, int | float) or value > before
    if not broken:
        return None
    return {
        "check": result.id,
        "status": str(result.status),
        "rule": name,
        "limit": bound,
        "value": value,
        "summary": f"{limit.metric} = {value:g} breaks {name} = {bound:g}",
    }


def evaluate(
    results: Sequence[CheckResult],
    fail_on: FailOn = DEFAULT_FAIL_ON,
    policy: GatePolicy | None = None,
    *,
    hashes: Mapping[str, str] | None = None,
    baseline: Baseline | None = None,
) -> GateResult:
    """Apply the policy to the results (see the module docstring for the rules)."""
    fail_on = checked_fail_on(fail_on)
    policy = policy or GatePolicy()
    hashes = hashes or {}
    violations: list[dict[str, Any]] = []
    forgiven = 0
    for res in results:
        findings = res.findings
        if baseline is not None:
            findings = tuple(
                f for f in res.findings if finding_identity(res.id, f, hashes) not in baseline.identities
            )
            forgiven += len(res.findings) - len(findings)
        if res.status is Status.ERROR:
            violations.append({"check": res.id, "status": "error", "rule": "crashed", "summary": res.summary})
            continue
        limits = {
            name: (limit, bound)
            for name, (limit, bound) in policy.limits_for(res.id).items()
            if _metric(res, limit.metric) is not None  # a metric the check did not report cannot decide
        }
        if limits:
            for name, (limit, bound) in limits.items():
                if (v := _limit_violation(res, name, limit, bound, findings, baseline)) is not None:
                    violations.append(v)
            continue
        failing = [f for f in findings if _RANK[str(f.severity)] >= _RANK[fail_on]]
        if failing:
            violations.append(
                {
                    "check": res.id,
                    "status": str(res.status),
                    "rule": f"fail_on={fail_on}",
                    "findings": len(failing),
                    "summary": res.summary,
                }
            )
    return GateResult(
        not violations, tuple(violations), fail_on, baseline.source if baseline else None, forgiven
    )
