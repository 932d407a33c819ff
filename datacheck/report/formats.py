"""Machine-readable renderings of a report for pipelines: JUnit XML, GitHub annotations, Markdown, diff.

Each function renders what the report already holds; none recomputes a check or the gate.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

_STATUS_ICON = {"pass": "✅", "warn": "⚠️", "fail": "❌", "error": "💥", "skipped": "⏭️"}
#: Findings listed per check in Markdown and annotations (the full list is in report.json).
MAX_LISTED = 20


def _failing(check: Mapping[str, Any], fail_on: str) -> list[Mapping[str, Any]]:
    levels = ("fail",) if fail_on == "fail" else ("warn", "fail")
    return [f for f in check["findings"] if f["severity"] in levels]


def _violating_checks(doc: Mapping[str, Any]) -> set[str]:
    return {v["check"] for v in doc["gate"]["violations"]}


def to_junit(doc: Mapping[str, Any]) -> str:
    """JUnit XML: one testcase per check; each failing finding of a check that broke the gate is a failure."""
    fail_on = doc["gate"].get("fail_on", "fail")
    violating = _violating_checks(doc)
    suite = ET.Element("testsuite", name="datacheck", tests=str(len(doc["checks"])))
    failures = errors = skipped = 0
    for check in doc["checks"]:
        case = ET.SubElement(
            suite, "testcase", classname="datacheck", name=check["id"], time=str(check.get("seconds", 0))
        )
        if check["status"] == "error":
            errors += 1
            ET.SubElement(case, "error", message=check["summary"])
        elif check["status"] == "skipped":
            skipped += 1
            ET.SubElement(case, "skipped", message=check["summary"])
        elif check["id"] in violating:
            failing = _failing(check, fail_on) or check["findings"]
            failures += len(failing) or 1
            for finding in failing or [{"message": check["summary"], "files": [], "advice": ""}]:
                body = "\n".join([finding.get("advice", ""), *finding.get("files", [])])
                ET.SubElement(
                    case, "failure", message=finding["message"], type=finding.get("kind", "gate")
                ).text = body
        ET.SubElement(case, "system-out").text = check["summary"]
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def _escape_property(text: str) -> str:
    return (
        text.replace("%", "%25")
        .replace("\r", "%0D")
        .replace("\n", "%0A")
        .replace(":", "%3A")
        .replace(",", "%2C")
    )


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github_annotations(doc: Mapping[str, Any], dataset_prefix: str = "") -> list[str]:
    """GitHub Actions workflow commands (``::error file=…::``) for findings of checks that broke the gate."""
    fail_on = doc["gate"].get("fail_on", "fail")
    violating = _violating_checks(doc)
    lines = []
    for check in doc["checks"]:
        if check["id"] not in violating:
            continue
        for finding in _failing(check, fail_on)[:MAX_LISTED] or [{"message": check["summary"], "files": []}]:
            level = "error" if finding.get("severity", "fail") == "fail" else "warning"
            files = finding.get("files") or [""]
            target = f"file={_escape_property(dataset_prefix + files[0])}," if files[0] else ""
            title = _escape_property(f"datacheck {check['id']}")
            message = _escape_data(f"{finding['message']} {finding.get('advice', '')}".strip())
            lines.append(f"::{level} {target}title={title}::{message}")
    return lines


def to_markdown(doc: Mapping[str, Any]) -> str:
    """A Markdown summary (for ``$GITHUB_STEP_SUMMARY``, merge requests, chat)."""
    ds = doc["dataset"]
    verdict = "✅ **gate passed**" if doc["gate"]["passed"] else "❌ **gate failed**"
    lines = [
        f"## datacheck: {verdict}",
        "",
        f"{ds['images']:,} images · {len(ds['classes'])} classes · layout `{ds['layout']}` · "
        f"{ds['unreadable']} unreadable",
        "",
        "| check | status | findings | summary |",
        "|---|---|---:|---|",
    ]
    for check in doc["checks"]:
        icon = _STATUS_ICON.get(check["status"], "")
        summary = check["summary"].replace("|", "\\|")
        lines.append(f"| {check['id']} | {icon} {check['status']} | {len(check['findings'])} | {summary} |")
    for violation in doc["gate"]["violations"]:
        lines.append(f"\n- **{violation['check']}**: {violation['summary']}".replace("\n\n", "\n"))
    return "\n".join(lines) + "\n"


def diff_reports(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Findings new in ``new``, findings resolved since ``old`` (rename-proof), and status changes."""
    from datacheck.gate import file_hashes, finding_identity

    def index(doc: Mapping[str, Any]) -> dict[str, tuple[str, Mapping[str, Any]]]:
        hashes = file_hashes(doc.get("map"))
        return {
            finding_identity(c["id"], f, hashes): (c["id"], f) for c in doc["checks"] for f in c["findings"]
        }

    before, after = index(old), index(new)
    old_status = {c["id"]: c["status"] for c in old["checks"]}
    return {
        "new": [{"check": c, **f} for key, (c, f) in after.items() if key not in before],
        "resolved": [{"check": c, **f} for key, (c, f) in before.items() if key not in after],
        "status_changes": [
            {"check": c["id"], "before": old_status[c["id"]], "after": c["status"]}
            for c in new["checks"]
            if c["id"] in old_status and old_status[c["id"]] != c["status"]
        ],
        "gate": {"before": old["gate"]["passed"], "after": new["gate"]["passed"]},
    }
