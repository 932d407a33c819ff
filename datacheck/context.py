"""The frozen context every check reads: dataset, embeddings, image stats, logits and the one kNN graph."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from datacheck.dataset import Dataset, FileIssue, ImageRecord
from datacheck.embed.pipeline import Embeddings
from datacheck.fileio import file_sha256
from datacheck.halfrows import HalfUnitRows, row_blocks
from datacheck.images import STATS_VERSION
from datacheck.index import KnnGraph, KnnParams, build_knn_cached, l2_normalise
from datacheck.reduce import SharedBasis
from datacheck.spool import RowArray

#: Files larger than this are not hashed when they were not embedded (a broken multi-GB file).
MAX_HASH_BYTES = 1 << 30


T = TypeVar("T")


def _frozen(array: T) -> T:
    """``array`` made read-only (rows mapped from disk, :mod:`datacheck.spool`, hand out copies)."""
    if isinstance(array, np.ndarray):
        array.flags.writeable = False
    return array


@dataclass(frozen=True)
class ReferenceSet:
    """Embedded reference images (e.g. samples from deployment) to compare the dataset against.

    Attributes:
        paths: Paths relative to the reference root.
        vectors: ``float32[M, D]`` L2-normalised bottlenecks, same backbone and size as the dataset's.
        root: The reference folder.
        logits: ``float16[M, 1000]`` ImageNet logits (names uncovered groups), or ``None``.
    """

    paths: tuple[str, ...]
    vectors: np.ndarray
    root: str
    logits: np.ndarray | RowArray | None = None


@dataclass(frozen=True)
class AuditContext:
    """Read-only inputs of one audit. Arrays are row-aligned with ``records`` and not writeable.

    Attributes:
        dataset: The discovered dataset (all files, including those that failed).
        records: Images that were embedded, in dataset order.
        vectors: ``float32[N, D]`` L2-normalised bottlenecks: an array, or from ``[embed] spill_rows`` images
            :class:`~datacheck.halfrows.HalfUnitRows` (the same values read by row, in half the memory).
        logits: ``float16[N, 1000]`` ImageNet logits as cached (compute on a wider copy), or ``None``.
        stats: One row of scalar image statistics per record (see ``ImageStats.as_row``).
        thumbs: ``uint8[N, 32, 32, 3]`` thumbnails (near-duplicate verification, local probes).

            ``logits`` and ``thumbs`` are arrays or, from ``EmbedParams.spill_rows`` images on, rows mapped
            from disk (:mod:`datacheck.spool`): index them with the rows needed (``thumbs[rows]``), never
            ``np.asarray`` them whole.
        file_sha256: Content hash per record.
        labels: ``int[N]`` index into ``class_names``.
        class_names: Sorted class names.
        splits: Split name per record (``None`` everywhere for a layout without splits).
        knn: The shared cosine kNN graph.
        failures: Files that could not be read or decoded.
        embedding_info: Model id, image size, dim, runtime, cached and computed counts, and how the kNN
            graph was searched (``neighbours``: method and measured search recall).
        reference: Images like those the application will see (``--reference``), or ``None``.
        derived_dir: The cache's folder of arrays derived by content (:mod:`datacheck.derived`: the kNN
            graph, near-duplicate pair scores), or ``None`` to compute everything afresh.
        pca: The principal-component basis of ``vectors`` the kNN graph was searched in; read it through
            :meth:`reduced` (``None``: fitted on first use).
    """

    dataset: Dataset
    records: tuple[ImageRecord, ...]
    vectors: np.ndarray | HalfUnitRows
    logits: np.ndarray | RowArray | None
    stats: pd.DataFrame
    thumbs: np.ndarray | RowArray
    file_sha256: tuple[str, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]
    splits: tuple[str | None, ...]
    knn: KnnGraph
    failures: tuple[FileIssue, ...]
    embedding_info: dict
    reference: ReferenceSet | None = None
    derived_dir: Path | None = None
    pca: SharedBasis | None = None

    @property
    def n(self) -> int:
        """Number of embedded images."""
        return len(self.records)

    @functools.cached_property
    def paths(self) -> tuple[str, ...]:
        """Dataset-relative path of each row (computed once)."""
        return tuple(r.path for r in self.records)

    @property
    def has_splits(self) -> bool:
        """Whether rows carry split names."""
        return any(s is not None for s in self.splits)

    @functools.cached_property
    def label_names(self) -> np.ndarray:
        """Class name of each row."""
        return np.asarray(self.class_names, dtype=object)[self.labels]

    @functools.cached_property
    def content_ids(self) -> np.ndarray:
        """``uint64[N]``: the first 64 bits of each row's content hash (a compact identity of the image)."""
        return np.array([int(sha[:16], 16) for sha in self.file_sha256], dtype=np.uint64)

    @functools.cached_property
    def _shared_basis(self) -> SharedBasis:
        # a context copied with other vectors (dataclasses.replace) must not read the old ones' basis
        return (
            self.pca
            if self.pca is not None and self.pca.vectors is self.vectors
            else SharedBasis(self.vectors)
        )

    def reduced(self, dims: int) -> np.ndarray:
        """``float32[N, d]``: every row on the first ``d = min(dims, D)`` principal axes (not whitened).

        One basis per audit, fitted once (:mod:`datacheck.reduce`): the kNN search, the labels check and the
        map read the same axes. A read-only view.
        """
        return self._shared_basis.reduced(dims)

    @functools.cached_property
    def _memo(self) -> dict[Hashable, object]:
        return {}

    def shared(self, key: Hashable, compute: Callable[[], T]) -> T:
        """A value derived from this context, computed once per ``key`` and handed to every caller.

        What several checks need under one definition (e.g. the duplicate pairs that ``duplicates`` and
        ``leakage`` share) lives here, with the context, instead of in a module-level memo. Treat the value
        as read-only.
        """
        with self._memo_lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:  # checks may run on several threads: each value is computed once
            if key not in self._memo:
                self._memo[key] = compute()
            return self._memo[key]  # type: ignore[return-value]

    @functools.cached_property
    def _memo_lock(self) -> threading.Lock:
        return threading.Lock()

    @functools.cached_property
    def _key_locks(self) -> dict[Hashable, threading.Lock]:
        return {}

    def prepare_for_threads(self) -> None:
        """Compute the lazily cached values before several threads read the context.

        (``functools.cached_property`` takes no lock from Python 3.12 on, so two threads could each compute
        one; values computed here once are then only read.)
        """
        names = ["paths", "label_names", "content_ids", "_shared_basis", "_memo", "_memo_lock", "_key_locks"]
        names += ["_sha_of_path", "fingerprint"] if self.derived_dir is not None else ["_sha_of_path"]
        for name in names:
            getattr(self, name)

    @functools.cached_property
    def _sha_of_path(self) -> dict[str, str]:
        return dict(zip(self.paths, self.file_sha256, strict=True))

    def file_hashes(self, paths: Iterable[str]) -> dict[str, str]:
        """Path → SHA-256 for these dataset-relative paths.

        The content hash of an embedded image, else the hash of the file's bytes (a file that could not be
        embedded: a decision on it can still be verified, a finding on it keeps its identity when the file
        is renamed). Paths with no readable file (or one over :data:`MAX_HASH_BYTES`) are left out.
        """
        known = self._sha_of_path
        out: dict[str, str] = {}
        for path in paths:
            sha = known.get(path) or _hash_unembedded(Path(str(self.dataset.root)) / path)
            if sha is not None:
                out[path] = sha
        return out

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 of everything a check may read: equal fingerprints, equal check results.

        Statistics, thumbnails and logits are functions of the content hashes, the statistics version and the
        model (all hashed); the vectors are hashed too, as they are what most checks read.
        """
        facts = {
            "root": str(self.dataset.root),
            "layout": self.dataset.layout,
            "paths": list(self.paths),
            "sha256": list(self.file_sha256),
            "labels": self.labels.tolist(),
            "classes": list(self.class_names),
            "splits": list(self.splits),
            "failures": [[f.path, f.kind, f.reason] for f in self.failures],
            "stats_version": STATS_VERSION,
            "stats_columns": list(self.stats.columns),
            "model": [self.embedding_info.get("model"), self.embedding_info.get("image_size")],
            "reference": [list(self.reference.paths), self.reference.root] if self.reference else None,
        }
        digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode())
        for array in (self.vectors, self.reference.vectors if self.reference else None):
            if array is not None:
                digest.update(f"{array.dtype}{array.shape}".encode())
                for _, block in row_blocks(array):
                    digest.update(memoryview(np.ascontiguousarray(block)).cast("B"))
        return digest.hexdigest()


def _hash_unembedded(target: Path) -> str | None:
    try:
        if not target.is_file() or target.stat().st_size > MAX_HASH_BYTES:
            return None
        return file_sha256(target)
    except OSError:
        return None


def _unit_vectors(vectors: np.ndarray, consume: bool) -> np.ndarray | HalfUnitRows:
    """The rows L2-normalised, as :class:`HalfUnitRows` when they are float16, else a read-only array.

    The pipeline returns float16 rows from ``spill_rows``; ``consume`` normalises float32 rows in place.
    """
    if vectors.dtype == np.float16 and vectors.ndim == 2:
        return HalfUnitRows.of(vectors)
    return _frozen(l2_normalise(vectors, in_place=consume))


def build_context(
    dataset: Dataset,
    embeddings: Embeddings,
    knn_params: KnnParams | None = None,
    reference: Embeddings | None = None,
    reference_root: Path | None = None,
    derived_dir: Path | None = None,
    *,
    consume: bool = False,
) -> AuditContext:
    """Assemble the frozen context, building the shared kNN graph once.

    ``derived_dir`` keeps arrays derived by content (:mod:`datacheck.derived`): unchanged vectors reuse their
    kNN graph (``<derived_dir>/knn``), unchanged image pairs their near-duplicate scores. With ``consume``
    the context takes over the arrays of ``embeddings`` and ``reference`` (their vectors are normalised in
    place: the caller must not read them afterwards) instead of copying them: 5 GB less at a million images.
    """
    records = embeddings.records
    class_names = tuple(sorted({r.label for r in records}))
    lookup = {name: i for i, name in enumerate(class_names)}
    vectors = _unit_vectors(embeddings.vectors, consume)
    shared = SharedBasis(vectors)
    knn = build_knn_cached(vectors, knn_params, derived_dir / "knn" if derived_dir else None, shared)
    return AuditContext(
        dataset=dataset,
        records=records,
        vectors=vectors,
        logits=None if embeddings.logits is None else _frozen(embeddings.logits),
        stats=embeddings.stats.columns,
        thumbs=_frozen(embeddings.stats.thumbs),
        file_sha256=embeddings.file_sha256,
        labels=_frozen(np.array([lookup[r.label] for r in records], dtype=np.int64)),
        class_names=class_names,
        splits=tuple(r.split for r in records),
        knn=knn,
        failures=tuple(dataset.issues) + tuple(embeddings.failures),
        embedding_info={
            "model": embeddings.model_id,
            "image_size": embeddings.image_size,
            "dim": embeddings.dim,
            "runtime": embeddings.runtime,
            "cached": embeddings.cached,
            "computed": embeddings.computed,
            "neighbours": {"method": knn.method, "search_recall": round(knn.search_recall, 4)},
        },
        reference=None
        if reference is None
        else ReferenceSet(
            paths=tuple(r.path for r in reference.records),
            vectors=_frozen(l2_normalise(reference.vectors, in_place=consume)),
            root=str(reference_root or ""),
            logits=None if reference.logits is None else _frozen(reference.logits),
        ),
        derived_dir=derived_dir,
        pca=shared,
    )
