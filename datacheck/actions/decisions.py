"""Annotators' decisions (``decisions.json``) and the report they were made on, loaded and checked."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datacheck.errors import DatacheckError

logger = logging.getLogger(__name__)

DECISIONS_SCHEMA = "datacheck-decisions"
DECISIONS_VERSION = 1
JOURNAL_VERSION = 1
ACTIONS = ("keep", "remove", "relabel", "ignore")
MOVING_ACTIONS = ("remove", "relabel")


class DecisionsError(DatacheckError):
    """The decisions cannot be applied as they are (wrong report, changed files, bad file); nothing moved."""

    exit_code = 2


class NotMovableError(DecisionsError):
    """The dataset's images live inside container files (shards, tables): see :func:`write_change_list`."""


# ------------------------------------------------------------------------------------------ decisions


@dataclass(frozen=True)
class Decision:
    """One annotator decision about one file (see docs/decisions-schema.md).

    Attributes:
        file: Dataset-relative path, ``/``-separated, as in the report.
        action: ``keep``, ``remove``, ``relabel`` or ``ignore``.
        target: Class to move the file to (``relabel`` only).
        finding: The finding it answers, ``"<check>/<index>"``, or ``None``.
        note: The annotator's note.
        sha256: The file's content hash from the report.
    """

    file: str
    action: str
    target: str | None = None
    finding: str | None = None
    note: str = ""
    sha256: str | None = None


@dataclass(frozen=True)
class DecisionSet:
    """A decisions.json document."""

    report_id: str
    dataset_root: str
    decisions: tuple[Decision, ...]


def load_decisions(path: Path) -> DecisionSet:
    """Read and validate a decisions.json file.

    Raises:
        DecisionsError: Unreadable, not a decisions file, or an entry is malformed (all problems listed).
    """
    doc = _read_json(path, "decisions file")
    if not isinstance(doc, dict) or doc.get("schema") != DECISIONS_SCHEMA:
        raise DecisionsError(f"{path} is not a datacheck decisions file (export it from report.html)")
    if doc.get("version") != DECISIONS_VERSION:
        raise DecisionsError(
            f"{path}: decisions version {doc.get('version')!r} is not supported (expected 1)"
        )
    if not isinstance(doc.get("report_id"), str) or not isinstance(doc.get("dataset_root"), str):
        raise DecisionsError(f"{path}: report_id and dataset_root are required")
    entries = doc.get("decisions")
    if not isinstance(entries, list):
        raise DecisionsError(f"{path}: 'decisions' must be a list")
    decisions, problems, seen = [], [], set()
    for n, entry in enumerate(entries):
        try:
            decision = _decision(entry)
        except ValueError as err:
            problems.append(f"entry {n}: {err}")
            continue
        if decision.file in seen:
            problems.append(f"entry {n}: '{decision.file}' is decided twice")
        seen.add(decision.file)
        decisions.append(decision)
    if problems:
        raise DecisionsError(listing(f"{path} has {len(problems)} malformed entries", problems))
    return DecisionSet(doc["report_id"], doc["dataset_root"], tuple(decisions))


def _decision(entry: Any) -> Decision:
    if not isinstance(entry, dict):
        raise ValueError("not an object")
    file, action = entry.get("file"), entry.get("action")
    if not isinstance(file, str) or not file:
        raise ValueError("'file' must be a non-empty string")
    if action not in ACTIONS:
        raise ValueError(f"'{file}': action {action!r} is not one of {', '.join(ACTIONS)}")
    target = entry.get("target")
    if action == "relabel" and (not isinstance(target, str) or not target):
        raise ValueError(f"'{file}': relabel needs a target class")
    sha = entry.get("sha256")
    if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
        raise ValueError(f"'{file}': sha256 must be 64 hex digits")
    note = entry.get("note") or ""
    finding = entry.get("finding")
    return Decision(
        file=file,
        action=action,
        target=target if action == "relabel" else None,
        finding=finding if isinstance(finding, str) else None,
        note=note if isinstance(note, str) else str(note),
        sha256=sha,
    )


def load_report(path: Path) -> dict[str, Any]:
    """Read a report.json (:func:`~datacheck.report.model.read_report`); it must carry a ``report_id``."""
    from datacheck.errors import UsageError
    from datacheck.report.model import read_report

    if not Path(path).exists():
        raise DecisionsError(f"report not found: {path}")
    try:
        doc = read_report(path)
    except UsageError as err:
        raise DecisionsError(str(err)) from None
    if "dataset" not in doc or not doc.get("report_id"):
        raise DecisionsError(f"{path} is not a datacheck report.json with a report id")
    return doc


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DecisionsError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DecisionsError(f"cannot read {what} {path}: {err}") from None


def listing(title: str, problems: Sequence[str], limit: int = 20) -> str:
    """``title:`` and one ``- problem`` line each, at most ``limit`` of them (then how many more)."""
    lines = [title + ":"] + [f"  - {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  … and {len(problems) - limit} more")
    return "\n".join(lines)
