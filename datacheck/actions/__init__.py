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

Modules: ``decisions`` (loading and checking decisions.json), ``planning`` (decisions → moves, or a change
list for container datasets), ``journal`` (the fsynced JSON-lines journal), ``moves`` (execute, resume, undo).
"""

from datacheck.actions.decisions import (
    ACTIONS,
    DECISIONS_SCHEMA,
    DECISIONS_VERSION,
    MOVING_ACTIONS,
    Decision,
    DecisionsError,
    DecisionSet,
    NotMovableError,
    load_decisions,
    load_report,
)
from datacheck.actions.journal import (
    JOURNAL_VERSION,
    JournalError,
    JournalState,
    Outcome,
    ProgressFn,
    default_journal,
    read_journal,
)
from datacheck.actions.moves import ApplyStopped, execute, resume, undo
from datacheck.actions.planning import (
    CHANGE_LIST_COLUMNS,
    Move,
    Plan,
    default_quarantine,
    is_movable,
    iter_plan_rows,
    plan,
    write_change_list,
)
from datacheck.fileio import file_sha256

__all__ = [
    "ACTIONS",
    "CHANGE_LIST_COLUMNS",
    "DECISIONS_SCHEMA",
    "DECISIONS_VERSION",
    "JOURNAL_VERSION",
    "MOVING_ACTIONS",
    "ApplyStopped",
    "Decision",
    "DecisionSet",
    "DecisionsError",
    "JournalError",
    "JournalState",
    "Move",
    "NotMovableError",
    "Outcome",
    "Plan",
    "ProgressFn",
    "default_journal",
    "default_quarantine",
    "execute",
    "file_sha256",
    "is_movable",
    "iter_plan_rows",
    "load_decisions",
    "load_report",
    "plan",
    "read_journal",
    "resume",
    "undo",
    "write_change_list",
]
