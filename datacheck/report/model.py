"""The Report: everything an audit produced, and its JSON / CSV / DataFrame views.

The JSON schema is documented in docs/report-schema.md.
"""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from datacheck import __version__
from datacheck.checks.base import CheckResult
from datacheck.dataset import ImageRecord
from datacheck.errors import UsageError
from datacheck.gate import GateResult
from datacheck.outputs import mark

#: Bump only for incompatible changes to report.json; additive fields keep the version.
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Report:
    """The outcome of :func:`datacheck.audit`."""

    dataset: dict[str, Any]
    embedding: dict[str, Any]
    checks: tuple[CheckResult, ...]
    gate: GateResult
    timings: dict[str, float] = field(default_factory=dict)
    #: File index and 2-D map of the images (see ``datacheck.embedding_map``), or ``None``.
    map: dict[str, Any] | None = None
    #: Unique id of this report: annotators' decisions are stored and checked under it.
    report_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: Records of images inside container files, by key: where thumbnails read their bytes (not in JSON).
    containers: Mapping[str, ImageRecord] = field(default_factory=dict, repr=False, compare=False)

    def check(self, check_id: str) -> CheckResult:
        """The result of one check; ``KeyError`` if it did not run."""
        for res in self.checks:
            if res.id == check_id:
                return res
        raise KeyError(
            f"check '{check_id}' is not in this report; ran: {', '.join(c.id for c in self.checks)}"
        )

    def findings(self, check_id: str | None = None) -> pd.DataFrame:
        """Findings as a DataFrame (one row per finding; ``files`` stays a list); all checks when ``None``."""
        rows = []
        for res in self.checks if check_id is None else (self.check(check_id),):
            rows.extend({"check": res.id, **f.to_dict()} for f in res.findings)
        columns = ["check", "kind", "severity", "message", "advice", "files"]
        frame = pd.DataFrame(rows)
        return frame if rows else pd.DataFrame(columns=columns)

    def to_dict(self) -> dict[str, Any]:
        """The report.json document."""
        return {
            "schema_version": SCHEMA_VERSION,
            "report_id": self.report_id,
            "tool": {"name": "datacheck", "version": __version__},
            "dataset": self.dataset,
            "embedding": self.embedding,
            "checks": [c.to_dict() for c in self.checks],
            "gate": self.gate.to_dict(),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "map": self.map,
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report.json text: strict JSON (NaN and infinities become ``null``)."""
        return json.dumps(json_safe(self.to_dict()), indent=indent, ensure_ascii=False, allow_nan=False)

    def status_counts(self) -> Counter:
        """How many checks ended in each status."""
        return Counter(str(c.status) for c in self.checks)

    def write(self, out_dir: Path, *, html: bool = True) -> dict[str, Path]:
        """Write report.json, findings.csv and (with ``html``) report.html + thumbs/ into ``out_dir``.

        Returns:
            The paths written, by kind (``json``, ``csv``, ``html``, ``thumbs``).
        """
        mark(out_dir, "report")
        paths = {"json": out_dir / "report.json", "csv": out_dir / "findings.csv"}
        _atomic_write(paths["json"], self.to_json())
        frame = self.findings()
        frame["files"] = frame["files"].map(lambda files: ";".join(files))
        _atomic_write(
            paths["csv"],
            frame[["check", "kind", "severity", "message", "advice", "files"]].to_csv(index=False),
        )
        if html:
            paths.update(self._write_html(out_dir))
        return paths

    def _write_html(self, out_dir: Path) -> dict[str, Path]:
        """report.html and the thumbnails of every file in the map (see docs/html-report.md)."""
        from datacheck.report.html import write_html
        from datacheck.report.thumbnails import THUMBS_DIR, write_thumbnails

        written, missing = {}, ()
        if self.map and self.map.get("path"):
            thumbs = out_dir / THUMBS_DIR
            files = zip(self.map["path"], self.map["sha256"], strict=True)
            root = Path(self.dataset["root"])
            missing = write_thumbnails(root, files, thumbs, containers=self.containers).missing
            written["thumbs"] = thumbs
        written["html"] = write_html(self.to_dict(), out_dir, missing_thumbs=missing)
        return written


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def json_safe(value: Any) -> Any:
    """A copy of a JSON-like document with NaN and infinities as ``None``, mapping keys as strings.

    Strict JSON and the browser's ``JSON.parse`` reject NaN and infinities.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def read_report(path: Path | str, what: str = "report") -> dict[str, Any]:
    """Read a report.json written by :meth:`Report.write`: the one reader of the format.

    Raises:
        UsageError: The file cannot be read or is not a datacheck report of this schema version.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read {what} {path}: {err}") from err
    if not isinstance(doc, dict) or doc.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(f"{path} is not a datacheck report.json (schema_version {SCHEMA_VERSION})")
    return doc
