"""Discovery that keeps the records on disk: what ``datacheck embed`` runs, whatever the dataset's size.

:func:`~datacheck.dataset.discover` returns every record in memory, sorted, which an audit needs (every check
reads them all). Filling the cache does not: ``datacheck embed`` reads each record once to hash it and once
more if it must be embedded. :func:`spool_dataset` runs the same discovery — the same walk, manifest reader
and container readers, the same de-duplication rules, the same issues — but keeps the records and the
walk's intermediate rows in a temporary SQLite file instead of Python objects, so the driver's memory does
not grow with the number of images (about 0.85 KB per image otherwise, measured on CIFAR-10's 60,000).

Only the records and the issues differ in where they live: the issues (files left out, one per problem) stay
in memory, as they are listed to the user anyway.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import sqlite3
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datacheck.dataset.records import (
    Blob,
    Dataset,
    DatasetError,
    FileIssue,
    ImageRecord,
    Layout,
    _sorted_issues,
    size_sample,
    size_sample_key,
)

logger = logging.getLogger(__name__)

#: Items a spool keeps in memory; past them it moves them all to its file and writes every later one there.
#: Below it nothing is written or read back (pickling and re-reading 60,000 records costs seconds).
SPILL_ITEMS = 65_536
#: Rows written to SQLite per statement.
_WRITE_BATCH = 4096
#: SQLite page cache of the temporary file (KiB): bounded, whatever the number of rows.
_CACHE_KIB = 16_384


class Scratch:
    """The temporary SQLite file the spools of one run share: created when the first spool spills.

    In ``directory`` (e.g. the cache folder; the system's temporary folder when ``None`` or not writable),
    removed by :meth:`close`; tuned for scratch data (no journal, no syncing).
    """

    def __init__(self, directory: Path | None) -> None:
        self._directory = directory
        self._folder: tempfile.TemporaryDirectory | None = None
        self._conn: sqlite3.Connection | None = None

    def conn(self) -> sqlite3.Connection:
        """The connection, the file created on first use."""
        if self._conn is None:
            self._folder = self._make_folder()
            self._conn = sqlite3.connect(Path(self._folder.name) / "spool.db", isolation_level=None)
            pragmas = ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE", f"cache_size=-{_CACHE_KIB}")
            for pragma in pragmas:
                self._conn.execute(f"PRAGMA {pragma}")
        return self._conn

    def _make_folder(self) -> tempfile.TemporaryDirectory:
        try:
            if self._directory is not None:
                self._directory.mkdir(parents=True, exist_ok=True)
            return tempfile.TemporaryDirectory(prefix="datacheck-spool-", dir=self._directory)
        except OSError as err:  # e.g. a read-only cache folder: the system's temporary folder serves
            logger.info("records kept in the system's temporary folder, not %s: %s", self._directory, err)
            return tempfile.TemporaryDirectory(prefix="datacheck-spool-")

    def close(self) -> None:
        """Remove the file (spools of this scratch cannot be read afterwards)."""
        if self._conn is not None:
            self._conn.close()
        if self._folder is not None:
            self._folder.cleanup()


class _Spilling:
    """Rows in memory up to :data:`SPILL_ITEMS`, then in a table of the scratch file (if there is one)."""

    _columns: str  # the table's columns, the pickled object first

    def __init__(self, scratch: Scratch | None, name: str) -> None:
        self._scratch, self._table = scratch, name
        self._memory: list[tuple] | None = []  # None once spilled
        self._pending: list[tuple] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def _keep(self, row: tuple) -> None:
        """Keep ``row`` (the object first): as it is in memory, as :meth:`_stored` makes it on disk."""
        self._count += 1
        if self._memory is not None:
            self._memory.append(row)
            if self._scratch is not None and len(self._memory) > SPILL_ITEMS:
                self._spill()
            return
        self._pending.append(self._stored(row))
        if len(self._pending) >= _WRITE_BATCH:
            self._flush()

    def _stored(self, row: tuple) -> tuple:
        """The table row of a kept ``row`` (its object pickled)."""
        return (pickle.dumps(row[0], pickle.HIGHEST_PROTOCOL), *row[1:])

    def _spill(self) -> None:
        assert self._scratch is not None and self._memory is not None
        conn = self._scratch.conn()
        conn.execute(f"CREATE TABLE {self._table} ({self._columns})")
        logger.debug("%s: more than %d rows, kept on disk from now on", self._table, SPILL_ITEMS)
        memory, self._memory = self._memory, None
        for first in range(0, len(memory), _WRITE_BATCH):
            self._pending = [self._stored(row) for row in memory[first : first + _WRITE_BATCH]]
            self._flush()

    def _flush(self) -> None:
        if self._pending and self._scratch is not None:
            names = ", ".join(column.split()[0] for column in self._columns.split(","))
            marks = ", ".join("?" * len(self._pending[0]))
            sql = f"INSERT INTO {self._table} ({names}) VALUES ({marks})"
            self._scratch.conn().executemany(sql, self._pending)
            self._pending = []

    def _query(self, sql: str, *args: Any) -> list[tuple]:
        self._flush()
        assert self._scratch is not None
        return self._scratch.conn().execute(sql.format(table=self._table), args).fetchall()


class SortedSpool(_Spilling):
    """Objects read back in the order of a byte-string key (``memcmp``, as SQLite sorts BLOBs).

    What an in-memory ``sorted(items, key=...)`` is for the walk's and the manifest's de-duplication; past
    :data:`SPILL_ITEMS`, a sort SQLite runs in bounded memory (spilling to temporary files). Without a
    ``scratch``, always in memory (what :func:`~datacheck.dataset.discover` uses).
    """

    _columns = "item BLOB NOT NULL, key BLOB NOT NULL"

    def add(self, key: bytes, item: Any) -> None:
        """Keep ``item`` under ``key``."""
        self._keep((item, key))

    def in_order(self) -> Iterator[Any]:
        """Every item, by key (equal keys in the order they were added)."""
        if self._memory is not None:
            yield from (item for item, _ in sorted(self._memory, key=lambda row: row[1]))
            return
        self._flush()
        assert self._scratch is not None
        cursor = self._scratch.conn().execute(f"SELECT item FROM {self._table} ORDER BY key, rowid")
        for (blob,) in cursor:
            yield pickle.loads(blob)


def identity_key(identity: tuple[int, int], *rest: int | str) -> bytes:
    """A sort key that orders like the tuple ``(identity, *rest)`` (ints ≥ 0, then at most one str last)."""
    parts = [struct.pack(">QQ", *identity)]
    for value in rest:
        if isinstance(value, str):
            parts.append(value.encode("utf-8", "surrogatepass"))  # memcmp of UTF-8 = code point order
        else:
            parts.append(struct.pack(">Q", value))
    return b"".join(parts)


#: Distinct files :class:`RecordSpool` keeps a :class:`~pathlib.Path` of while reading back.
_PATHS_KEPT = 4096


class RecordSpool(_Spilling):
    """Image records (each with its content hash, when known), read back a chunk at a time.

    In memory up to :data:`SPILL_ITEMS` records, then in the scratch file (without a ``scratch``: always in
    memory).
    """

    _columns = "record BLOB NOT NULL, sha TEXT, sample INTEGER NOT NULL, path BLOB NOT NULL"

    def __init__(self, scratch: Scratch | None, name: str = "records") -> None:
        super().__init__(scratch, name)
        self._sha_index = False
        self._paths: dict[str, Path] = {}  # containers' records share a file: one Path for their rows

    def _record(self, blob: bytes) -> ImageRecord:
        path, abs_path, label, split, fingerprint, where = pickle.loads(blob)
        if len(self._paths) > _PATHS_KEPT:
            self._paths.clear()
        file = self._paths.get(abs_path)
        if file is None:
            file = self._paths[abs_path] = Path(abs_path)
        return ImageRecord(path, file, label, split, where and Blob(*where), fingerprint)

    def add(self, record: ImageRecord, sha: str | None = None) -> None:
        """Keep ``record`` (and its content hash, when known)."""
        self._keep((record, sha))

    def _stored(self, row: tuple) -> tuple:
        """``(record, sha)`` as a table row: the record, its hash, its sample key and its path.

        The record is pickled as a tuple of str and ints (several times faster than the dataclass); the path
        breaks ties of the sample key (its UTF-8 bytes sort as Python sorts the str).
        """
        record, sha = row
        blob = record.blob
        where = None if blob is None else (blob.kind, blob.container, blob.position, blob.column)
        path = record.path
        fields = (path, str(record.abs_path), record.label, record.split, record.fingerprint, where)
        encoded = path.encode("utf-8", "surrogatepass")
        return (pickle.dumps(fields, pickle.HIGHEST_PROTOCOL), sha, size_sample_key(path), encoded)

    def extend(self, pairs: Iterable[tuple[ImageRecord, str | None]]) -> None:
        """:meth:`add` each ``(record, sha)``."""
        for record, sha in pairs:
            self.add(record, sha)

    def size_sample(self, k: int) -> list[ImageRecord]:
        """The ``k`` records :func:`~datacheck.dataset.records.size_sample` picks from all of them."""
        if self._memory is not None:
            return size_sample((record for record, _ in self._memory), k)
        rows = self._query("SELECT record FROM {table} ORDER BY sample, path LIMIT ?", k)
        return [self._record(blob) for (blob,) in rows]

    def chunks(self, size: int) -> Iterator[list[tuple[ImageRecord, str | None]]]:
        """Every ``(record, sha)`` in the order added, ``size`` at a time."""
        if self._memory is not None:
            for first in range(0, len(self._memory), size):
                yield self._memory[first : first + size]
            return
        sql = "SELECT rowid, record, sha FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?"
        yield from self._pages(sql, 0, size, lambda rows: [(self._record(b), sha) for _, b, sha in rows])

    def distinct_chunks(self, size: int) -> Iterator[list[tuple[ImageRecord, str]]]:
        """The first ``(record, sha)`` added of each content hash, ``size`` at a time (hashes known only)."""
        if self._memory is not None:
            firsts = list({sha: (record, sha) for record, sha in reversed(self._memory) if sha}.values())
            for first in range(0, len(firsts), size):
                yield firsts[first : first + size]
            return
        if not self._sha_index:
            # an index on the hash alone: SQLite keeps the rowid in every index
            self._query("CREATE INDEX {table}_sha ON {table} (sha)")
            self._sha_index = True
        # SQLite takes a bare column of a MIN() aggregate from the row holding the minimum
        sql = (
            "SELECT sha, record, MIN(rowid) FROM {table} WHERE sha IS NOT NULL AND sha > ? "
            "GROUP BY sha ORDER BY sha LIMIT ?"
        )
        yield from self._pages(sql, "", size, lambda rows: [(self._record(b), sha) for sha, b, _ in rows])

    def _pages(
        self, sql: str, before: int | str, size: int, convert: Callable[[list[tuple]], list[Any]]
    ) -> Iterator[list[Any]]:
        """Rows of ``sql`` (``? > before`` on its first column, ``LIMIT ?``) a page at a time, ``convert``-ed.

        Each page starts after the last one's first column, so no cursor stays open between pages; the raw
        rows are let go before the page is handed out.
        """
        while rows := self._query(sql, before, size):
            before = rows[-1][0]
            page = convert(rows)
            del rows
            yield page


@dataclass(frozen=True)
class Discovered:
    """What discovery found, without the records: what a summary of a streamed run shows.

    Attributes:
        root: As :attr:`~datacheck.dataset.Dataset.root`.
        layout: As :attr:`~datacheck.dataset.Dataset.layout`.
        images: Number of labelled images.
        issues: Files that are not part of the dataset, sorted by path.
    """

    root: Path | str
    layout: Layout
    images: int
    issues: tuple[FileIssue, ...]


@dataclass
class SpooledDataset:
    """A discovered dataset whose records live on disk (:func:`spool_dataset`).

    Attributes:
        root: As :attr:`~datacheck.dataset.Dataset.root`.
        layout: As :attr:`~datacheck.dataset.Dataset.layout`.
        records: The labelled images, in discovery order (not sorted by path).
        issues: Files that are not part of the dataset, sorted by path (in memory: one per problem).
    """

    root: Path | str
    layout: Layout
    records: RecordSpool
    issues: tuple[FileIssue, ...] = field(default=())
    _scratch: Scratch | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.records)

    def summary(self) -> Discovered:
        """Root, layout, image count and issues, usable once the spool is gone."""
        return Discovered(self.root, self.layout, len(self.records), self.issues)

    def size_sample(self, k: int) -> Sequence[ImageRecord]:
        """The records an automatic input size is decided on (the same ones an in-memory dataset gives)."""
        return self.records.size_sample(k)

    def record_chunks(self, size: int) -> Iterator[list[ImageRecord]]:
        """Every record, ``size`` at a time."""
        for chunk in self.records.chunks(size):
            records = [record for record, _ in chunk]
            del chunk  # not held while the caller works on the records (a chunk of 65,536 is ~60 MB)
            yield records

    def scratch(self, name: str) -> RecordSpool:
        """Another record spool in the same temporary file (e.g. the images the cache lacks)."""
        return RecordSpool(self._scratch, name)


@contextlib.contextmanager
def scratch_spool(source: Dataset | SpooledDataset, name: str) -> Iterator[RecordSpool]:
    """A record spool for a pass over ``source``: in its temporary file, or a new one for the block."""
    if isinstance(source, SpooledDataset):
        yield source.scratch(name)
    else:  # the records are in memory anyway: so are these
        yield RecordSpool(None, name)


@contextlib.contextmanager
def spool_dataset(
    root: Path | str,
    manifest: Path | None = None,
    *,
    format_in: str = "auto",
    directory: Path | None = None,
) -> Iterator[SpooledDataset]:
    """:func:`~datacheck.dataset.discover` with the records kept on disk, for the ``with`` block.

    Args:
        root: As :func:`~datacheck.dataset.discover`.
        manifest: As :func:`~datacheck.dataset.discover`.
        format_in: As :func:`~datacheck.dataset.discover`.
        directory: Where the temporary file goes (e.g. the cache folder); the system's temporary folder when
            ``None``. It is removed when the block ends.

    Raises:
        DatasetError: As :func:`~datacheck.dataset.discover` (the same messages).
    """
    from datacheck.dataset import open_source

    scratch = Scratch(directory)
    try:
        source = open_source(root, manifest, format_in=format_in, scratch=scratch)
        records = RecordSpool(scratch)
        issues: list[FileIssue] = []
        for item in source.items:
            if isinstance(item, FileIssue):
                issues.append(item)
            else:
                records.add(item)
        if not len(records):
            raise DatasetError(source.no_records(issues))
        logger.info(
            "discovered %d images under %s (%s layout, kept on disk); %d files left out",
            len(records),
            source.root,
            source.layout,
            len(issues),
        )
        yield SpooledDataset(source.root, source.layout, records, _sorted_issues(issues), scratch)
    finally:
        scratch.close()
