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

Modules: ``cache_codec`` (keys and the float16 byte format), ``cache_db`` (opening, validating and
transacting on the SQLite file), ``file_hashes`` (the memo of file hashes by path and stat fingerprint);
everything public is importable from here.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datacheck.embed.cache_codec import (
    VECTOR_DTYPE,
    EmbeddingRow,
    as_stored,
    chunks,
    decode_rows,
    embedding_key,
    encode_embedding,
    group_keys,
    is_intact,
    split_key,
    stats_key,
)
from datacheck.embed.cache_db import (
    BUSY_TIMEOUT_S,
    DB_NAME,
    LOCK_RETRIES,
    MAGIC,
    MAX_SQL_VARIABLES,
    SCHEMA_VERSION,
    CacheDatabase,
    CacheError,
    file_size,
)
from datacheck.embed.file_hashes import (
    drop_file_hashes,
    file_hash_rows,
    read_file_hashes,
    write_file_hashes,
)

__all__ = [
    "ARTIFACTS_DIR",
    "BUSY_TIMEOUT_S",
    "CIFAR10_DIR",
    "DB_NAME",
    "LOCK_RETRIES",
    "MAGIC",
    "MAX_SQL_VARIABLES",
    "OWNED_DIRS",
    "SCHEMA_VERSION",
    "Cache",
    "CacheError",
    "CacheInfo",
    "EmbeddingRow",
    "as_stored",
    "default_cache_dir",
    "embedding_key",
    "stats_key",
]

logger = logging.getLogger(__name__)

ARTIFACTS_DIR = "artifacts"
"""Sub-directory for derived files (converted models) managed by :meth:`Cache.artifact_path`."""
CIFAR10_DIR = "cifar10"
"""Sub-directory of the reference CIFAR-10 trainer's decoded arrays and download (``datacheck cifar10``)."""
#: Folders beside the database that belong to the cache: counted by ``info``, emptied by ``clear``.
OWNED_DIRS = (ARTIFACTS_DIR, CIFAR10_DIR)


@dataclass(frozen=True)
class CacheInfo:
    """What ``datacheck cache info`` shows.

    Attributes:
        path: The cache directory.
        database: The SQLite file inside it.
        size_bytes: Bytes on disk: database, its WAL and shared-memory files, artifacts and CIFAR-10 arrays.
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


def _tree_size(root: Path) -> int:
    if not root.is_dir():
        return 0
    return sum(file_size(p) for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------- the store


class Cache(CacheDatabase):
    """The content-addressed bottleneck cache in one directory.

    Args:
        directory: Cache directory; created (with ``cache.sqlite`` in it) unless ``readonly``.
        readonly: Open without writing anything. A missing cache then reads as empty, and
            ``put_*``/``clear`` raise :class:`CacheError`.

    Raises:
        CacheError: If the directory cannot be created, or ``cache.sqlite`` is not a datacheck cache, is
            damaged, or was written by a newer datacheck.
    """

    # -- embeddings -------------------------------------------------------------------------------

    def get_embeddings(self, keys: Sequence[str], *, half: bool = False) -> dict[str, EmbeddingRow]:
        """Look up cached embeddings.

        Args:
            keys: Keys from :func:`embedding_key`; duplicates are fine.
            half: Return the vectors as stored, float16, instead of float32 (the same values).

        Returns:
            ``{key: (float32 vector (float16 with ``half``), float16 logits or None)}`` for the keys that are
            cached and intact; missing or damaged rows are absent (damaged ones are logged as a warning).

        Raises:
            ValueError: If a key is not an embedding key.
            CacheError: If the database cannot be read.
        """
        stored = self._stored_embeddings(keys, "vector, n_logits, logits")
        found, damaged = decode_rows(stored, half=half)
        if damaged:
            logger.warning(
                "%d cached embedding(s) in %s are damaged and will be recomputed (e.g. %s)",
                len(damaged),
                self.database,
                damaged[0],
            )
        return found

    def held_embeddings(self, keys: Sequence[str]) -> set[str]:
        """The keys whose embeddings the cache holds intact (:meth:`get_embeddings` would return them).

        Reads the rows' sizes, never their vectors: what a caller that only asks "is it cached?" needs (at
        16,384 keys, ~150 MB of vectors and logits not decoded).
        """
        held: set[str] = set()
        damaged = 0
        for key, *sizes in self._stored_embeddings(keys, "length(vector), n_logits, length(logits)"):
            if is_intact(*sizes):
                held.add(key)
            else:
                damaged += 1
        if damaged:
            logger.warning(
                "%d cached embedding(s) in %s are damaged and will be recomputed", damaged, self.database
            )
        return held

    def _stored_embeddings(self, keys: Sequence[str], columns: str) -> list[tuple]:
        """``(key, dtype, dim, *columns)`` of the stored rows of ``keys`` (absent keys: no row).

        Queried per tag, in chunks within SQLite's variable limit.
        """
        rows: list[tuple] = []
        with self._read() as conn:
            for tag, by_sha in group_keys(keys, "e:").items():
                tag_id = self._tag_id(conn, tag, create=False)
                if tag_id is None:
                    continue
                for chunk in chunks(list(by_sha), MAX_SQL_VARIABLES - 1):
                    sql = (
                        f"SELECT sha, dtype, dim, {columns} FROM embeddings "
                        f"WHERE tag_id = ? AND sha IN ({','.join('?' * len(chunk))})"
                    )
                    rows.extend((by_sha[sha], *rest) for sha, *rest in conn.execute(sql, (tag_id, *chunk)))
        return rows

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
        encoded = [row for key, vec, lg in items if (row := encode_embedding(key, vec, lg)) is not None]
        if not encoded:
            return 0

        def body(conn: sqlite3.Connection) -> int:
            tag_ids = {tag: self._tag_id(conn, tag, create=True) for tag in {row[0] for row in encoded}}
            conn.executemany(
                "INSERT OR REPLACE INTO embeddings (sha, tag_id, dtype, dim, vector, n_logits, logits) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(sha, tag_ids[tag], VECTOR_DTYPE, dim, vb, nl, lb) for tag, sha, dim, vb, nl, lb in encoded],
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

    def get_stats(self, keys: Sequence[str], *, drop_tail: int = 0) -> dict[str, bytes]:
        """Look up cached per-image statistics blobs.

        Args:
            keys: Keys from :func:`stats_key`; duplicates are fine.
            drop_tail: Return each blob less its last ``drop_tail`` bytes (empty when shorter), e.g. without
                the thumbnail a caller does not need.

        Returns:
            ``{key: blob}`` for the keys that are cached.

        Raises:
            ValueError: If a key is not a stats key.
            CacheError: If the database cannot be read.
        """
        groups = group_keys(keys, "s:")
        found: dict[str, bytes] = {}
        with self._read() as conn:
            for version, by_sha in groups.items():
                shas = list(by_sha)
                for chunk in chunks(shas, MAX_SQL_VARIABLES - 1):
                    marks = ",".join("?" * len(chunk))
                    value = "substr(value, 1, max(0, length(value) - ?))" if drop_tail else "value"
                    sql = f"SELECT sha, {value} FROM stats WHERE version = ? AND sha IN ({marks})"
                    args = (drop_tail,) if drop_tail else ()
                    for sha, blob in conn.execute(sql, (*args, int(version), *chunk)):
                        found[by_sha[sha]] = bytes(blob)
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
            version, sha = split_key(key, "s:")
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
        with self._read() as conn:
            return read_file_hashes(conn, paths)

    def put_file_hashes(self, items: Sequence[tuple[str, str, str]]) -> int:
        """Remember ``(absolute path, stat fingerprint, sha256 hex)`` so an unchanged file is not re-read.

        Returns:
            The number of rows written.

        Raises:
            CacheError: If the cache is read-only, locked for too long or cannot be written.
        """
        rows = file_hash_rows(items)
        if not rows:
            return 0
        return self._write(lambda conn: write_file_hashes(conn, rows))

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
        size = sum(file_size(p) for p in db_files) + sum(_tree_size(self.directory / d) for d in OWNED_DIRS)
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
        """Delete every cached embedding, statistic, artifact and CIFAR-10 array, then give the space back.

        Raises:
            CacheError: If the cache is read-only, locked for too long or cannot be written.
        """

        def body(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM embeddings")
            conn.execute("DELETE FROM stats")
            drop_file_hashes(conn)

        self._write(body)
        self._compact()
        for owned in OWNED_DIRS:
            shutil.rmtree(self.directory / owned, ignore_errors=True)
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
