"""Content-addressed, crash-safe store of bottleneck vectors, logits and per-image statistics.

Everything is keyed by the SHA-256 of a file's *bytes*, never by its path, so renaming or moving images costs
nothing and editing one image re-embeds only that image:

* :func:`embedding_key` combines the file hash with the backend's ``cache_tag`` (model id + input size +
  preprocessing version), so two backbones never share vectors;
* :func:`stats_key` combines it with the version of the ``ImageStats`` byte format.

The store is one SQLite database, ``<directory>/cache.sqlite``, in WAL mode with ``synchronous=NORMAL``:
each ``put_*`` call is one transaction, so a ``kill -9`` loses at most the batch in flight, and several
processes may read and write the same cache at once (a 30 s busy timeout plus retries serialise writers).
Vectors and logits are stored as little-endian float16 blobs together with their length and dtype; a
row whose blob does not match is reported and treated as a miss, never decoded into a wrong vector. A
``meta`` table carries a format magic and schema version so a foreign, corrupt or newer file raises
:class:`CacheError` instead of being used.

Thread-safety: a :class:`Cache` holds one connection guarded by a lock, so one object may be shared by
threads (calls are serialised). Do not carry an open :class:`Cache` across ``fork()``: open one per process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import numpy as np

from datacheck._version import __version__
from datacheck.errors import DatacheckError
from datacheck.outputs import mark

logger = logging.getLogger(__name__)

DB_NAME = "cache.sqlite"
"""File name of the database inside the cache directory."""
ARTIFACTS_DIR = "artifacts"
"""Sub-directory for derived files (converted models) managed by :meth:`Cache.artifact_path`."""
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

_VECTOR_DTYPE = "<f2"
_SQLITE_HEADER = b"SQLite format 3\x00"
_SHA_RE = re.compile(r"[0-9a-f]{64}")
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

#: The file-hash memo (added after schema 1; created on first write, so older caches gain it in place).
_FILE_HASHES = """CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    sha BLOB NOT NULL
)"""

_T = TypeVar("_T")
EmbeddingRow = tuple[np.ndarray, np.ndarray | None]
"""A cached embedding: float32 bottleneck vector and float32 logits (or ``None``)."""
_StoredRow = tuple[str, str, int, bytes, int | None, bytes | None]
"""(key, dtype, dim, vector blob, n_logits, logits blob) as read from the database."""


class CacheError(DatacheckError):
    """The cache cannot be used: foreign or corrupt file, newer schema, locked, unwritable or read-only."""


@dataclass(frozen=True)
class CacheInfo:
    """What ``datacheck cache info`` shows.

    Attributes:
        path: The cache directory.
        database: The SQLite file inside it.
        size_bytes: Bytes on disk: database, its WAL and shared-memory files, and artifacts.
        embeddings_per_tag: Number of cached embeddings for each ``cache_tag`` (tags with none are omitted).
        stats_rows: Number of cached per-image statistics blobs.
        created: When the cache was created (ISO 8601, UTC), or ``None`` if it does not exist yet.
        schema_version: Schema version of the database.
    """

    path: Path
    database: Path
    size_bytes: int
    embeddings_per_tag: Mapping[str, int]
    stats_rows: int
    created: str | None
    schema_version: int

    @property
    def embeddings(self) -> int:
        """Total number of cached embeddings over all tags."""
        return sum(self.embeddings_per_tag.values())


# --------------------------------------------------------------------------------------------- keys


def _check_sha(file_sha256: str) -> str:
    sha = file_sha256.lower()
    if not _SHA_RE.fullmatch(sha):
        raise ValueError(f"not a SHA-256 hex digest: {file_sha256!r}")
    return sha


def embedding_key(file_sha256: str, cache_tag: str) -> str:
    """Cache key of one file's bottleneck (and logits) under one backend.

    Args:
        file_sha256: Hex SHA-256 of the file's bytes.
        cache_tag: The backend's tag: model id + input size + preprocessing version.

    Returns:
        ``"e:<cache_tag>:<sha256>"``.

    Raises:
        ValueError: If the hash is not 64 hex digits or the tag is empty or not printable.
    """
    if not cache_tag or not cache_tag.isprintable():
        raise ValueError(f"cache_tag must be a non-empty printable string, got {cache_tag!r}")
    return f"e:{cache_tag}:{_check_sha(file_sha256)}"


def stats_key(file_sha256: str, stats_version: int) -> str:
    """Cache key of one file's serialised ``ImageStats``.

    Args:
        file_sha256: Hex SHA-256 of the file's bytes.
        stats_version: Version of the stats byte format (bump it to invalidate every cached blob).

    Returns:
        ``"s:<stats_version>:<sha256>"``.

    Raises:
        ValueError: If the hash is not 64 hex digits or the version is negative.
    """
    if int(stats_version) < 0:
        raise ValueError(f"stats_version must be >= 0, got {stats_version}")
    return f"s:{int(stats_version)}:{_check_sha(file_sha256)}"


def _split_key(key: str, prefix: str) -> tuple[str, bytes]:
    """``prefix + "<middle>:<sha>"`` → (middle, 32-byte digest); ValueError for anything else."""
    if not (key.startswith(prefix) and len(key) > len(prefix) + 65 and key[-65] == ":"):
        raise ValueError(f"not a cache key of kind {prefix!r}: {key!r}")
    sha = key[-64:]
    if not _SHA_RE.fullmatch(sha):
        raise ValueError(f"not a cache key of kind {prefix!r}: {key!r}")
    return key[len(prefix) : -65], bytes.fromhex(sha)


def _group_keys(keys: Iterable[str], prefix: str) -> dict[str, dict[bytes, str]]:
    """Group keys by their middle part (tag or stats version): middle → {digest: key}."""
    groups: dict[str, dict[bytes, str]] = {}
    for key in keys:
        middle, sha = _split_key(key, prefix)
        groups.setdefault(middle, {})[sha] = key
    return groups


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ------------------------------------------------------------------------------------- location


def default_cache_dir() -> Path:
    """Where the cache lives unless ``--cache`` says otherwise.

    Returns:
        ``$DATACHECK_CACHE`` if set, else ``$XDG_CACHE_HOME/datacheck`` (absolute values only, as the XDG
        spec requires), else ``~/.cache/datacheck``.
    """
    explicit = os.environ.get("DATACHECK_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "datacheck"
    return Path.home() / ".cache" / "datacheck"


# ------------------------------------------------------------------------------------- encoding


def as_stored(values: np.ndarray) -> np.ndarray:
    """``values`` as the cache will serve them back: rounded through float16, as float32.

    The pipeline returns freshly computed rows in this form too, so an audit sees identical vectors
    whether its cache was empty or warm (and content keys over them, like the kNN graph's, match). Rows
    with values float16 cannot hold are returned unchanged (they are not cached either).
    """
    array = np.asarray(values, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        half = array.astype(_VECTOR_DTYPE)
    finite = np.isfinite(half).all(axis=-1, keepdims=True)
    return np.where(finite, half.astype(np.float32), array)


def _encode_array(values: np.ndarray, key: str, what: str) -> bytes | None:
    """1-D array → float16 bytes; ``None`` (with a warning) when a value is not finite in float16."""
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what} for {key} must be a non-empty 1-D array, got shape {array.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        half = array.astype(_VECTOR_DTYPE)
    if not np.isfinite(half).all():
        logger.warning(
            "not caching %s: its %s has values that are NaN, infinite or beyond float16", key, what
        )
        return None
    return half.tobytes()


def _encode_embedding(
    key: str, vector: np.ndarray, logits: np.ndarray | None
) -> tuple[str, bytes, int, bytes, int | None, bytes | None] | None:
    """One ``put_embeddings`` item → (tag, sha, dim, vector blob, n_logits, logits blob), or None to skip."""
    tag, sha = _split_key(key, "e:")
    vblob = _encode_array(vector, key, "vector")
    lblob = None if logits is None else _encode_array(logits, key, "logits")
    if vblob is None or (logits is not None and lblob is None):
        return None
    n_logits = None if lblob is None else len(lblob) // 2
    return tag, sha, len(vblob) // 2, vblob, n_logits, lblob


def _is_intact(dtype: str, dim: int, vblob: bytes, n_logits: int | None, lblob: bytes | None) -> bool:
    """Whether a stored row's blobs have the dtype and lengths recorded next to them."""
    if dtype != _VECTOR_DTYPE or vblob is None or len(vblob) != 2 * dim:
        return False
    if n_logits is None and lblob is None:
        return True
    return n_logits is not None and lblob is not None and len(lblob) == 2 * n_logits


def _decode_blobs(blobs: Sequence[bytes], length: int) -> np.ndarray:
    """Convert equal-length float16 blobs to one float32 matrix ``[len(blobs), length]`` in one pass."""
    half = np.frombuffer(b"".join(blobs), dtype=_VECTOR_DTYPE).reshape(len(blobs), length)
    return half.astype(np.float32)


def _decode_rows(rows: Iterable[_StoredRow]) -> tuple[dict[str, EmbeddingRow], list[str]]:
    """Decode stored rows, batched by shape; returns ``({key: (vector, logits)}, damaged keys)``.

    The returned vectors are rows of one matrix per shape: converting 10k rows at once is several times
    faster than 10k small conversions.
    """
    by_shape: dict[tuple[int, int | None], list[_StoredRow]] = {}
    damaged: list[str] = []
    for row in rows:
        key, dtype, dim, vblob, n_logits, lblob = row
        if _is_intact(dtype, dim, vblob, n_logits, lblob):
            by_shape.setdefault((dim, n_logits), []).append(row)
        else:
            damaged.append(key)
    found: dict[str, EmbeddingRow] = {}
    for (dim, n_logits), group in by_shape.items():
        vectors = _decode_blobs([r[3] for r in group], dim)
        logits = None if n_logits is None else _decode_blobs([r[5] for r in group], n_logits)
        for i, row in enumerate(group):
            found[row[0]] = (vectors[i], None if logits is None else logits[i])
    return found, damaged


# ------------------------------------------------------------------------------------- sqlite helpers


def _is_locked(err: sqlite3.OperationalError) -> bool:
    message = str(err).lower()
    return "locked" in message or "busy" in message


def _tables(conn: sqlite3.Connection) -> set[str]:
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


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tree_size(root: Path) -> int:
    if not root.is_dir():
        return 0
    return sum(_file_size(p) for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------- the store


class Cache:
    """The content-addressed bottleneck cache in one directory.

    Args:
        directory: Cache directory; created (with ``cache.sqlite`` in it) unless ``readonly``.
        readonly: Open without writing anything. A missing cache then reads as empty, and
            ``put_*``/``clear`` raise :class:`CacheError`.

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
        if self.readonly and _file_size(self.database) == 0:
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
        if self.readonly and not _tables(conn):
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
            elif tables := _tables(conn):
                self._validate(conn, tables)
        except BaseException:
            conn.close()
            raise
        return conn

    def _init_or_validate(self, conn: sqlite3.Connection) -> None:
        """Create the schema in a new database (once, even with racing processes), else validate it."""
        tables = _tables(conn)
        if tables:
            self._validate(conn, tables)
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = _tables(conn)
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

    # -- embeddings -------------------------------------------------------------------------------

    def get_embeddings(self, keys: Sequence[str]) -> dict[str, EmbeddingRow]:
        """Look up cached embeddings.

        Args:
            keys: Keys from :func:`embedding_key`; duplicates are fine.

        Returns:
            ``{key: (float32 vector, float32 logits or None)}`` for the keys that are cached and intact;
            missing or damaged rows are absent (damaged ones are logged as a warning).

        Raises:
            ValueError: If a key is not an embedding key.
            CacheError: If the database cannot be read.
        """
        groups = _group_keys(keys, "e:")
        stored: list[_StoredRow] = []
        with self._read() as conn:
            for tag, by_sha in groups.items():
                tag_id = self._tag_id(conn, tag, create=False)
                if tag_id is not None:
                    stored.extend(self._fetch_embeddings(conn, tag_id, by_sha))
        found, damaged = _decode_rows(stored)
        if damaged:
            logger.warning(
                "%d cached embedding(s) in %s are damaged and will be recomputed (e.g. %s)",
                len(damaged),
                self.database,
                damaged[0],
            )
        return found

    @staticmethod
    def _fetch_embeddings(
        conn: sqlite3.Connection, tag_id: int, by_sha: Mapping[bytes, str]
    ) -> Iterator[_StoredRow]:
        """Yield the stored rows of one tag, queried in chunks within SQLite's variable limit."""
        shas = list(by_sha)
        for chunk in _chunks(shas, MAX_SQL_VARIABLES - 1):
            sql = (
                "SELECT sha, dtype, dim, vector, n_logits, logits FROM embeddings "
                f"WHERE tag_id = ? AND sha IN ({','.join('?' * len(chunk))})"
            )
            for sha, *rest in conn.execute(sql, (tag_id, *chunk)):
                yield (by_sha[sha], *rest)

    def put_embeddings(self, items: Sequence[tuple[str, np.ndarray, np.ndarray | None]]) -> int:
        """Store embeddings in one transaction (replacing rows with the same key).

        Values are stored as float16; a vector or logits with NaN, infinite or out-of-float16-range values
        is not cached (a warning is logged) so it can never be served back wrong.

        Args:
            items: ``(embedding_key, 1-D vector, 1-D logits or None)`` triples.

        Returns:
            The number of rows written.

        Raises:
            ValueError: If a key is not an embedding key or an array is not 1-D and non-empty.
            CacheError: If the cache is read-only, locked for too long or cannot be written.
        """
        encoded = [row for key, vec, lg in items if (row := _encode_embedding(key, vec, lg)) is not None]
        if not encoded:
            return 0

        def body(conn: sqlite3.Connection) -> int:
            tag_ids = {tag: self._tag_id(conn, tag, create=True) for tag in {row[0] for row in encoded}}
            conn.executemany(
                "INSERT OR REPLACE INTO embeddings (sha, tag_id, dtype, dim, vector, n_logits, logits) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (sha, tag_ids[tag], _VECTOR_DTYPE, dim, vb, nl, lb)
                    for tag, sha, dim, vb, nl, lb in encoded
                ],
            )
            return len(encoded)

        return self._write(body)

    @staticmethod
    def _tag_id(conn: sqlite3.Connection, tag: str, *, create: bool) -> int | None:
        """Id of ``tag`` (inserted when ``create``). Ids are never deleted, so they are never reused."""
        if create:
            conn.execute("INSERT OR IGNORE INTO tags (tag) VALUES (?)", (tag,))
        row = conn.execute("SELECT id FROM tags WHERE tag = ?", (tag,)).fetchone()
        return None if row is None else int(row[0])

    # -- stats ------------------------------------------------------------------------------------

    def get_stats(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Look up cached per-image statistics blobs.

        Args:
            keys: Keys from :func:`stats_key`; duplicates are fine.

        Returns:
            ``{key: blob}`` for the keys that are cached.

        Raises:
            ValueError: If a key is not a stats key.
            CacheError: If the database cannot be read.
        """
        groups = _group_keys(keys, "s:")
        found: dict[str, bytes] = {}
        with self._read() as conn:
            for version, by_sha in groups.items():
                shas = list(by_sha)
                for chunk in _chunks(shas, MAX_SQL_VARIABLES - 1):
                    marks = ",".join("?" * len(chunk))
                    sql = f"SELECT sha, value FROM stats WHERE version = ? AND sha IN ({marks})"
                    for sha, value in conn.execute(sql, (int(version), *chunk)):
                        found[by_sha[sha]] = bytes(value)
        return found

    def put_stats(self, items: Sequence[tuple[str, bytes]]) -> int:
        """Store per-image statistics blobs in one transaction (replacing rows with the same key).

        Args:
            items: ``(stats_key, blob)`` pairs; the blob is opaque to the cache.

        Returns:
            The number of rows written.

        Raises:
            ValueError: If a key is not a stats key.
            CacheError: If the cache is read-only, locked for too long or cannot be written.
        """
        rows = []
        for key, blob in items:
            version, sha = _split_key(key, "s:")
            rows.append((sha, int(version), bytes(blob)))
        if not rows:
            return 0

        def body(conn: sqlite3.Connection) -> int:
            conn.executemany("INSERT OR REPLACE INTO stats (sha, version, value) VALUES (?, ?, ?)", rows)
            return len(rows)

        return self._write(body)

    # -- file-hash memo ---------------------------------------------------------------------------

    def get_file_hashes(self, paths: Sequence[str]) -> dict[str, tuple[str, str]]:
        """``{path: (fingerprint, sha256 hex)}`` remembered for these paths (:meth:`put_file_hashes`).

        Raises:
            CacheError: If the database cannot be read.
        """
        found: dict[str, tuple[str, str]] = {}
        with self._read() as conn:
            if "file_hashes" not in _tables(conn):
                return found
            for chunk in _chunks(list(dict.fromkeys(paths)), MAX_SQL_VARIABLES):
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT path, fingerprint, sha FROM file_hashes WHERE path IN ({marks})"
                for path, fingerprint, sha in conn.execute(sql, chunk):
                    found[path] = (fingerprint, bytes(sha).hex())
        return found

    def put_file_hashes(self, items: Sequence[tuple[str, str, str]]) -> int:
        """Remember ``(absolute path, stat fingerprint, sha256 hex)`` so an unchanged file is not re-read.

        Returns:
            The number of rows written.

        Raises:
            CacheError: If the cache is read-only, locked for too long or cannot be written.
        """
        rows = [(path, fingerprint, bytes.fromhex(_check_sha(sha))) for path, fingerprint, sha in items]
        if not rows:
            return 0

        def body(conn: sqlite3.Connection) -> int:
            conn.execute(_FILE_HASHES)
            conn.executemany(
                "INSERT OR REPLACE INTO file_hashes (path, fingerprint, sha) VALUES (?, ?, ?)", rows
            )
            return len(rows)

        return self._write(body)

    # -- housekeeping -----------------------------------------------------------------------------

    def artifact_path(self, name: str) -> Path:
        """Path for a derived file (e.g. a converted model) under ``<directory>/artifacts/``.

        Args:
            name: Relative path inside the artifacts directory; ``""`` gives the directory itself.

        Returns:
            The path; its parent directories exist unless the cache is read-only.

        Raises:
            ValueError: If ``name`` is absolute or contains ``..``.
        """
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"artifact name must be a relative path without '..': {name!r}")
        root = self.directory / ARTIFACTS_DIR
        path = root / relative
        if not self.readonly:
            (path if path == root else path.parent).mkdir(parents=True, exist_ok=True)
        return path

    def info(self) -> CacheInfo:
        """Location, size on disk and contents of the cache."""
        with self._read() as conn:
            per_tag = dict(
                conn.execute(
                    "SELECT tags.tag, COUNT(*) FROM embeddings JOIN tags ON tags.id = embeddings.tag_id "
                    "GROUP BY embeddings.tag_id"
                ).fetchall()
            )
            stats_rows = int(conn.execute("SELECT COUNT(*) FROM stats").fetchone()[0])
        db_files = [self.database, Path(f"{self.database}-wal"), Path(f"{self.database}-shm")]
        size = sum(_file_size(p) for p in db_files) + _tree_size(self.directory / ARTIFACTS_DIR)
        return CacheInfo(
            path=self.directory,
            database=self.database,
            size_bytes=size,
            embeddings_per_tag=per_tag,
            stats_rows=stats_rows,
            created=None if self._ephemeral else self._meta.get("created"),
            schema_version=int(self._meta["schema_version"]),
        )

    def clear(self) -> None:
        """Delete every cached embedding, statistic and artifact, then give the space back to the OS.

        Raises:
            CacheError: If the cache is read-only, locked for too long or cannot be written.
        """

        def body(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM embeddings")
            conn.execute("DELETE FROM stats")
            conn.execute("DROP TABLE IF EXISTS file_hashes")

        self._write(body)
        self._compact()
        shutil.rmtree(self.directory / ARTIFACTS_DIR, ignore_errors=True)
        logger.info("cleared bottleneck cache %s", self.directory)

    def _compact(self) -> None:
        """VACUUM and truncate the WAL; skipped with a warning while other processes hold the database."""
        with self._lock:
            conn = self._db()
            try:
                conn.execute("VACUUM")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError as err:
                logger.warning("could not compact %s (%s); the space will be reused", self.database, err)
