"""The file-hash memo of the bottleneck cache: which SHA-256 a file had when it last looked like this.

A row maps an absolute path to the stat fingerprint the file had when it was hashed and the hash itself, so
an unchanged file is not read again (:meth:`datacheck.embed.cache.Cache.get_file_hashes`). The table was
added after schema 1; it is created on first write, so older caches gain it in place, and ``cache clear``
drops it.

These functions run inside the transactions of :class:`~datacheck.embed.cache.Cache`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from datacheck.embed.cache_codec import check_sha, chunks
from datacheck.embed.cache_db import MAX_SQL_VARIABLES, table_names

#: The file-hash memo (added after schema 1; created on first write, so older caches gain it in place).
_FILE_HASHES = """CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    sha BLOB NOT NULL
)"""

FileHashRow = tuple[str, str, bytes]
"""(absolute path, stat fingerprint, 32-byte SHA-256) as stored."""


def read_file_hashes(conn: sqlite3.Connection, paths: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``{path: (fingerprint, sha256 hex)}`` remembered for these paths (none before the first write)."""
    found: dict[str, tuple[str, str]] = {}
    if "file_hashes" not in table_names(conn):
        return found
    for chunk in chunks(list(dict.fromkeys(paths)), MAX_SQL_VARIABLES):
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT path, fingerprint, sha FROM file_hashes WHERE path IN ({marks})"
        for path, fingerprint, sha in conn.execute(sql, chunk):
            found[path] = (fingerprint, bytes(sha).hex())
    return found


def file_hash_rows(items: Sequence[tuple[str, str, str]]) -> list[FileHashRow]:
    """``(path, fingerprint, sha256 hex)`` items as rows to store; ValueError for a malformed hash."""
    return [(path, fingerprint, bytes.fromhex(check_sha(sha))) for path, fingerprint, sha in items]


def write_file_hashes(conn: sqlite3.Connection, rows: Sequence[FileHashRow]) -> int:
    """Store ``rows`` (creating the table if needed), replacing those of the same paths; returns the count."""
    conn.execute(_FILE_HASHES)
    conn.executemany("INSERT OR REPLACE INTO file_hashes (path, fingerprint, sha) VALUES (?, ?, ?)", rows)
    return len(rows)


def drop_file_hashes(conn: sqlite3.Connection) -> None:
    """Forget every remembered hash."""
    conn.execute("DROP TABLE IF EXISTS file_hashes")
