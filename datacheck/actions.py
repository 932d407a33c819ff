"""Carry out annotators' decisions (decisions.json) on the dataset, without ever losing a byte.

``plan`` turns the decisions exported from report.html into moves after checking them against the report
they were made on: same report id, same dataset root, and every file still has the SHA-256 the audit saw.
``execute`` writes a journal (JSON lines, fsynced) *before* it moves anything, then moves each file:

* remove: into the quarantine folder (default ``<root>/../<root-name>.datacheck-quarantine/``), keeping its
  path relative to the root;
* relabel: into the target class folder of the same split.

Nothing is deleted or overwritten: a move is a hard link followed by unlinking the source (a verified copy
across file systems), and a destination that already exists gets a ``-1``, ``-2``… suffix, reported in the
plan. Each move is journalled when done. Whatever state a crash (``kill -9``) leaves, every move is in one of
a few recognisable states on disk, so :func:`resume` finishes the plan and :func:`undo` puts every file back
byte-identical (hashes verified), removing the folders the apply created. See docs/apply.md.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from datacheck.dataset import CONTAINER_LAYOUTS
from datacheck.errors import DatacheckError
from datacheck.outputs import MARKER, mark

logger = logging.getLogger(__name__)

DECISIONS_SCHEMA = "datacheck-decisions"
DECISIONS_VERSION = 1
JOURNAL_VERSION = 1
ACTIONS = ("keep", "remove", "relabel", "ignore")
MOVING_ACTIONS = ("remove", "relabel")

#: ``progress(done, total)`` after each file.
ProgressFn = Callable[[int, int], None]


class DecisionsError(DatacheckError):
    """The decisions cannot be applied as they are (wrong report, changed files, bad file); nothing moved."""

    exit_code = 2


class NotMovableError(DecisionsError):
    """The dataset's images live inside container files (shards, tables): see :func:`write_change_list`."""


class JournalError(DatacheckError):
    """A journal cannot be read or does not describe an apply."""

    exit_code = 2


class ApplyStopped(DatacheckError):
    """An operating-system error stopped an apply or undo part-way; the journal can finish or undo it."""

    exit_code = 2


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
        raise DecisionsError(_listing(f"{path} has {len(problems)} malformed entries", problems))
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
    """Read a report.json; it must carry a ``report_id`` and the file index (``map``)."""
    doc = _read_json(path, "report")
    if not isinstance(doc, dict) or "dataset" not in doc or not doc.get("report_id"):
        raise DecisionsError(f"{path} is not a datacheck report.json with a report id")
    return doc


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DecisionsError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DecisionsError(f"cannot read {what} {path}: {err}") from None


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
    if _inside(qdir, root):
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
            _listing(
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
            _listing(f"refusing: {len(problems)} decisions do not match the report", problems)
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
    if sha256_file(path) != recorded:
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


def _inside(path: Path, root: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------- journal


@dataclass
class Outcome:
    """What an execute / resume / undo did.

    Attributes:
        journal: The journal file.
        total: Moves in the plan.
        moved: Files moved by this call.
        already: Files that were already where this call would put them.
        conflicts: ``(file, reason)`` for moves left alone because the disk is not in an expected state.
        renamed: Moves whose destination got a suffix.
        complete: Every move is done (apply) or undone (undo).
    """

    journal: Path
    total: int
    moved: int = 0
    already: int = 0
    conflicts: list[tuple[str, str]] = field(default_factory=list)
    renamed: tuple[Move, ...] = ()
    complete: bool = False


@dataclass(frozen=True)
class JournalState:
    """A journal as read back: the plan and what happened since."""

    path: Path
    header: dict[str, Any]
    moves: tuple[Move, ...]
    made_dirs: tuple[str, ...]
    done: frozenset[int]
    undone: frozenset[int]
    complete: bool
    undo_complete: bool


def default_journal(quarantine: Path) -> Path:
    """``<quarantine>/journals/apply-<UTC time>.jsonl``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return quarantine / "journals" / f"apply-{stamp}.jsonl"


class _Journal:
    """Append-only JSON-lines file; every line is fsynced before the caller goes on."""

    def __init__(self, path: Path, *, create: bool) -> None:
        self.path = path
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            _fsync_dir(path.parent)
        else:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a line cut short by a crash
                os.write(fd, b"\n")
        self._fd = fd

    def write(self, record: Mapping[str, Any]) -> None:
        os.write(self._fd, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> _Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_journal(path: Path) -> JournalState:
    """Read a journal, tolerating a last line cut short by a crash.

    Raises:
        JournalError: Missing file, or it does not start with an apply plan.
    """
    try:
        lines = Path(path).read_bytes().decode("utf-8").splitlines()
    except FileNotFoundError:
        raise JournalError(f"journal not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise JournalError(f"cannot read journal {path}: {err}") from None
    records = []
    for n, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if not line.strip() or n == len(lines) - 1 or _starts_session(lines[n + 1]):
                continue  # a write torn by a crash (later sessions start on a fresh line)
            raise JournalError(
                f"{path}: line {n + 1} is not JSON; the journal was edited or damaged"
            ) from None
    if not records or records[0].get("type") != "plan" or records[0].get("version") != JOURNAL_VERSION:
        raise JournalError(f"{path} is not a datacheck apply journal")
    header = records[0]
    moves = tuple(Move(**m) for m in header["moves"])
    kinds: dict[str, list[dict]] = {}
    for record in records[1:]:
        kinds.setdefault(record.get("type", ""), []).append(record)
    return JournalState(
        path=Path(path),
        header=header,
        moves=moves,
        made_dirs=tuple(r["path"] for r in kinds.get("mkdir", [])),
        done=frozenset(r["index"] for r in kinds.get("done", [])),
        undone=frozenset(r["index"] for r in kinds.get("undone", [])),
        complete=bool(kinds.get("complete")),
        undo_complete=bool(kinds.get("undo-complete")),
    )


# --------------------------------------------------------------------------------------------- execute


def _starts_session(line: str) -> bool:
    try:
        return json.loads(line).get("type") in ("resume", "undo")
    except (json.JSONDecodeError, AttributeError):
        return False


def execute(plan: Plan, *, journal: Path | None = None, progress: ProgressFn | None = None) -> Outcome:
    """Carry out a plan: write the journal, then move every file (see the module docstring).

    Args:
        plan: From :func:`plan`.
        journal: Journal file to create (default :func:`default_journal`); it must not exist.
        progress: Called after each file.

    Returns:
        What was done; ``conflicts`` lists moves that were skipped because the disk changed meanwhile.
    """
    path = Path(journal) if journal is not None else default_journal(plan.quarantine)
    header = {
        "type": "plan",
        "version": JOURNAL_VERSION,
        "created": datetime.now(UTC).isoformat(),
        "report_id": plan.report_id,
        "dataset_root": str(plan.root),
        "quarantine": str(plan.quarantine),
        "moves": [asdict(m) for m in plan.moves],
    }
    try:
        handle = _Journal(path, create=True)
    except FileExistsError:
        raise JournalError(f"journal {path} already exists; choose another --journal") from None
    with handle:
        handle.write(header)
        if any(_inside(Path(m.dst), plan.quarantine) for m in plan.moves):
            _make_dirs(plan.quarantine, handle)
            mark(plan.quarantine, "quarantine")  # a later audit of the dataset's parent must not read it
        outcome = _forward(plan.moves, frozenset(), handle, progress)
    outcome.renamed = plan.renamed
    return outcome


def resume(journal: Path, *, progress: ProgressFn | None = None) -> Outcome:
    """Finish an interrupted apply from its journal (moves already done are recognised on disk)."""
    state = read_journal(journal)
    with _Journal(state.path, create=False) as handle:
        handle.write({"type": "resume", "time": datetime.now(UTC).isoformat()})
        outcome = _forward(state.moves, state.done, handle, progress)
    outcome.renamed = tuple(m for m in state.moves if m.renamed)
    return outcome


def _forward(
    moves: Sequence[Move], done: frozenset[int], handle: _Journal, progress: ProgressFn | None
) -> Outcome:
    outcome = Outcome(journal=handle.path, total=len(moves))
    for n, move in enumerate(moves, 1):
        try:
            moved = _apply_one(move, handle)
        except OSError as err:
            raise ApplyStopped(
                f"stopped at '{move.file}': {err}. Fix the cause, then run `datacheck apply --resume "
                f"{handle.path}` to finish, or `datacheck undo {handle.path}` to put everything back"
            ) from err
        except _Conflict as err:
            outcome.conflicts.append((move.file, str(err)))
            logger.warning("left alone: %s: %s", move.file, err)
        else:
            if moved:
                outcome.moved += 1
            else:
                outcome.already += 1
            if move.index not in done or moved:
                handle.write({"type": "done", "index": move.index})
        if progress is not None:
            progress(n, len(moves))
    outcome.complete = not outcome.conflicts
    if outcome.complete:
        handle.write({"type": "complete", "time": datetime.now(UTC).isoformat()})
    return outcome


class _Conflict(Exception):
    """The disk is not in a state this move can continue from; the files are left as they are."""


def _apply_one(move: Move, handle: _Journal) -> bool:
    """Bring one move to its done state; ``False`` when it already was."""
    src, dst = Path(move.src), Path(move.dst)
    state = _state(src, dst, move.sha256)
    if state == "done":
        return False
    if state == "both":  # crashed between link and unlink: the destination is complete
        _unlink(src)
        return True
    if state != "pending":
        raise _Conflict(state)
    _make_dirs(dst.parent, handle)
    if sha256_file(src) != move.sha256:
        raise _Conflict("changed since the plan was made (hash mismatch)")
    _relink(src, dst, move.sha256)
    return True


def _state(src: Path, dst: Path, sha: str) -> str:
    """``pending``, ``done``, ``both`` (identical copies, move half done) or a conflict description."""
    has_src, has_dst = os.path.lexists(src), os.path.lexists(dst)
    if has_src and not has_dst:
        return "pending"
    if has_dst and not has_src:
        return "done" if sha256_file(dst) == sha else "the moved file's content differs from the journal"
    if has_src and has_dst:
        if _same_file(src, dst) or (sha256_file(src) == sha and sha256_file(dst) == sha):
            return "both"
        return f"{dst} exists and is another file; nothing is overwritten"
    return "neither the file nor its moved copy exists"


def _make_dirs(folder: Path, handle: _Journal) -> None:
    """Create ``folder`` and its missing ancestors, each journalled first so that undo removes it."""
    for missing in _missing_dirs(folder):
        handle.write({"type": "mkdir", "path": str(missing)})
        missing.mkdir(exist_ok=True)
        _fsync_dir(missing.parent)


def _missing_dirs(folder: Path) -> list[Path]:
    """Ancestors of ``folder`` (itself included) that do not exist, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    return missing[::-1]


def _relink(src: Path, dst: Path, sha: str) -> None:
    """Move ``src`` to ``dst`` without ever overwriting: hard link + unlink, or a verified copy."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise _Conflict(f"{dst} appeared meanwhile; nothing is overwritten") from None
    except OSError:  # another file system, or one without hard links
        _copy_no_overwrite(src, dst, sha)
    _fsync_dir(dst.parent)
    _unlink(src)


def _copy_no_overwrite(src: Path, dst: Path, sha: str) -> None:
    tmp = dst.with_name(f".{dst.name}.datacheck-partial")
    with open(src, "rb") as reader, open(tmp, "wb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
        writer.flush()
        os.fsync(writer.fileno())
    shutil.copystat(src, tmp)
    if sha256_file(tmp) != sha:
        tmp.unlink()
        raise _Conflict("the copy does not match the original; nothing was moved")
    try:
        os.link(tmp, dst)
    except FileExistsError:
        tmp.unlink()
        raise _Conflict(f"{dst} appeared meanwhile; nothing is overwritten") from None
    except OSError:
        if os.path.lexists(dst):
            tmp.unlink()
            raise _Conflict(f"{dst} appeared meanwhile; nothing is overwritten") from None
        os.rename(tmp, dst)  # no hard links at all here; the existence check above is the guard
    else:
        tmp.unlink()


def _unlink(path: Path) -> None:
    os.unlink(path)
    _fsync_dir(path.parent)


# ------------------------------------------------------------------------------------------------ undo


def undo(journal: Path, *, progress: ProgressFn | None = None) -> Outcome:
    """Put every file of an apply (complete or interrupted) back where it was, byte-identical.

    Files are verified against the journal's hashes; a file whose content changed after it was moved is
    left where it is and reported. Folders the apply created are removed when empty.
    """
    state = read_journal(journal)
    outcome = Outcome(journal=state.path, total=len(state.moves))
    with _Journal(state.path, create=False) as handle:
        handle.write({"type": "undo", "time": datetime.now(UTC).isoformat()})
        for n, move in enumerate(reversed(state.moves), 1):
            try:
                moved = _undo_one(move)
            except OSError as err:
                raise ApplyStopped(
                    f"undo stopped at '{move.file}': {err}. Fix the cause and run `datacheck undo "
                    f"{state.path}` again"
                ) from err
            except _Conflict as err:
                outcome.conflicts.append((move.file, str(err)))
                logger.warning("not restored: %s: %s", move.file, err)
            else:
                outcome.moved += int(moved)
                outcome.already += int(not moved)
                if moved:
                    handle.write({"type": "undone", "index": move.index})
            if progress is not None:
                progress(n, len(state.moves))
        for folder in reversed(state.made_dirs):
            with contextlib.suppress(OSError):  # not empty (someone's files) or already gone
                if os.listdir(folder) == [MARKER]:  # only datacheck's own marker left: the folder is ours
                    os.unlink(os.path.join(folder, MARKER))
                os.rmdir(folder)
        outcome.complete = not outcome.conflicts
        if outcome.complete:
            handle.write({"type": "undo-complete", "time": datetime.now(UTC).isoformat()})
    return outcome


def _undo_one(move: Move) -> bool:
    """Restore one file; ``False`` when it is already in its original place."""
    src, dst = Path(move.src), Path(move.dst)
    state = _state(src, dst, move.sha256)
    if state == "pending":  # never moved
        if sha256_file(src) != move.sha256:
            raise _Conflict("the file in its original place differs from the journal")
        return False
    if state == "both":  # identical copies: the original is in place
        _unlink(dst)
        return True
    if state != "done":
        raise _Conflict(state)
    for folder in _missing_dirs(src.parent):
        folder.mkdir(exist_ok=True)
    _relink(dst, src, move.sha256)
    return True


# ------------------------------------------------------------------------------------------------ util


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _fsync_dir(folder: Path) -> None:
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


def _listing(title: str, problems: Sequence[str], limit: int = 20) -> str:
    lines = [title + ":"] + [f"  - {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  … and {len(problems) - limit} more")
    return "\n".join(lines)


def iter_plan_rows(plan: Plan) -> Iterator[tuple[str, str, str, str]]:
    """``(action, file, destination, remark)`` per move, destinations relative to root or quarantine."""
    for move in plan.moves:
        dst = Path(move.dst)
        if _inside(dst, plan.quarantine):
            where = f"quarantine/{dst.relative_to(plan.quarantine).as_posix()}"
        else:
            where = dst.relative_to(plan.root).as_posix()
        action = f"relabel → {move.target}" if move.action == "relabel" else "remove"
        yield action, move.file, where, "renamed: name taken" if move.renamed else ""
