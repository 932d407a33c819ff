"""Files → bottleneck vectors + image statistics, through the content-addressed cache.

Two layers:

* :func:`embed_batch` is a pure function from a batch of ``(name, bytes)`` to vectors, logits and stats.
  It touches no cache and no global state, so the same step can run unchanged as a map function
  on a distributed engine (Ray Data ``map_batches``, an Apache Beam ``DoFn``) for datasets that outgrow
  one machine.
* :func:`embed_dataset` orchestrates one machine: hash every file, serve what the cache has, decode the misses
  in worker threads while the model runs on the previous batch, and commit each batch to the cache as soon as
  it is computed (so ``kill -9`` loses at most the batch in flight).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from datacheck.dataset import Dataset, FileIssue, ImageRecord
from datacheck.dataset.records import size_sample
from datacheck.dataset.streamed import RecordSpool, SpooledDataset, scratch_spool
from datacheck.embed.cache import (
    Cache,
    CacheError,
    as_stored,
    default_cache_dir,
    embedding_key,
    stats_key,
)
from datacheck.fileio import file_sha256, stat_fingerprint
from datacheck.images import (
    STATS_VERSION,
    THUMB_BYTES,
    THUMB_SIDE,
    DecodedImage,
    ImageDecodeError,
    ImageStats,
    StatsTable,
    decode_image,
    is_stats_blob,
    is_stats_head,
    read_file,
    stats_head,
    thumbnails,
)
from datacheck.params import MAX_IMAGE_PIXELS, EmbedParams
from datacheck.sources import read_record
from datacheck.spool import RowSpool

logger = logging.getLogger(__name__)

#: Files hashed per worker task.
_HASH_CHUNK = 256

#: Called as ``progress(stage, done, total)``; stages are ``"hash"``, ``"cache"`` (lookups) and ``"embed"``.
ProgressFn = Callable[[str, int, int], None]

#: Images sampled to choose the automatic input size.
AUTO_SIZE_SAMPLE = 256
#: Records :func:`fill_cache` hashes and looks up at a time: what bounds its memory, whatever the dataset.
_FILL_CHUNK = 65_536


@dataclass(frozen=True, slots=True)
class BatchItem:
    """What :func:`embed_batch` returns for one input: either vectors and stats, or a failure reason."""

    name: str
    file_sha256: str
    vector: np.ndarray | None = None
    logits: np.ndarray | None = None
    stats: ImageStats | None = None
    notes: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Embeddings:
    """Bottlenecks and stats for every readable image of a dataset, row-aligned with ``records``.

    Attributes:
        records: The images that were embedded, in dataset order.
        vectors: ``float32[N, D]`` bottleneck vectors as the backbone produced them (not normalised), rounded
            as the cache stores them; from ``[embed] spill_rows`` images ``float16[N, D]`` (the same values).
        logits: ``float16[N, 1000]`` ImageNet logits (exactly as cached; float32 past float16's range), or
            ``None`` for backbones without a classifier.
        stats: Per-image statistics, one row per record, by column.
        file_sha256: Content hash of each file (the cache key's base; also used by baselines).
        failures: Files that could not be read or decoded, with a one-line reason each.
        notes: Non-fatal remarks per path (e.g. "animated GIF: first frame used").
        model_id: Backbone name.
        image_size: Model input size actually used.
        runtime: Inference runtime that ran, or ``"cache"`` when nothing had to be computed.
        cached: Images served from the cache.
        computed: Images embedded in this run.
        timings: Seconds spent per stage.
    """

    records: tuple[ImageRecord, ...]
    vectors: np.ndarray
    logits: np.ndarray | None
    stats: StatsTable
    file_sha256: tuple[str, ...]
    failures: tuple[FileIssue, ...]
    notes: dict[str, tuple[str, ...]]
    model_id: str
    image_size: int
    runtime: str
    cached: int
    computed: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        """Bottleneck dimension."""
        return int(self.vectors.shape[1])


# --------------------------------------------------------------------------------------------- pure layer


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def decode_batch(
    items: Sequence[tuple[str, bytes]], image_size: int, max_pixels: int = MAX_IMAGE_PIXELS
) -> list[DecodedImage | str]:
    """Decode a batch; each entry is a :class:`DecodedImage` or the one-line reason it failed."""
    out: list[DecodedImage | str] = []
    for name, data in items:
        try:
            out.append(decode_image(data, image_size, name=name, max_pixels=max_pixels))
        except ImageDecodeError as err:
            out.append(str(err))
    return out


def _stack_pixels(decoded: Sequence[DecodedImage]) -> np.ndarray:
    return np.stack([d.pixels for d in decoded]) if decoded else np.zeros((0, 0, 0, 3), np.uint8)


def embed_batch(items: Sequence[tuple[str, bytes]], backend: Callable, image_size: int) -> list[BatchItem]:
    """Embed a batch of encoded images: the pure, engine-agnostic step.

    Args:
        items: ``(name, encoded file bytes)`` pairs.
        backend: A backend from :func:`datacheck.embed.runtime.load_backend`.
        image_size: Model input size (must match the backend).

    Returns:
        One :class:`BatchItem` per input, in order.
    """
    decoded = decode_batch(items, image_size)
    ok = [d for d in decoded if isinstance(d, DecodedImage)]
    vectors, logits = backend(_stack_pixels(ok)) if ok else (None, None)
    results: list[BatchItem] = []
    row = 0
    for (name, data), dec in zip(items, decoded, strict=True):
        sha = sha256_bytes(data)
        if isinstance(dec, str):
            results.append(BatchItem(name, sha, error=dec))
            continue
        assert vectors is not None
        results.append(
            BatchItem(
                name,
                sha,
                vector=vectors[row],
                logits=None if logits is None else logits[row],
                stats=dec.stats,
                notes=dec.notes,
            )
        )
        row += 1
    return results


# ------------------------------------------------------------------------------------------ image size


def auto_image_size(median_short_side: float) -> int:
    """Model input size for a dataset whose images have this median short side.

    Small images gain nothing from being blown up to 224 px: the rule keeps near-duplicate recall while
    embedding several times faster (measured in ``bench/bench_image_size.py``, see docs/benchmarks.md).
    """
    if median_short_side <= 64:
        return 96
    if median_short_side <= 128:
        return 160
    return 224


def _header_short_side(record: ImageRecord) -> int | None:
    from PIL import Image

    try:
        source = record.abs_path if record.blob is None else io.BytesIO(read_record(record))
        with Image.open(source) as img:
            return min(img.size)
    except Exception:  # any unreadable file simply does not vote
        return None


def resolve_image_size(params: EmbedParams, records: Iterable[ImageRecord]) -> int:
    """The concrete input size: ``params.image_size`` or the automatic rule on a sample of image headers.

    The sample is :func:`~datacheck.dataset.records.size_sample`'s: the same records whichever order they
    come in, so ``datacheck embed`` (records streamed) and ``datacheck audit`` (in memory) agree.
    """
    if params.image_size != "auto":
        return int(params.image_size)
    sides = [s for r in size_sample(records, AUTO_SIZE_SAMPLE) if (s := _header_short_side(r)) is not None]
    size = auto_image_size(statistics.median(sides)) if sides else 224
    logger.info(
        "image size auto: %d px (median short side %s of %d sampled images)",
        size,
        statistics.median(sides) if sides else "n/a",
        len(sides),
    )
    return size


# ---------------------------------------------------------------------------------------- orchestration


def _hash_record(record: ImageRecord) -> str | FileIssue:
    if record.blob is not None:  # a container member: its bytes are small and read in one go
        try:
            return sha256_bytes(read_record(record))
        except ImageDecodeError as err:
            return FileIssue(record.path, "unreadable", str(err))
    try:
        return file_sha256(record.abs_path)
    except OSError as err:
        # read_file() words OS errors for users; reuse it so the reasons match the decode stage.
        try:
            read_file(record.abs_path)
        except ImageDecodeError as worded:
            return FileIssue(record.path, "unreadable", str(worded))
        return FileIssue(record.path, "unreadable", f"cannot read file: {err.strerror or err}")


def file_fingerprint(record: ImageRecord) -> str | None:
    """What must be unchanged for a file's remembered hash to be trusted, or ``None`` (not a local file).

    :func:`~datacheck.fileio.stat_fingerprint`, as discovery saw the file when it did (a folder walk stats
    every file anyway), else stat'ed now. Members of containers are not remembered (their bytes are read
    anyway).
    """
    if record.blob is not None:
        return None
    if record.fingerprint is not None:
        return record.fingerprint
    try:
        return stat_fingerprint(os.stat(record.abs_path))
    except OSError:
        return None


def _hash_chunk(records: Sequence[ImageRecord]) -> list[str | FileIssue]:
    return [_hash_record(r) for r in records]


@dataclass
class _Slot:
    """Mutable per-record state while the run assembles its outputs."""

    record: ImageRecord
    sha: str
    vector: np.ndarray | None = None
    logits: int | None = None  # row of the run's logits spool
    thumb: int | None = None  # row of the run's thumbnail spool
    stats: bytes | memoryview | None = None  # ImageStats.to_bytes less the thumbnail (stats_head)
    notes: tuple[str, ...] = ()
    error: str | None = None


def _read_and_decode(
    slots: Sequence[_Slot], image_size: int, max_pixels: int
) -> list[tuple[_Slot, DecodedImage | str]]:
    out: list[tuple[_Slot, DecodedImage | str]] = []
    for slot in slots:
        try:
            data = read_record(slot.record)
            slot.sha = sha256_bytes(data)  # the bytes we decode are the bytes we key by
            out.append((slot, decode_image(data, image_size, name=slot.record.path, max_pixels=max_pixels)))
        except ImageDecodeError as err:
            out.append((slot, str(err)))
    return out


def _prefetched(
    pool: ThreadPoolExecutor,
    batches: Sequence[Sequence[_Slot]],
    image_size: int,
    depth: int,
    max_pixels: int,
) -> Iterator[list[tuple[_Slot, DecodedImage | str]]]:
    """Yield decoded batches in order while up to ``depth`` later batches decode in the background."""
    pending: deque[Future] = deque()
    it = iter(batches)
    for batch in it:
        pending.append(pool.submit(_read_and_decode, batch, image_size, max_pixels))
        if len(pending) >= depth:
            break
    while pending:
        yield pending.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            pending.append(pool.submit(_read_and_decode, nxt, image_size, max_pixels))


#: Cache commits queued behind the model before it waits for them.
_WRITES_IN_FLIGHT = 4
#: Largest finite float16 value: a vector within it is exactly what the cache holds (see ``as_stored``).
_HALF_MAX = float(np.finfo(np.float16).max)
#: Images whose cached rows are read and decoded at a time.
_READ_CHUNK = 16_384


class _Run:
    """One call of :func:`embed_dataset`: owns the cache handle, the backend (lazily) and the timings."""

    def __init__(
        self,
        params: EmbedParams,
        cache: Cache,
        image_size: int,
        progress: ProgressFn | None,
        *,
        keep_rows: bool = True,
    ):
        self.params = params
        self.keep_rows = keep_rows  # False: computed rows go to the cache only (fill_cache)
        self.cache = cache
        self.image_size = image_size
        self.progress = progress or (lambda stage, done, total: None)
        self.timings: dict[str, float] = {}
        self._backend: Callable | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._writes: deque[Future] = deque()
        self.spool_for(0)

    def spool_for(self, n: int) -> None:
        """Keep thumbnails and logits on disk when ``n`` images reach ``spill_rows`` (:mod:`datacheck.spool`).

        Set before the first row arrives.
        """
        directory = self.cache.directory if n >= self.params.spill_rows else None
        if directory is not None:
            logger.info("%d images: thumbnails and logits kept in temporary files in %s", n, directory)
        # from spill_rows images the vectors are returned as the cache's float16 (half the memory), unless a
        # freshly computed one is past float16's range (such rows are not cached either)
        self.half_vectors = n >= self.params.spill_rows
        thumb_shape = (THUMB_SIDE, THUMB_SIDE, 3)
        self.logit_rows = RowSpool(directory)
        self.thumb_rows = RowSpool(directory, row_shape=thumb_shape, dtype=np.uint8)

    def spool(self, rows: Sequence[tuple[_Slot, np.ndarray | None, bytes | memoryview]]) -> None:
        """Give ``(slot, logits, whole stats blob)`` rows their logits and thumbnails as spool rows.

        Each slot keeps its blob less the thumbnail, packed with the others (:func:`_pack_stats`).
        """
        with_logits = [(slot, logits) for slot, logits, _ in rows if logits is not None]
        if with_logits:
            first = self.logit_rows.append(_half_if_exact(np.stack([logits for _, logits in with_logits])))
            for i, (slot, _) in enumerate(with_logits, start=first):
                slot.logits = i
        if rows:
            first = self.thumb_rows.append(thumbnails([blob for _, _, blob in rows]))
            for i, (slot, _, _) in enumerate(rows, start=first):
                slot.thumb = i
        _pack_stats([(slot, stats_head(blob)) for slot, _, blob in rows])

    def _tick(self, stage: str, start: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start

    @property
    def backend(self):
        """The inference backend, loaded on first use so fully cached runs never import TensorFlow."""
        if self._backend is None:
            from datacheck.embed.runtime import available_cores, load_backend

            start = time.perf_counter()
            self._backend = load_backend(
                self.params.model,
                self.image_size,
                weights=self.params.weights,
                runtime=self.params.runtime,
                artifact_dir=self.cache.artifact_path(""),
                replicas=available_cores(),  # one interpreter per core, fed by compute()'s threads
            )
            self._tick("model_load", start)
        return self._backend

    @property
    def cache_tag(self) -> str:
        from datacheck.embed.backbones import cache_tag

        return cache_tag(self.params.model, self.image_size, weights=self.params.weights)

    def hash_all(self, records: Sequence[ImageRecord]) -> tuple[list[_Slot], list[FileIssue]]:
        """Content hashes of every record; unchanged files (same stat fingerprint) are not read again."""
        start = time.perf_counter()
        fingerprints = {r.path: fp for r in records if (fp := file_fingerprint(r)) is not None}
        remembered = self._remembered_hashes(records, fingerprints)
        slots: list[_Slot] = []
        failures: list[FileIssue] = []
        todo = [r for r in records if r.path not in remembered]
        chunks = [todo[i : i + _HASH_CHUNK] for i in range(0, len(todo), _HASH_CHUNK)]
        done = len(remembered)
        fresh: dict[str, str] = {}
        # Hashing is I/O and hashlib (which releases the GIL): more threads than decoding. Chunks, not one
        # future per file: 60,000 futures cost seconds of locking on their own.
        with ThreadPoolExecutor(max(4, self.params.decode_workers)) as pool:
            for chunk, results in zip(chunks, pool.map(_hash_chunk, chunks), strict=True):
                for record, res in zip(chunk, results, strict=True):
                    if isinstance(res, FileIssue):
                        failures.append(res)
                    else:
                        fresh[record.path] = res
                done += len(chunk)
                self.progress("hash", done, len(records))
        hashes = remembered | fresh
        slots = [_Slot(r, hashes[r.path]) for r in records if r.path in hashes]
        self._remember_hashes(records, fingerprints, fresh)
        logger.info("hashed %d files, %d unchanged since the last run (not read)", len(todo), len(remembered))
        self._tick("hash", start)
        return slots, failures

    def _remembered_hashes(
        self, records: Sequence[ImageRecord], fingerprints: dict[str, str]
    ) -> dict[str, str]:
        try:
            stored = self.cache.get_file_hashes([str(r.abs_path) for r in records if r.path in fingerprints])
        except CacheError as err:
            logger.debug("file-hash memo unavailable: %s", err)
            return {}
        out: dict[str, str] = {}
        for record in records:
            hit = stored.get(str(record.abs_path))
            if hit is not None and hit[0] == fingerprints.get(record.path):
                out[record.path] = hit[1]
        return out

    def _remember_hashes(
        self, records: Sequence[ImageRecord], fingerprints: dict[str, str], fresh: dict[str, str]
    ) -> None:
        rows = [
            (str(r.abs_path), fingerprints[r.path], fresh[r.path])
            for r in records
            if r.path in fresh and r.path in fingerprints
        ]
        try:
            self.cache.put_file_hashes(rows)
        except CacheError as err:  # a read-only cache only costs the next run the reading
            logger.debug("file hashes not remembered: %s", err)

    def fill_from_cache(self, slots: Sequence[_Slot]) -> list[_Slot]:
        """Fill slots the cache can serve; return the slots that still need decoding."""
        start = time.perf_counter()
        misses: list[_Slot] = []
        self.spool_for(len(slots))
        for looked_up in self._looked_up(slots):
            misses += [slot for slot, row in looked_up if row is None]
            served = [(slot, *row) for slot, row in looked_up if row is not None]
            for slot, vector, _, _ in served:
                slot.vector = vector
            self.spool([(slot, logits, blob) for slot, _, logits, blob in served])
        self._tick("cache_read", start)
        return misses

    def missing(self, slots: Sequence[_Slot], *, shown: bool = True) -> list[_Slot]:
        """The slots the cache cannot serve, keeping nothing of those it can (memory bounded by one chunk).

        ``shown``: report the lookup's progress (a second lookup of a few slots is not).
        """
        start = time.perf_counter()
        misses: list[_Slot] = []
        for first in range(0, len(slots), _READ_CHUNK):
            chunk = slots[first : first + _READ_CHUNK]
            ekeys, skeys = self._keys(chunk)
            # whether each row is there and intact, without reading the vectors or the thumbnails
            held = self.cache.held_embeddings(ekeys)
            heads = self.cache.get_stats(skeys, drop_tail=THUMB_BYTES)
            for slot, ekey, skey in zip(chunk, ekeys, skeys, strict=True):
                head = heads.get(skey)
                if ekey not in held or head is None or not is_stats_head(head):
                    misses.append(slot)
            if shown:
                self.progress("cache", first + len(chunk), len(slots))
        self._tick("cache_lookup", start)
        return misses

    def _keys(self, slots: Sequence[_Slot]) -> tuple[list[str], list[str]]:
        """The embedding and statistics keys of ``slots`` (each built, and its digest validated, once)."""
        tag = self.cache_tag
        return [embedding_key(s.sha, tag) for s in slots], [stats_key(s.sha, STATS_VERSION) for s in slots]

    def _looked_up(
        self, slots: Sequence[_Slot], *, shown: bool = True
    ) -> Iterator[list[tuple[_Slot, tuple[np.ndarray, np.ndarray | None, bytes] | None]]]:
        """Per chunk of slots, each slot's cached ``(vector, logits, stats blob)``, or ``None`` (a miss).

        In chunks: the stored rows' bytes of one chunk at a time, not of every image at once (at a million
        images, 4.5 GB of blobs and their joined copy beside the decoded matrices). A damaged statistics blob
        is a miss: computed again.
        """
        for first in range(0, len(slots), _READ_CHUNK):
            chunk = slots[first : first + _READ_CHUNK]
            ekeys, skeys = self._keys(chunk)  # each built once: 60,000 images took 0.3 s of key building
            emb, sts = self.cache.get_embeddings(ekeys, half=self.half_vectors), self.cache.get_stats(skeys)
            looked_up = []
            for slot, ekey, skey in zip(chunk, ekeys, skeys, strict=True):
                hit, blob = emb.get(ekey), sts.get(skey)
                found = hit is not None and blob is not None and is_stats_blob(blob)
                looked_up.append((slot, (hit[0], hit[1], blob) if found else None))
            yield looked_up
            if shown:
                self.progress("cache", first + len(chunk), len(slots))

    def compute(self, misses: Sequence[_Slot]) -> None:
        """Decode misses in worker threads, embed batches on the backend's replicas, commit each to the cache.

        Batches are embedded in parallel on ``backend.replicas`` threads and committed in order by this
        thread (which owns the SQLite connection).
        """
        from datacheck.embed.runtime import available_cores

        bs = self.params.batch_size
        batches = [misses[i : i + bs] for i in range(0, len(misses), bs)]
        cores = available_cores()
        done = 0
        pending: deque[tuple[list[tuple[_Slot, DecodedImage]], Future | None]] = deque()
        depth = self.params.decode_workers + cores
        with (
            ThreadPoolExecutor(self.params.decode_workers) as pool,
            ThreadPoolExecutor(cores, "embed") as models,
            ThreadPoolExecutor(1, "cache-writer") as writer,
        ):
            self._writer, self._writes = writer, deque()
            wait = time.perf_counter()
            limit = self.params.max_image_pixels
            for decoded in _prefetched(pool, batches, self.image_size, depth=depth, max_pixels=limit):
                self._tick("decode_wait", wait)
                ok = self._decoded_ok(decoded)
                pixels = _stack_pixels([dec for _, dec in ok]) if ok else None
                # self.backend loads the model on the first decodable batch (never when none decodes)
                pending.append((ok, models.submit(self.backend, pixels) if ok else None))
                done += len(decoded)
                if len(pending) >= (self._backend.replicas if self._backend else 1):
                    self._store(*pending.popleft())
                    self.progress("embed", done - sum(len(p[0]) for p in pending), len(misses))
                wait = time.perf_counter()
            while pending:
                self._store(*pending.popleft())
            while self._writes:  # every batch committed before the run reads the cache again
                self._writes.popleft().result()
            self.progress("embed", len(misses), len(misses))

    @staticmethod
    def _decoded_ok(decoded: Sequence[tuple[_Slot, DecodedImage | str]]) -> list[tuple[_Slot, DecodedImage]]:
        """The decoded images of a batch; slots that failed get their reason."""
        for slot, dec in decoded:
            if isinstance(dec, str):
                slot.error = dec
        return [(slot, dec) for slot, dec in decoded if isinstance(dec, DecodedImage)]

    def _store(self, ok: list[tuple[_Slot, DecodedImage]], future: Future | None) -> None:
        """Wait for a batch's vectors, attach them to its slots and commit them to the cache."""
        if future is None:
            return
        start = time.perf_counter()
        vectors, logits = future.result()
        self._tick("model", start)
        vectors = as_stored(vectors)  # identical to what a warm run reads back
        self.half_vectors = self.half_vectors and bool(np.abs(vectors).max(initial=0) <= _HALF_MAX)
        logits = None if logits is None else as_stored(logits)
        start = time.perf_counter()
        tag = self.cache_tag
        rows, stats, spooled = [], [], []
        for i, (slot, dec) in enumerate(ok):
            slot.notes = dec.notes
            blob, row_logits = dec.stats.to_bytes(), None if logits is None else logits[i]
            rows.append((embedding_key(slot.sha, tag), vectors[i], row_logits))
            stats.append((stats_key(slot.sha, STATS_VERSION), blob))
            spooled.append((slot, row_logits, blob))
            if self.keep_rows:
                slot.vector = vectors[i]
        if self.keep_rows:
            self.spool(spooled)
        # Committed by one writer thread while the model runs on: SQLite releases the GIL while it writes.
        # At most _WRITES_IN_FLIGHT batches wait, so a kill -9 loses no more than those (they are redone).
        self._writes.append(self._writer.submit(self._commit, rows, stats))
        while len(self._writes) > _WRITES_IN_FLIGHT:
            self._writes.popleft().result()
        self._tick("cache_write_wait", start)

    def _commit(self, rows: list, stats: list) -> None:
        start = time.perf_counter()
        self.cache.put_embeddings(rows)
        self.cache.put_stats(stats)
        self._tick("cache_write", start)


def _gathered(slots: Sequence[_Slot], field: str, dtype: type) -> np.ndarray:
    """``slots``' ``field`` rows (``"vector"``) as one matrix, each let go once copied.

    The rows are views of the matrices decoded per cache chunk or model batch; dropping each reference as
    its row is copied frees a chunk's matrix once all its rows are in, so the read peaks at the result plus
    one chunk rather than at twice the result (``np.stack`` of every row).
    """
    out = np.empty((len(slots), getattr(slots[0], field).shape[0]), dtype)
    for i, slot in enumerate(slots):
        out[i] = getattr(slot, field)
        setattr(slot, field, None)
    return out


def _pack_stats(served: Sequence[tuple[_Slot, bytes | memoryview]]) -> None:
    """Give each slot its statistics as a view of one buffer per cache chunk, not a ``bytes`` of its own.

    The database hands out one small object per row; kept until the run assembles its table, a million of
    them sat in the heap between the chunks' transient rows, and freeing them left it fragmented: memory the
    process held but could not give back. One joined buffer per chunk is a single allocation that is
    returned whole, and the rows' objects are reused chunk after chunk.
    """
    packed = memoryview(b"".join(blob for _, blob in served))
    offset = 0
    for slot, blob in served:
        slot.stats = packed[offset : offset + len(blob)]
        offset += len(blob)


def _stats_table(run: _Run, slots: Sequence[_Slot]) -> StatsTable:
    """``slots``' statistics as one table, each slot's blob let go once read (as :func:`_gathered` does)."""

    def chunks() -> Iterator[list[bytes | memoryview]]:
        for first in range(0, len(slots), _READ_CHUNK):
            part = slots[first : first + _READ_CHUNK]
            yield [s.stats for s in part]
            for slot in part:
                slot.stats = None

    thumbs = run.thumb_rows.finish(np.array([s.thumb for s in slots], dtype=np.int64))
    return StatsTable.from_heads(chunks(), len(slots), thumbs)


def _half_if_exact(logits: np.ndarray) -> np.ndarray:
    """``logits`` as float16 when every value is one (all cached ones are); float32 past float16's range.

    Every value came through the cache's float16 (:func:`as_stored`): nothing is lost, and a million images
    hold 2 GB of logits instead of 4. Rows float16 cannot hold (never cached) keep their float32 values.
    """
    if logits.dtype == np.float16:
        return logits
    with np.errstate(over="ignore"):  # a value past float16 shows as infinite
        half = logits.astype(np.float16)
    return half if np.isfinite(half).all() else logits


def _assemble(run: _Run, slots: Sequence[_Slot], failures: list[FileIssue], computed: int) -> Embeddings:
    good = [s for s in slots if s.error is None and s.vector is not None]
    failures = failures + [FileIssue(s.record.path, "unreadable", s.error) for s in slots if s.error]
    dim = good[0].vector.shape[0] if good else 0
    has_logits = bool(good) and all(s.logits is not None for s in good)
    logits = run.logit_rows.finish(np.array([s.logits for s in good], dtype=np.int64)) if has_logits else None
    dtype = np.float16 if run.half_vectors else np.float32
    vectors = _gathered(good, "vector", dtype) if good else np.zeros((0, dim), dtype)
    return Embeddings(
        records=tuple(s.record for s in good),
        vectors=vectors,
        logits=logits,
        stats=_stats_table(run, good),
        file_sha256=tuple(s.sha for s in good),
        failures=tuple(sorted(failures, key=lambda f: f.path)),
        notes={s.record.path: s.notes for s in good if s.notes},
        model_id=run.params.model,
        image_size=run.image_size,
        runtime=run._backend.runtime if run._backend is not None else "cache",
        cached=len(good) - computed if computed <= len(good) else 0,
        computed=computed,
        timings=run.timings,
    )


def cache_misses(
    records: Sequence[ImageRecord],
    params: EmbedParams,
    image_size: int,
    *,
    progress: ProgressFn | None = None,
) -> list[tuple[ImageRecord, str]]:
    """``(record, content hash)`` of each distinct content whose vectors or statistics the cache lacks.

    What an external engine must embed (:mod:`datacheck.embed.ray_engine`); unreadable files are left to the
    in-process pass, which words their reasons. Cached rows are looked up, not kept.
    """
    with Cache(params.cache_dir or default_cache_dir()) as cache:
        run = _Run(params, cache, image_size, progress, keep_rows=False)
        slots, _ = run.hash_all(records)
        return _distinct(run.missing(slots))


def _distinct(slots: Sequence[_Slot]) -> list[tuple[ImageRecord, str]]:
    """``(record, content hash)`` of the first slot of each content."""
    return [(s.record, s.sha) for s in {s.sha: s for s in slots}.values()]


@dataclass(frozen=True)
class CacheFill:
    """What :func:`fill_cache` did: an embedding run's counts, without its vectors.

    Attributes:
        cached: Images the cache already held.
        computed: Images embedded in this run (in-process or on Ray).
        failures: Files that could not be read or decoded, with a one-line reason each.
        model_id: Backbone name.
        image_size: Model input size used.
        runtime: Inference runtime that ran, ``"ray"``, or ``"cache"`` when nothing had to be computed.
        timings: Seconds spent per stage.
    """

    cached: int
    computed: int
    failures: tuple[FileIssue, ...]
    model_id: str
    image_size: int
    runtime: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def images(self) -> int:
        """Readable images, all now in the cache."""
        return self.cached + self.computed


def fill_cache(
    source: Dataset | SpooledDataset, params: EmbedParams | None = None, *, progress: ProgressFn | None = None
) -> CacheFill:
    """Embed into the cache every image of ``source`` it lacks, and return counts only (``datacheck embed``).

    :func:`embed_dataset` without gathering the vectors, and a chunk of records at a time: each chunk is
    hashed and looked up, the images the cache lacks go to a list on disk, and those are embedded in a
    second pass (computed rows committed and dropped). Memory follows the chunk, not the dataset, when
    ``source`` keeps its records on disk too (:func:`~datacheck.dataset.streamed.spool_dataset`). With
    ``engine = "ray"`` the missing contents are embedded on the cluster
    (:func:`datacheck.embed.ray_engine.embed_on_ray`); what it could not read is tried here, which words
    the reasons.
    """
    params = params or EmbedParams()
    total_start = time.perf_counter()
    if params.engine == "ray":
        from datacheck.embed.ray_engine import ray_module

        ray_module()  # a missing extra is said before any file is hashed
    auto = params.image_size == "auto"  # the sample costs a hash of every path: taken only when needed
    image_size = resolve_image_size(params, source.size_sample(AUTO_SIZE_SAMPLE) if auto else ())
    with Cache(params.cache_dir or default_cache_dir()) as cache, scratch_spool(source, "todo") as todo:
        run = _Run(params, cache, image_size, progress, keep_rows=False)
        cached, failures = _look_up(run, source, todo)
        on_ray = 0
        if len(todo) and params.engine == "ray":
            from datacheck.embed.ray_engine import embed_on_ray

            embed_on_ray(todo.distinct_chunks(_FILL_CHUNK), params, image_size, progress=progress)
        if len(todo):
            logger.info("%d of %d images need embedding", len(todo), cached + len(todo))
        on_ray, computed, errors = _compute_missing(run, todo, after_ray=params.engine == "ray")
    run.timings["total"] = time.perf_counter() - total_start
    return CacheFill(
        cached=cached,
        computed=on_ray + computed,
        failures=tuple(sorted(failures + errors, key=lambda f: f.path)),
        model_id=params.model,
        image_size=image_size,
        runtime=run._backend.runtime if run._backend is not None else ("ray" if on_ray else "cache"),
        timings=run.timings,
    )


def _look_up(run: _Run, source: Dataset | SpooledDataset, todo: RecordSpool) -> tuple[int, list[FileIssue]]:
    """Hash and look up every record a chunk at a time; the misses go to ``todo``.

    Returns the number of records the cache serves and the files that could not be read.
    """
    cached, failures = 0, []
    for chunk in _counted_over_all(run, source.record_chunks(_FILL_CHUNK), len(source)):
        slots, failed = run.hash_all(chunk)
        misses = run.missing(slots)
        todo.extend((slot.record, slot.sha) for slot in misses)
        cached += len(slots) - len(misses)
        failures += failed
        del chunk, slots, misses  # let go before the next chunk is read: one chunk at a time, not two
    return cached, failures


def _compute_missing(run: _Run, todo: RecordSpool, *, after_ray: bool) -> tuple[int, int, list[FileIssue]]:
    """Embed in-process what ``todo`` lists and the cache still lacks; ``(on Ray, computed, failures)``.

    ``after_ray``: the cluster has had its go, so what the cache holds now counts as embedded there, and the
    rest (files it could not read) is tried here, which words the reasons.
    """
    on_ray = computed = 0
    failures: list[FileIssue] = []
    for chunk in _counted_over_all(run, todo.chunks(_FILL_CHUNK), len(todo)):
        misses = [_Slot(record, sha or "") for record, sha in chunk]
        if after_ray:
            still = run.missing(misses, shown=False)
            on_ray += len(misses) - len(still)
            misses = still
        if misses:
            run.compute(misses)
        failures += [FileIssue(s.record.path, "unreadable", s.error) for s in misses if s.error]
        computed += sum(1 for s in misses if s.error is None)
    return on_ray, computed, failures


_Chunk = TypeVar("_Chunk")


def _counted_over_all(run: _Run, chunks: Iterable[_Chunk], total: int) -> Iterator[_Chunk]:
    """``chunks``, ``run``'s progress reporting each stage over all ``total`` items while each is worked on.

    The run's own callback is put back when the chunks end (or the caller stops early).
    """
    progress, stages = run.progress, _ChunkedProgress(run.progress, total)
    try:
        for chunk in chunks:
            run.progress = stages.chunk()
            yield chunk
            del chunk  # not held here while the next chunk is read
    finally:
        run.progress = progress


class _ChunkedProgress:
    """Progress of a pass run a chunk at a time: each stage counted over the whole pass, not per chunk."""

    def __init__(self, progress: ProgressFn, total: int) -> None:
        self._progress, self._total = progress, total
        self._before: dict[str, int] = {}  # per stage: what the chunks before this one counted
        self._last: dict[str, int] = {}  # per stage: this chunk's own total

    def chunk(self) -> ProgressFn:
        """The callback for the next chunk (call once per chunk, before it starts)."""
        for stage, total in self._last.items():
            self._before[stage] = self._before.get(stage, 0) + total
        self._last = {}

        def report(stage: str, done: int, total: int) -> None:
            self._last[stage] = total
            self._progress(stage, self._before.get(stage, 0) + done, self._total)

        return report


def embed_dataset(
    dataset: Dataset, params: EmbedParams | None = None, *, progress: ProgressFn | None = None
) -> Embeddings:
    """Embed every image of ``dataset``, serving what the cache already holds.

    Args:
        dataset: From :func:`datacheck.dataset.discover`.
        params: Embedding parameters; defaults from :class:`EmbedParams`.
        progress: Optional callback ``(stage, done, total)`` for progress bars.

    Returns:
        Row-aligned vectors, logits and stats, plus the files that failed and why.
    """
    params = params or EmbedParams()
    total_start = time.perf_counter()
    image_size = resolve_image_size(params, dataset.records)
    on_ray = 0
    if params.engine == "ray":  # fill the cache on the cluster; the pass below then reads it
        from datacheck.embed.ray_engine import prefill_cache

        on_ray = prefill_cache(dataset, params, image_size, progress=progress).embedded
    with Cache(params.cache_dir or default_cache_dir()) as cache:
        run = _Run(params, cache, image_size, progress)
        slots, failures = run.hash_all(dataset.records)
        misses = run.fill_from_cache(slots)
        if misses:
            logger.info("%d of %d images need embedding", len(misses), len(slots))
            run.compute(misses)
        computed = sum(1 for s in misses if s.error is None)
        result = _assemble(run, slots, failures, computed)
    run.timings["total"] = time.perf_counter() - total_start
    if on_ray:  # what the cluster embedded counts as computed, not as served from the cache
        computed = result.computed + min(on_ray, result.cached)
        cached = len(result.records) - computed
        result = dataclasses.replace(result, computed=computed, cached=cached, runtime="ray")
    return result
