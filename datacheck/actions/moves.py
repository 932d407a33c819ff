"""Carrying out a plan, resuming it after a crash, and undoing it: moves that never overwrite or delete."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from datacheck.actions.journal import (
    JOURNAL_VERSION,
    Journal,
    JournalError,
    Outcome,
    ProgressFn,
    default_journal,
    read_journal,
)
from datacheck.actions.planning import Move, Plan, fsync_dir, inside, same_file
from datacheck.errors import DatacheckError
from datacheck.fileio import file_sha256
from datacheck.outputs import MARKER, mark

logger = logging.getLogger(__name__)


class ApplyStopped(DatacheckError):
    """An operating-system error stopped an apply or undo part-way; the journal can finish or undo it."""

    exit_code = 2


# --------------------------------------------------------------------------------------------- execute


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
        handle = Journal(path, create=True)
    except FileExistsError:
        raise JournalError(f"journal {path} already exists; choose another --journal") from None
    with handle:
        handle.write(header)
        if any(inside(Path(m.dst), plan.quarantine) for m in plan.moves):
            _make_dirs(plan.quarantine, handle)
            mark(plan.quarantine, "quarantine")  # a later audit of the dataset's parent must not read it
        outcome = _forward(plan.moves, frozenset(), handle, progress)
    outcome.renamed = plan.renamed
    return outcome


def resume(journal: Path, *, progress: ProgressFn | None = None) -> Outcome:
    """Finish an interrupted apply from its journal (moves already done are recognised on disk)."""
    state = read_journal(journal)
    with Journal(state.path, create=False) as handle:
        handle.write({"type": "resume", "time": datetime.now(UTC).isoformat()})
        outcome = _forward(state.moves, state.done, handle, progress)
    outcome.renamed = tuple(m for m in state.moves if m.renamed)
    return outcome


_APPLY_STOPPED = (
    "stopped at '{file}': {err}. Fix the cause, then run `datacheck apply --resume {journal}` to finish, "
    "or `datacheck undo {journal}` to put everything back"
)
_UNDO_STOPPED = "undo stopped at '{file}': {err}. Fix the cause and run `datacheck undo {journal}` again"


def _attempt(
    step: Callable[[Move, Journal], bool],
    move: Move,
    handle: Journal,
    outcome: Outcome,
    stopped: str,
    left: str,
) -> bool | None:
    """One move (or its undo): whether a file moved; ``None`` for a conflict, recorded and left alone.

    An OS error stops the whole run (``stopped`` says how to resume), since the next move would likely fail
    the same way.
    """
    try:
        moved = step(move, handle)
    except OSError as err:
        raise ApplyStopped(stopped.format(file=move.file, err=err, journal=handle.path)) from err
    except _Conflict as err:
        outcome.conflicts.append((move.file, str(err)))
        logger.warning("%s: %s: %s", left, move.file, err)
        return None
    outcome.moved += int(moved)
    outcome.already += int(not moved)
    return moved


def _forward(
    moves: Sequence[Move], done: frozenset[int], handle: Journal, progress: ProgressFn | None
) -> Outcome:
    outcome = Outcome(journal=handle.path, total=len(moves))
    for n, move in enumerate(moves, 1):
        moved = _attempt(_apply_one, move, handle, outcome, _APPLY_STOPPED, "left alone")
        if moved is not None and (move.index not in done or moved):
            handle.write({"type": "done", "index": move.index})
        if progress is not None:
            progress(n, len(moves))
    outcome.complete = not outcome.conflicts
    if outcome.complete:
        handle.write({"type": "complete", "time": datetime.now(UTC).isoformat()})
    return outcome


class _Conflict(Exception):
    """The disk is not in a state this move can continue from; the files are left as they are."""


def _apply_one(move: Move, handle: Journal) -> bool:
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
    if file_sha256(src) != move.sha256:
        raise _Conflict("changed since the plan was made (hash mismatch)")
    _relink(src, dst, move.sha256)
    return True


def _state(src: Path, dst: Path, sha: str) -> str:
    """``pending``, ``done``, ``both`` (identical copies, move half done) or a conflict description."""
    has_src, has_dst = os.path.lexists(src), os.path.lexists(dst)
    if has_src and not has_dst:
        return "pending"
    if has_dst and not has_src:
        return "done" if file_sha256(dst) == sha else "the moved file's content differs from the journal"
    if has_src and has_dst:
        if same_file(src, dst) or (file_sha256(src) == sha and file_sha256(dst) == sha):
            return "both"
        return f"{dst} exists and is another file; nothing is overwritten"
    return "neither the file nor its moved copy exists"


def _make_dirs(folder: Path, handle: Journal) -> None:
    """Create ``folder`` and its missing ancestors, each journalled first so that undo removes it."""
    for missing in _missing_dirs(folder):
        handle.write({"type": "mkdir", "path": str(missing)})
        missing.mkdir(exist_ok=True)
        fsync_dir(missing.parent)


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
    fsync_dir(dst.parent)
    _unlink(src)


def _copy_no_overwrite(src: Path, dst: Path, sha: str) -> None:
    tmp = dst.with_name(f".{dst.name}.datacheck-partial")
    with open(src, "rb") as reader, open(tmp, "wb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
        writer.flush()
        os.fsync(writer.fileno())
    shutil.copystat(src, tmp)
    if file_sha256(tmp) != sha:
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
    fsync_dir(path.parent)


# ------------------------------------------------------------------------------------------------ undo


def undo(journal: Path, *, progress: ProgressFn | None = None) -> Outcome:
    """Put every file of an apply (complete or interrupted) back where it was, byte-identical.

    Files are verified against the journal's hashes; a file whose content changed after it was moved is
    left where it is and reported. Folders the apply created are removed when empty.
    """
    state = read_journal(journal)
    outcome = Outcome(journal=state.path, total=len(state.moves))
    with Journal(state.path, create=False) as handle:
        handle.write({"type": "undo", "time": datetime.now(UTC).isoformat()})
        for n, move in enumerate(reversed(state.moves), 1):
            if _attempt(lambda m, _: _undo_one(m), move, handle, outcome, _UNDO_STOPPED, "not restored"):
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
        if file_sha256(src) != move.sha256:
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
