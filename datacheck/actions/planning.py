"""Decisions checked against the report and the disk, turned into a plan of moves (or a change list)."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from datacheck.actions.decisions import (
    MOVING_ACTIONS,
    Decision,
    DecisionsError,
    DecisionSet,
    NotMovableError,
    listing,
)
from datacheck.dataset import CONTAINER_LAYOUTS
from datacheck.fileio import file_sha256

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class Move:
    """One planned file move.

    Attributes:
        index: Position in the plan (journal lines refer to it).
        file: Dataset-relative path (as decided).
        action: ``remove`` or ``relabel``.
        src: Absolute source path.
        dst: Absolute destination path.
        sha256: Content hash the file must have (verified before and after moving).
        target: Target class of a relabel.
        renamed: The destination got a suffix because the name was taken.
        finding: The finding the decision answered.
    """

    index: int
    file: str
    action: str
    src: str
    dst: str
    sha256: str
    target: str | None = None
    renamed: bool = False
    finding: str | None = None


@dataclass(frozen=True)
class Plan:
    """What :func:`execute` will do.

    Attributes:
        root: Dataset root.
        quarantine: Folder removed files go to.
        report_id: The report the decisions were made on.
        moves: Files to move, in order.
        unchanged: Decisions that move nothing (keep, ignore, relabel to the same class).
    """

    root: Path
    quarantine: Path
    report_id: str
    moves: tuple[Move, ...]
    unchanged: tuple[Decision, ...] = ()

    @property
    def renamed(self) -> tuple[Move, ...]:
        """Moves whose destination got a suffix to avoid overwriting."""
        return tuple(m for m in self.moves if m.renamed)

    def count(self, action: str) -> int:
        """Planned moves of one action."""
        return sum(1 for m in self.moves if m.action == action)


def default_quarantine(root: Path) -> Path:
    """``<root>/../<root-name>.datacheck-quarantine``."""
    root = Path(root)
    return root.parent / f"{root.name}.datacheck-quarantine"


def plan(decisions: DecisionSet, report: Mapping[str, Any], *, quarantine: Path | None = None) -> Plan:
    """Check the decisions against the report and the files on disk, and plan the moves.

    Args:
        decisions: From :func:`load_decisions`.
        report: The report.json the decisions were made on (:func:`load_report`).
        quarantine: Folder for removed files (default :func:`default_quarantine`).

    Returns:
        The plan; nothing has been touched.

    Raises:
        DecisionsError: Report id or dataset root differ, or any file is missing, changed since the audit
            (hash mismatch), not in the report, or cannot be moved as asked. Nothing is planned then.
    """
    root = Path(report["dataset"]["root"])
    layout = report["dataset"].get("layout", "classes")
    if layout in CONTAINER_LAYOUTS:
        raise NotMovableError(
            f"the images of this dataset are inside {layout} files, which apply cannot rewrite: "
            "nothing was moved; `datacheck apply` writes the decisions as a change list instead"
        )
    _check_identity(decisions, report, root)
    hashes = _report_hashes(report)
    qdir = Path(quarantine) if quarantine is not None else default_quarantine(root)
    if inside(qdir, root):
        raise DecisionsError(f"the quarantine folder {qdir} must be outside the dataset {root}")
    moves: list[Move] = []
    unchanged: list[Decision] = []
    problems: list[str] = []
    taken: set[str] = set()
    for decision in decisions.decisions:
        if decision.action not in MOVING_ACTIONS:
            unchanged.append(decision)
            continue
        try:
            sha = _verified_hash(decision, hashes, root)
            dst = _destination(decision, root, qdir, layout)
        except ValueError as err:
            problems.append(str(err))
            continue
        if dst is None:
            unchanged.append(decision)
            continue
        free = _free_name(dst, taken)
        taken.add(str(free))
        moves.append(
            Move(
                index=len(moves),
                file=decision.file,
                action=decision.action,
                src=str(root / decision.file),
                dst=str(free),
                sha256=sha,
                target=decision.target,
                renamed=free != dst,
                finding=decision.finding,
            )
        )
    if problems:
        raise DecisionsError(
            listing(
                f"refusing to apply: {len(problems)} of the decisions no longer match the dataset", problems
            )
            + "\nnothing was moved; audit the dataset again and redo these decisions on the new report"
        )
    return Plan(
        root=root,
        quarantine=qdir,
        report_id=decisions.report_id,
        moves=tuple(moves),
        unchanged=tuple(unchanged),
    )


#: Columns of the change list written for datasets apply cannot move.
CHANGE_LIST_COLUMNS = ("key", "action", "target", "sha256", "finding")


def is_movable(report: Mapping[str, Any]) -> bool:
    """Whether ``apply`` can move this report's images (plain files, not container members)."""
    return report["dataset"].get("layout", "classes") not in CONTAINER_LAYOUTS


def write_change_list(decisions: DecisionSet, report: Mapping[str, Any], out: Path) -> tuple[Path, int]:
    """Write the remove/relabel decisions as a CSV for a dataset kept in container files.

    The list is what a user's export step applies where the shards or tables are produced (filter the
    removed keys, rewrite the relabelled ones). Every decision is checked against the report first (same
    report, each key in it with the same hash); keep and ignore decisions are left out.

    Returns:
        The file written and the number of changes in it.

    Raises:
        DecisionsError: The decisions do not belong to this report.
    """
    _check_report_id(decisions, report)
    hashes = _report_hashes(report)
    rows, problems = [], []
    for decision in decisions.decisions:
        if decision.action not in MOVING_ACTIONS:
            continue
        recorded = hashes.get(decision.file)
        if recorded is None or (decision.sha256 is not None and decision.sha256 != recorded):
            problems.append(f"'{decision.file}': not in the report with this hash")
            continue
        rows.append([decision.file, decision.action, decision.target or "", recorded, decision.finding or ""])
    if problems:
        raise DecisionsError(
            listing(f"refusing: {len(problems)} decisions do not match the report", problems)
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CHANGE_LIST_COLUMNS)
        writer.writerows(rows)
    tmp.replace(out)
    return out, len(rows)


def _check_report_id(decisions: DecisionSet, report: Mapping[str, Any]) -> None:
    if decisions.report_id != report.get("report_id"):
        raise DecisionsError(
            f"these decisions were made on report {decisions.report_id}, not on report "
            f"{report.get('report_id')} (pass --report with the report.json they were exported from)"
        )


def _check_identity(decisions: DecisionSet, report: Mapping[str, Any], root: Path) -> None:
    _check_report_id(decisions, report)
    if os.path.normpath(decisions.dataset_root) != os.path.normpath(str(root)):
        raise DecisionsError(
            f"these decisions are for the dataset at {decisions.dataset_root}, but the report is of {root}"
        )
    if not root.is_dir():
        raise DecisionsError(f"the dataset folder {root} does not exist (was it moved?)")


def _report_hashes(report: Mapping[str, Any]) -> dict[str, str | None]:
    fmap = report.get("map") or {}
    return dict(zip(fmap.get("path", []), fmap.get("sha256", []), strict=True))


def _verified_hash(decision: Decision, hashes: Mapping[str, str | None], root: Path) -> str:
    """The hash the file must have; raises ``ValueError`` saying why the decision cannot be carried out."""
    file = decision.file
    _check_relative(file)
    recorded = hashes.get(file)
    if recorded is None:
        raise ValueError(f"'{file}': the report holds no hash for it, so a change could not be detected")
    if decision.sha256 is not None and decision.sha256 != recorded:
        raise ValueError(f"'{file}': the decision's sha256 is not the one in the report")
    path = root / file
    if path.is_symlink() or not path.is_file():
        raise ValueError(f"'{file}': missing (moved or deleted since the audit)")
    if file_sha256(path) != recorded:
        raise ValueError(f"'{file}': changed since the audit (hash mismatch)")
    return recorded


def _check_relative(file: str) -> None:
    parts = PurePosixPath(file).parts
    if not parts or file.startswith("/") or "\\" in file or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"'{file}': not a plain dataset-relative path")


def _destination(decision: Decision, root: Path, qdir: Path, layout: str) -> Path | None:
    """Where the file goes, or ``None`` when the decision moves nothing (relabel to its own class)."""
    parts = PurePosixPath(decision.file).parts
    if decision.action == "remove":
        return qdir.joinpath(*parts)
    target = decision.target or ""
    if (
        target in ("", ".", "..")
        or "/" in target
        or "\\" in target
        or "\0" in target
        or target.startswith(".")
    ):
        raise ValueError(f"'{decision.file}': '{target}' cannot be a class folder name")
    if layout == "manifest":
        raise ValueError(
            f"'{decision.file}': relabel needs a folder layout; edit the manifest's label instead"
        )
    position = 1 if layout == "splits" else 0
    if len(parts) < position + 2:
        raise ValueError(f"'{decision.file}': not inside a class folder")
    if parts[position] == target:
        return None
    return root.joinpath(*parts[:position], target, *parts[position + 1 :])


def _free_name(dst: Path, taken: set[str]) -> Path:
    """``dst``, or ``stem-1.ext``, ``stem-2.ext``… the first that neither exists nor is planned."""
    candidate, n = dst, 0
    while str(candidate) in taken or os.path.lexists(candidate):
        n += 1
        candidate = dst.with_name(f"{dst.stem}-{n}{dst.suffix}")
    return candidate


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` or under it (lexically, after making both absolute)."""
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------------------ util


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are the same file (hard links included); ``False`` if either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def fsync_dir(folder: Path) -> None:
    """Make a directory entry change durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def iter_plan_rows(plan: Plan) -> Iterator[tuple[str, str, str, str]]:
    """``(action, file, destination, remark)`` per move, destinations relative to root or quarantine."""
    for move in plan.moves:
        dst = Path(move.dst)
        if inside(dst, plan.quarantine):
            where = f"quarantine/{dst.relative_to(plan.quarantine).as_posix()}"
        else:
            where = dst.relative_to(plan.root).as_posix()
        action = f"relabel → {move.target}" if move.action == "relabel" else "remove"
        yield action, move.file, where, "renamed: name taken" if move.renamed else ""
