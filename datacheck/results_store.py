"""Check results kept in the cache by content, so re-auditing unchanged data runs no check twice.

A check is a pure function of the audit context and its params. Its result is stored under a key made of:
the check id and params, a digest of datacheck's own source code (any change to any module misses), and the
context's fingerprint (:attr:`AuditContext.fingerprint`: paths, labels, splits, content hashes, failures, the
model, input size and statistics version, the vectors and the reference set). Re-running the gate after an
audit, or auditing the same images with other settings for *other* checks, reuses the result; adding,
removing, editing or relabelling any image misses for every check.

Results are stored as JSON with exact floats (no pickle: a cache folder may be shared), in
``<cache>/artifacts/results`` via :mod:`datacheck.derived` (most recently used entries kept). Failing to read
or write only costs running the check.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from datacheck.checks.base import CheckResult, Finding, Severity, Status
from datacheck.context import AuditContext

logger = logging.getLogger(__name__)

#: Results kept (least recently used ones are deleted beyond it): a few audits' worth of every check.
KEEP = 64


@functools.cache
def code_digest() -> str:
    """SHA-256 over datacheck's Python sources: results of another code version are never reused."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _key(ctx: AuditContext, check_id: str, params: Any) -> str:
    from datacheck import derived

    label = f"result|{check_id}|{params!r}|{code_digest()}|{ctx.fingerprint}"
    return derived.content_key(label)


def load(ctx: AuditContext, check_id: str, params: Any) -> CheckResult | None:
    """The stored result of this check on this context with these params, or ``None``."""
    from datacheck import derived

    if ctx.derived_dir is None:
        return None
    stored = derived.load(ctx.derived_dir / "results", _key(ctx, check_id, params))
    if stored is None:
        return None
    try:
        return _from_json(json.loads(bytes(stored["json"]).decode()))
    except (KeyError, TypeError, ValueError) as err:
        logger.debug("ignoring a stored result of %s: %s", check_id, err)
        return None


def store(ctx: AuditContext, check_id: str, params: Any, res: CheckResult) -> None:
    """Keep ``res`` for the next audit of the same context (errors are never stored)."""
    from datacheck import derived

    if ctx.derived_dir is None or res.status is Status.ERROR:
        return
    try:
        text = json.dumps(_to_json(res), allow_nan=True)
    except (TypeError, ValueError) as err:  # a check returned something JSON cannot hold: just recompute
        logger.debug("result of %s not stored: %s", check_id, err)
        return
    payload = {"json": np.frombuffer(text.encode(), np.uint8)}
    derived.store(ctx.derived_dir / "results", _key(ctx, check_id, params), payload, keep=KEEP)


def _exact(value: Any) -> Any:
    """Plain JSON types with floats unrounded (``json`` writes the shortest exact repr)."""
    if isinstance(value, StrEnum):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _exact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_exact(v) for v in value]
    return value


def _to_json(res: CheckResult) -> dict[str, Any]:
    return {
        "id": res.id,
        "status": str(res.status),
        "summary": res.summary,
        "metrics": _exact(res.metrics),
        "findings": [{**_exact(dataclasses.asdict(f)), "files": list(f.files)} for f in res.findings],
    }


def _from_json(doc: dict[str, Any]) -> CheckResult:
    findings = tuple(
        Finding(
            kind=f["kind"],
            severity=Severity(f["severity"]),
            message=f["message"],
            advice=f["advice"],
            files=tuple(f["files"]),
            extra=f["extra"],
        )
        for f in doc["findings"]
    )
    return CheckResult(doc["id"], Status(doc["status"]), doc["summary"], doc["metrics"], findings)
