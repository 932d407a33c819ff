"""The SQLite side of the bottleneck cache (:mod:`datacheck.embed.cache`): open, validate, transact.

``<directory>/cache.sqlite`` is opened in WAL mode with ``synchronous=NORMAL``; a new database gets the
schema (once, even with racing processes), an existing one is validated (format magic, schema version,
tables) so a foreign, corrupt or newer file raises :class:`CacheError` instead of being used. Writes run in
one ``BEGIN IMMEDIATE`` transaction each, retried with back-off while another process holds the lock.

:class:`CacheDatabase` is the base of :class:`~datacheck.embed.cache.Cache`, which adds what is stored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from datacheck._version import __version__
from datacheck.errors import DatacheckError
from datacheck.outputs import mark

# The records keep the name of the module they were split from (logging configuration, tests).
logger = logging.getLogger("datacheck.embed.cache")

DB_NAME = "cache.sqlite"
"""File name of the database inside the cache directory."""
MAGIC = "datacheck-bottleneck-cache"
"""Value of ``meta.magic`` identifying a datacheck cache."""
SCHEMA_VERSION = 1
"""Schema written and read by this version of datacheck."""
MAX_SQL_VARIABLES = 900
"""Most bound parameters per statement (SQLite builds before 3.32 allow only 999)."""
BUSY_TIMEOUT_S = 30.0
"""How long one statement waits for another process's write lock before failing."""
LOCK_RETRIES = 3
"""Attempts of a whole transaction when SQLite still reports the database as locked or busy."""

_SQLITE_HEADER = b"SQLite format 3\x00"
_HINT = "delete it or pass --cache DIR"

# Plain rowid tables: rows of several kB (vectors, ~3 kB stats blobs) are stored more compactly and written
# about twice as fast as in WITHOUT ROWID tables, whose b-tree cells spill to overflow pages beyond ~1 kB.
_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE tags (id INTEGER PRIMARY KEY, tag TEXT NOT NULL UNIQUE)",
    """CREATE TABLE embeddings (
        sha BLOB NOT NULL,
        tag_id INTEGER NOT NULL REFERENCES tags(id),
        dtype TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,
        n_logits INTEGER,
        logits BLOB,
        PRIMARY KEY (sha, tag_id)
    )""",
    """CREATE TABLE stats (
        sha BLOB NOT NULL,
        version INTEGER NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (sha, version)
    )""",
)
_TABLES = frozenset({"meta", "tags", "embeddings", "stats"})

_T = TypeVar("_T")


class CacheError(DatacheckError):
    """The cache cannot be used: foreign or corrupt file, newer schema, locked, unwritable or read-only."""


# ------------------------------------------------------------------------------------- sqlite helpers


# ------------------------------------------------------------------------------------- sqlite helpers


def _is_locked(err: sqlite3.OperationalError) -> bool:
    """Whether SQLite failed because another connection holds the database."""
    message = str(err).lower()
    return "locked" in message or "busy" in message


def table_names(conn: sqlite3.Connection) -> set[str]:
    """Names of the tables in the database of ``conn``."""
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _create_schema(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA:
        conn.execute(statement)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [
            ("magic", MAGIC),
            ("schema_version", str(SCHEMA_VERSION)),
            ("created", created),
            ("created_by", f"datacheck {__version__}"),
        ],
    )


def file_size(path: Path) -> int:
    """Size of ``path`` in bytes; 0 when it is missing or cannot be read."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


# ------------------------------------------------------------------------------------- the database


class CacheDatabase:
    """The SQLite connection of one cache directory: opening, validation, locking and transactions.

    Args:
        directory: Cache directory; created (with ``cache.sqlite`` in it) unless ``readonly``.
        readonly: Open without writing anything. A missing cache then reads as empty, and writes raise
            :class:`CacheError`.

    Raises:
        CacheError: If the directory cannot be created, or ``cache.sqlite`` is not a datacheck cache, is
            damaged, or was written by a newer datacheck.
    """

    def __init__(self, directory: Path | str, *, readonly: bool = False) -> None:
        self.directory = Path(directory).expanduser()
        self.database = self.directory / DB_NAME
        self.readonly = readonly
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._ephemeral = False
        self._conn: sqlite3.Connection | None = self._open()
        self._meta = self._read_meta()

    # -- lifecycle --------------------------------------------------------------------------------

    def __repr__(self) -> str:
        mode = "readonly" if self.readonly else "readwrite"
        return f"Cache({str(self.directory)!r}, {mode}{', closed' if self._conn is None else ''})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent); the last process to close checkpoints the WAL."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _open(self) -> sqlite3.Connection:
        if self.readonly and file_size(self.database) == 0:
            return self._open_ephemeral()
        if not self.readonly:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise CacheError(
                    f"cannot create cache directory {self.directory}: {err}; pass --cache DIR"
                ) from err
            mark(self.directory, "cache")
        self._check_header()
        try:
            conn = self._connect()
        except sqlite3.OperationalError as err:
            raise self._error(err) from err
        except sqlite3.DatabaseError as err:
            raise self._foreign(str(err)) from err
        if self.readonly and not table_names(conn):
            conn.close()
            return self._open_ephemeral()
        return conn

    def _open_ephemeral(self) -> sqlite3.Connection:
        """Open an empty in-memory cache standing in for a missing one opened read-only."""
        self._ephemeral = True
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        _create_schema(conn)
        return conn

    def _check_header(self) -> None:
        """Reject files that are not SQLite at all, with a clearer message than SQLite's."""
        try:
            with self.database.open("rb") as fh:
                head = fh.read(len(_SQLITE_HEADER))
        except FileNotFoundError:
            return
        except OSError as err:
            raise self._foreign(f"cannot read it: {err}") from err
        if head and head != _SQLITE_HEADER:
            raise self._foreign("not an SQLite database")

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False is safe: every use of the connection holds self._lock.
        if self.readonly:
            target, uri = self.database.resolve().as_uri() + "?mode=ro", True
        else:
            target, uri = str(self.database), False
        conn = sqlite3.connect(
            target, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False, uri=uri
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if not self.readonly:
                self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA journal_size_limit = 67108864")
                self._init_or_validate(conn)
            elif tables := table_names(conn):
                self._validate(conn, tables)
        except BaseException:
            conn.close()
            raise
        return conn

    def _init_or_validate(self, conn: sqlite3.Connection) -> None:
        """Create the schema in a new database (once, even with racing processes), else validate it."""
        tables = table_names(conn)
        if tables:
            self._validate(conn, tables)
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = table_names(conn)
            if not tables:
                _create_schema(conn)
                logger.info("created bottleneck cache %s", self.database)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if tables:
            self._validate(conn, tables)

    def _validate(self, conn: sqlite3.Connection, tables: set[str]) -> None:
        if "meta" not in tables:
            raise self._foreign("an SQLite database without datacheck's meta table")
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError as err:
            raise self._foreign(f"its meta table is not datacheck's: {err}") from None
        if meta.get("magic") != MAGIC:
            raise self._foreign(f"meta.magic is {meta.get('magic')!r}")
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise self._foreign(f"meta.schema_version is {meta.get('schema_version')!r}") from None
        if version > SCHEMA_VERSION:
            raise CacheError(
                f"{self.database} was written by a newer datacheck (cache schema {version}; this version "
                f"reads schema {SCHEMA_VERSION}); upgrade datacheck or pass --cache DIR to use another cache"
            )
        if version < SCHEMA_VERSION or not tables >= _TABLES:
            raise self._foreign(f"schema {version} with tables {sorted(tables)}")

    def _read_meta(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db().execute("SELECT key, value FROM meta").fetchall())

    # -- errors and transactions ------------------------------------------------------------------

    def _foreign(self, reason: str) -> CacheError:
        return CacheError(f"{self.database} is not a datacheck cache ({reason}); {_HINT}")

    def _error(self, err: sqlite3.Error) -> CacheError:
        if isinstance(err, sqlite3.OperationalError) and _is_locked(err):
            return CacheError(
                f"{self.database} stayed locked by another process for more than {BUSY_TIMEOUT_S:.0f} s "
                f"({err}); wait for it to finish or pass --cache DIR"
            )
        if isinstance(err, sqlite3.OperationalError):
            return CacheError(f"cannot use cache {self.database}: {err}")
        return CacheError(f"{self.database} is damaged ({err}); {_HINT}")

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"{self!r} is closed")
        if os.getpid() != self._pid:
            raise RuntimeError("a Cache cannot be used across fork(); open a new Cache in each process")
        return self._conn

    def _retry(self, operation: Callable[[], _T]) -> _T:
        """Run ``operation``, retrying with back-off while SQLite reports the database locked or busy."""
        for attempt in range(LOCK_RETRIES):
            try:
                return operation()
            except sqlite3.OperationalError as err:
                if not _is_locked(err) or attempt == LOCK_RETRIES - 1:
                    raise
                logger.warning("cache %s is busy (%s); retrying", self.database, err)
                time.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")

    def _write(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``body`` in one ``BEGIN IMMEDIATE`` transaction: all of it is committed or none."""
        if self.readonly:
            raise CacheError(f"cache {self.directory} was opened read-only")
        with self._lock:
            conn = self._db()

            def transaction() -> _T:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = body(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result

            try:
                return self._retry(transaction)
            except sqlite3.Error as err:
                raise self._error(err) from err

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """Hold a consistent read snapshot, turning SQLite errors into :class:`CacheError`."""
        with self._lock:
            conn = self._db()
            try:
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as err:
                raise self._error(err) from err
