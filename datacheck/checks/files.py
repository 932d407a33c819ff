"""``files``: every file that is not a usable, labelled image, with the reason.

Reads the issues discovery found (``ctx.dataset.issues``: not an image, duplicate path, no label, missing,
bad manifest row, unreadable folders) and the decode failures of the embed pipeline (``ctx.failures``), and
reports each file once. See docs/checks/files.md.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from datacheck.checks.base import CheckResult, Finding, GateLimit, ReportView, Severity, register, result
from datacheck.context import AuditContext
from datacheck.dataset import ISSUE_KINDS, FileIssue
from datacheck.params import Params, param

logger = logging.getLogger(__name__)

CHECK_ID = "files"

#: Each kind of file issue: its short wording (messages, summary), and what to do about it (one sentence).
_KINDS: dict[str, tuple[str, str]] = {
    "unreadable": (
        "cannot be read",
        "Re-export or re-download the file, or delete it: training would crash on it or skip it.",
    ),
    "missing": ("is listed but does not exist", "Fix the path in the manifest or restore the file."),
    "not_an_image": (
        "is not an image",
        "Move it out of the dataset folder, or convert it to JPEG or PNG if it is a picture.",
    ),
    "duplicate_path": (
        "is a second path to the same image",
        "Remove the link or the repeated manifest row so the image is counted once.",
    ),
    "no_label": (
        "has no label",
        "Move the image into the folder of its class, or give it a label in the manifest.",
    ),
    "bad_manifest_row": ("is a bad manifest row", "Fix or delete the manifest row."),
}
_ADVICE = {kind: advice for kind, (_, advice) in _KINDS.items()}
_WORDS = {kind: words for kind, (words, _) in _KINDS.items()}
_DEFAULT_ADVICE = "Fix or remove the file."

#: The :class:`FilesParams` fields that list issue kinds.
_KIND_LISTS = ("fail_kinds", "ignore_kinds")


@dataclass(frozen=True)
class FilesParams(Params):
    """Parameters of the ``files`` check.

    Attributes:
        fail_kinds: Issue kinds reported with severity ``fail`` (files a training run would choke on);
            every other kind is ``warn``.
        ignore_kinds: Issue kinds not reported at all (still counted in the metrics).
        max_findings: Most findings listed; the metrics always count every file.
    """

    fail_kinds: tuple[str, ...] = ("unreadable", "missing")
    ignore_kinds: tuple[str, ...] = ()
    max_findings: int = param(1000, ge=0)

    def __post_init__(self) -> None:
        """Store the kind lists as tuples (a TOML or JSON list is fine), then validate."""
        for name in _KIND_LISTS:
            value = getattr(self, name)
            if not isinstance(value, str | tuple) and isinstance(value, Iterable):
                object.__setattr__(self, name, tuple(value))
        super().__post_init__()

    def relations(self) -> list[str]:
        """``fail_kinds`` and ``ignore_kinds`` are lists of kind names (strings; not one bare string)."""
        lists = {name: getattr(self, name) for name in _KIND_LISTS}
        return [
            f"{name} must be a list of issue kinds, got {value!r}"
            for name, value in lists.items()
            if not (isinstance(value, tuple) and all(isinstance(k, str) for k in value))
        ]


def unique_issues(issues: Iterable[FileIssue]) -> list[FileIssue]:
    """Issues without repeats of a ``(path, kind)`` (first reason kept), sorted by path then kind."""
    seen: dict[tuple[str, str], FileIssue] = {}
    for issue in issues:
        seen.setdefault((issue.path, issue.kind), issue)
    return sorted(seen.values(), key=lambda i: (i.path, i.kind))


def _finding(issue: FileIssue, params: FilesParams) -> Finding:
    severity = Severity.FAIL if issue.kind in params.fail_kinds else Severity.WARN
    words = _WORDS.get(issue.kind, f"has a problem ({issue.kind})")
    return Finding(
        kind=issue.kind,
        severity=severity,
        message=f"'{issue.path}' {words}: {issue.reason.rstrip('.')}.",
        advice=_ADVICE.get(issue.kind, _DEFAULT_ADVICE),
        files=(issue.path,),
        extra={"reason": issue.reason},
    )


def _summary(counts: Counter[str]) -> str:
    if not counts:
        return "every file is a readable, labelled image"
    parts = [f"{n} {kind.replace('_', ' ')}" for kind, n in counts.most_common()]
    total = sum(counts.values())
    return f"{total} file{'s' if total != 1 else ''} left out of the dataset: {', '.join(parts)}"


@register(
    CHECK_ID,
    FilesParams,
    limits=[
        GateLimit(
            "max_unreadable",
            "counts.unreadable",
            "max_count",
            "Unreadable files allowed.",
            default=0,
            counted_kinds=("unreadable",),
        )
    ],
    view=ReportView(card="file"),
)
def check_files(ctx: AuditContext, params: FilesParams) -> CheckResult:
    """Files that are not usable labelled images: unreadable, not an image, duplicate path, no label."""
    issues = unique_issues((*ctx.dataset.issues, *ctx.failures))
    counts = Counter(i.kind for i in issues)
    all_counts = {kind: counts.get(kind, 0) for kind in sorted({*ISSUE_KINDS, *counts})}
    reported = [i for i in issues if i.kind not in params.ignore_kinds]
    findings = sorted(
        (_finding(i, params) for i in reported),
        key=lambda f: (f.severity != Severity.FAIL, f.files),
    )
    total_files = ctx.n + len({i.path for i in issues})
    metrics = {
        "counts": all_counts,  # every kind, 0 when none: the gate's max_unreadable reads counts.unreadable
        "issues": len(issues),
        "usable_images": ctx.n,
        "issue_fraction": len(issues) / total_files if total_files else 0.0,
        "listed": min(len(findings), params.max_findings),
    }
    logger.debug("files: %s", dict(counts))
    return result(CHECK_ID, _summary(counts), findings[: params.max_findings], metrics)
