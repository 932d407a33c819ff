"""The apply journal: JSON lines written (and fsynced) before and after every move."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from datacheck.actions.planning import Move, fsync_dir
from datacheck.errors import DatacheckError

logger = logging.getLogger(__name__)

JOURNAL_VERSION = 1


class JournalError(DatacheckError):
    """A journal cannot be read or does not describe an apply."""

    exit_code = 2


#: ``progress(done, total)`` after each file.
ProgressFn = Callable[[int, int], None]


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


class Journal:
    """Append-only JSON-lines file; every line is fsynced before the caller goes on."""

    def __init__(self, path: Path, *, create: bool) -> None:
        self.path = path
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            fsync_dir(path.parent)
        else:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a line cut short by a crash
                os.write(fd, b"\n")
        self._fd = fd

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record as a JSON line and fsync it."""
        os.write(self._fd, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)

    def __enter__(self) -> Journal:
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
            if not line.strip() or n == len(lines) - 1 or starts_session(lines[n + 1]):
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


def starts_session(line: str) -> bool:
    """Whether a journal line opens a later session (resume or undo)."""
    try:
        return json.loads(line).get("type") in ("resume", "undo")
    except (json.JSONDecodeError, AttributeError):
        return False
