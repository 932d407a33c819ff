"""Runs the selected checks over one context; a check that raises becomes an error result."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from datacheck import results_store
from datacheck.blocks import one_blas_thread
from datacheck.checks import all_checks
from datacheck.checks.base import CheckResult, CheckSpec, Severity, Status, status_from
from datacheck.context import AuditContext
from datacheck.errors import UsageError

logger = logging.getLogger(__name__)


def select_checks(only: Sequence[str] | None = None, skip: Sequence[str] = ()) -> list[CheckSpec]:
    """The checks to run, in report order; unknown ids are a usage error that lists the valid ones."""
    specs = all_checks()
    unknown = sorted((set(only or ()) | set(skip)) - set(specs))
    if unknown:
        raise UsageError(f"unknown check(s): {', '.join(unknown)}; available: {', '.join(specs)}")
    chosen = [s for s in specs.values() if (not only or s.id in only) and s.id not in skip]
    if not chosen:
        raise UsageError("no checks selected: --checks/--skip leave nothing to run")
    return chosen


def build_params(specs: Sequence[CheckSpec], overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Params object per check id, defaults overridden by ``overrides[check_id]``."""
    params = {}
    for spec in specs:
        try:
            params[spec.id] = spec.make_params(overrides.get(spec.id))
        except (KeyError, TypeError, ValueError) as err:
            raise UsageError(str(err).strip("'\"")) from err
    return params


def run_one(ctx: AuditContext, spec: CheckSpec, params: Any) -> CheckResult:
    """Run a check; never raises. An exception becomes an ``error`` result and its traceback is logged.

    A result stored by an earlier audit of the same context with the same params and code is reused
    (:mod:`datacheck.results_store`; only when the context has a ``derived_dir``).
    """
    start = time.perf_counter()
    res = results_store.load(ctx, spec.id, params)
    reused = res is not None
    if res is None:
        try:
            res = spec.fn(ctx, params)
        except Exception as err:  # a broken check must not take the audit down with it
            logger.exception("check '%s' failed", spec.id)
            res = CheckResult(spec.id, Status.ERROR, f"the check crashed: {type(err).__name__}: {err}")
        results_store.store(ctx, spec.id, params, res)
    seconds = time.perf_counter() - start
    logger.info("check %-18s %-7s %.2f s%s", spec.id, res.status, seconds, " (reused)" if reused else "")
    return CheckResult(res.id, res.status, res.summary, res.metrics, res.findings, seconds, spec.view)


def with_severity(res: CheckResult, severity: str) -> CheckResult:
    """The result with every non-info finding set to ``severity`` (a policy override), status recomputed."""
    findings = tuple(
        f if f.severity is Severity.INFO else dataclasses.replace(f, severity=Severity(severity))
        for f in res.findings
    )
    status = res.status if res.status in (Status.ERROR, Status.SKIPPED) else status_from(findings)
    return dataclasses.replace(res, findings=findings, status=status)


def run_checks(
    ctx: AuditContext,
    specs: Sequence[CheckSpec],
    params: Mapping[str, Any],
    on_check: Callable[[str], None] | None = None,
    severity: Mapping[str, str] | None = None,
    workers: int = 1,
) -> tuple[CheckResult, ...]:
    """Run every check in ``specs``, applying per-check severity overrides; results in ``specs`` order.

    With ``workers`` > 1 the checks run on that many threads (they are pure functions of the frozen
    context; numpy, BLAS and faiss release the GIL for the work that dominates). BLAS is held at one thread
    per check either way, so every result is the same whatever runs beside it and however many workers run.
    A check's ``seconds`` is its wall time, shared cores included.
    """

    def one(spec: CheckSpec) -> CheckResult:
        if on_check is not None:
            on_check(spec.id)
        res = run_one(ctx, spec, params[spec.id])
        if severity and spec.id in severity:
            res = with_severity(res, severity[spec.id])
        return res

    workers = max(1, min(workers, len(specs)))
    with one_blas_thread():
        if workers == 1:
            return tuple(one(spec) for spec in specs)
        ctx.prepare_for_threads()
        with ThreadPoolExecutor(workers, "check") as pool:
            futures = {spec.id: pool.submit(one, spec) for spec in _thread_order(specs)}
            return tuple(futures[spec.id].result() for spec in specs)


def _thread_order(specs: Sequence[CheckSpec]) -> list[CheckSpec]:
    """``specs`` with the checks that read another selected check's shared value (``after``) last."""
    ids = {spec.id for spec in specs}
    waiting = [spec for spec in specs if ids.intersection(spec.after)]
    return [spec for spec in specs if spec not in waiting] + waiting
