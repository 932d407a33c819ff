"""The report's file index and 2-D map of the images, computed once at audit time.

The HTML report renders only what report.json holds, so everything it shows about individual images comes
from here: for every image it may show, the dataset-relative path, the SHA-256 of the file (the thumbnail's
name, and what ``datacheck apply`` checks before it moves anything), the class, the split and a 2-D position.

The position is a UMAP layout of the bottlenecks (PCA-reduced first; the shared kNN graph is reused when
every image is on the map). Above ``max_points`` images the layout is of a random subsample chosen by
content (so it survives changed findings), and every file a finding names that the sample lacks is placed
among its nearest neighbours on it, so the report can show a thumbnail and take a decision for each of them.
Files named by findings that could not be embedded (``files`` check) are listed without a position, with the
hash of their bytes when they can be read.

The result is a plain JSON-ready dict (columnar lists, one entry per row); see docs/report-schema.md.
"""

from __future__ import annotations

import logging
import sys
import types
import typing
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from datacheck.checks.base import CheckResult
from datacheck.errors import UsageError
from datacheck.index import KnnGraph, KnnParams, build_knn, row_ids

if TYPE_CHECKING:
    from datacheck.context import AuditContext

logger = logging.getLogger(__name__)

MapMethod = Literal["umap", "pca", "none"]


def checked_map_method(method: object) -> MapMethod:
    """``method`` if it names a map method, else a usage error listing them."""
    if method not in typing.get_args(MapMethod):
        raise UsageError(f"unknown map method '{method}': use {', '.join(typing.get_args(MapMethod))}")
    return method  # type: ignore[return-value]


#: Largest number of images placed on the map; above it a random subsample (plus every named file) is used.
MAX_POINTS = 20_000
#: Files taken from each list nested inside a finding's own fields (e.g. the members of a cluster).
NESTED_FILES = 24
#: Neighbours listed per file of a finding whose check's view asks for them (``ReportView.neighbours``).
N_NEIGHBOURS = 6
#: UMAP works on this many PCA dimensions of the bottlenecks.
PCA_DIM = 32
#: Neighbours per image in UMAP's graph when the shared graph cannot be reused (a subsample).
UMAP_NEIGHBOURS = 15
#: Below this many images UMAP is not meaningful; the map falls back to PCA.
MIN_UMAP_POINTS = 30


@dataclass(frozen=True)
class MapLayout:
    """Where the map's images sit: what :func:`build_map` needs from the vectors alone (not the findings).

    Attributes:
        rows: The rows laid out (all of them, or a content-chosen sample above ``max_points``).
        method: The method used (``"umap"``, ``"pca"`` or ``"none"``; UMAP falls back to PCA on failure).
        coords: ``float[len(rows), 2]`` positions in ``[0, 1]``, or ``None`` for ``"none"``.
    """

    rows: np.ndarray
    method: str
    coords: np.ndarray | None


def lay_out(
    ctx: AuditContext,
    *,
    method: MapMethod = "umap",
    max_points: int = MAX_POINTS,
    seed: int = 0,
    store: Path | None = None,
) -> MapLayout:
    """The 2-D layout of the map's images. It reads the vectors only, so it can run beside the checks.

    Args:
        ctx: The audit context.
        method: ``"umap"``, ``"pca"`` (first two principal components) or ``"none"`` (no positions).
        max_points: Images placed on the map before subsampling.
        seed: Random seed of the layout (the subsample is chosen by content, see :func:`_content_sample`).
        store: Folder of earlier layouts (:mod:`datacheck.derived`): the same rows with the same vectors
            reuse theirs. ``None``: always compute.
    """
    checked_map_method(method)
    sample = _content_sample(ctx.content_ids, max_points)
    used, coords = _stored_layout(ctx, sample, method, seed, store)
    return MapLayout(sample, used, coords)


def build_map(ctx: AuditContext, results: Sequence[CheckResult], layout: MapLayout) -> dict[str, Any]:
    """The report's ``map`` section: file index, 2-D layout and nearest neighbours of flagged files.

    Args:
        ctx: The audit context the checks ran on.
        results: The check results (their findings decide which files must be present).
        layout: :func:`lay_out` of the same context; files the findings name that it lacks are placed
            among their nearest neighbours on it.

    Returns:
        A JSON-ready dict; see docs/report-schema.md (``map``).
    """
    paths = ctx.paths  # a property that builds a new tuple on every access
    row_of = {path: i for i, path in enumerate(paths)}
    named = list(_named_files(results))
    neighbour_checks = {r.id for r in results if r.view is not None and r.view.neighbours}
    neighbour_sources = [row_of[p] for p in _top_level_files(results, neighbour_checks) if p in row_of]
    neighbours = _neighbours(ctx, neighbour_sources)
    required = {row_of[p] for p in named if p in row_of}
    required.update(j for row in neighbours.values() for j in row)
    rows, coords = _with_named_rows(ctx, layout.rows, layout.coords, required)
    position = {int(row): pos for pos, row in enumerate(rows)}
    unembedded = sorted({p for p in _top_level_files(results) if p not in row_of})
    unembedded_sha = ctx.file_hashes(unembedded)
    split_names = sorted({s for s in ctx.splits if s is not None})
    split_index = {name: i for i, name in enumerate(split_names)}
    return {
        "method": layout.method,
        "images": ctx.n,
        "subsampled": len(rows) < ctx.n,
        "classes": list(ctx.class_names),
        "splits": split_names,
        "path": [paths[r] for r in rows] + unembedded,
        "sha256": [ctx.file_sha256[r] for r in rows] + [unembedded_sha.get(p) for p in unembedded],
        "class": [int(ctx.labels[r]) for r in rows] + [-1] * len(unembedded),
        "split": [split_index.get(ctx.splits[r], -1) for r in rows] + [-1] * len(unembedded),
        "x": _rounded(coords[:, 0] if coords is not None else None, len(rows)) + [None] * len(unembedded),
        "y": _rounded(coords[:, 1] if coords is not None else None, len(rows)) + [None] * len(unembedded),
        "neighbours": {
            str(position[row]): [position[j] for j in near] for row, near in sorted(neighbours.items())
        },
    }


# ------------------------------------------------------------------------------------------ named files


def _top_level_files(results: Sequence[CheckResult], checks: Iterable[str] | None = None) -> Iterator[str]:
    wanted = None if checks is None else frozenset(checks)
    for res in results:
        if wanted is None or res.id in wanted:
            for finding in res.findings:
                yield from finding.files


def _named_files(results: Sequence[CheckResult]) -> Iterator[str]:
    """Every path a finding names: its ``files`` and the first few of each string list in its own fields.

    Strings that are not dataset paths (class or split names) are among them; callers keep known paths.
    """
    yield from _top_level_files(results)
    for res in results:
        for finding in res.findings:
            for value in finding.extra.values():
                yield from _nested_paths(value)


def _nested_paths(value: Any) -> Iterator[str]:
    """Path lists nested in a finding's fields (e.g. ``clusters[].files``): the first few of each."""
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _nested_paths(item)
    elif isinstance(value, list | tuple):
        if value and all(isinstance(v, str) for v in value):
            yield from value[:NESTED_FILES]
        else:
            for item in value:
                yield from _nested_paths(item)


# ----------------------------------------------------------------------------------------- rows and kNN


def _neighbours(ctx: AuditContext, rows: Iterable[int]) -> dict[int, list[int]]:
    """The nearest neighbours (rows) of each given row, from the shared kNN graph."""
    out: dict[int, list[int]] = {}
    for row in rows:
        near = ctx.knn.indices[row]
        out[int(row)] = [int(j) for j in near[near >= 0][:N_NEIGHBOURS] if j != row]
    return out


def _content_sample(ids: np.ndarray, max_points: int) -> np.ndarray:
    """All rows when they fit, else the ``max_points`` rows with the smallest content ids.

    A random sample that depends on the images only — not on what the checks found, nor on images added or
    removed elsewhere — so a stored layout is served or updated instead of recomputed when findings change.
    """
    n = len(ids)
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.argsort(ids, kind="stable")[:max_points])


def _with_named_rows(
    ctx: AuditContext, sample: np.ndarray, coords: np.ndarray | None, required: set[int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """The sample plus the rows findings name that it lacks, each placed among its neighbours on the map."""
    extra = np.array(sorted(required.difference(sample.tolist())), dtype=np.int64)
    if not len(extra):
        return sample, coords
    rows = np.concatenate([sample, extra])
    logger.info("map: %d of %d images (%d named by findings, placed)", len(rows), ctx.n, len(extra))
    if coords is None:
        return rows, None
    position = np.full(ctx.n, -1, np.int64)
    position[sample] = np.arange(len(sample))
    placed = [_neighbour_position(ctx, int(row), position, coords) for row in extra]
    return rows, np.concatenate([coords, np.asarray(placed, dtype=coords.dtype).reshape(-1, 2)])


# --------------------------------------------------------------------------------------------- layout


#: Bump when the layout computation changes, so stored layouts are recomputed.
LAYOUT_VERSION = 3


def _stored_layout(
    ctx: AuditContext, rows: np.ndarray, method: MapMethod, seed: int, store: Path | None
) -> tuple[str, np.ndarray | None]:
    """:func:`_layout`, served from ``store`` when these rows' vectors were laid out before."""
    from datacheck import derived

    if store is None or method == "none" or len(rows) == 0:
        return _layout(ctx, rows, method, seed)
    # the full map reuses the shared graph, so its k is part of the layout's inputs
    label = (
        f"map-v{LAYOUT_VERSION}|{method}|{seed}|{PCA_DIM}|{UMAP_NEIGHBOURS}|{MIN_UMAP_POINTS}|k{ctx.knn.k}"
    )
    key = derived.content_key(label, np.asarray(ctx.vectors[rows]))
    stored = derived.load(store, key)
    if stored is not None and {"method", "coords"} <= stored.keys() and len(stored["coords"]) == len(rows):
        logger.info("map: %d images, layout served from %s", len(rows), store)
        return str(stored["method"]), stored["coords"]
    ids = row_ids(np.asarray(ctx.vectors[rows]))  # rows matched by their vectors: another model never matches
    placed = _placed_in_stored_layout(ctx, rows, ids, store, label)
    used, coords = placed if placed is not None else _layout(ctx, rows, method, seed)
    if coords is not None:
        derived.store(
            store, key, {"method": np.array(used), "coords": coords, "ids": ids, "label": np.array(label)}
        )
    return used, coords


#: Largest share of the map's rows added or removed since a stored layout for it to be kept, the new
#: images placed among their neighbours; beyond it the layout is computed afresh. Above 20,000 images the
#: map holds every file a finding names (and its neighbours) plus a fill, and a few hundred new images move
#: ~5 % of those rows (capped finding lists change), hence 10 %.
MAX_PLACED_SHARE = 0.10


def _placed_in_stored_layout(
    ctx: AuditContext, rows: np.ndarray, ids: np.ndarray, store: Path, label: str
) -> tuple[str, np.ndarray] | None:
    """The stored layout (same settings) nearest to ``ids``, kept, with the rows it lacks placed into it.

    A new image goes to the similarity-weighted mean position of its nearest neighbours (the shared kNN
    graph) that the layout holds, which is where UMAP puts a point whose neighbours did not move. ``None``
    when no stored layout differs from ``rows`` by at most :data:`MAX_PLACED_SHARE`.
    """
    from datacheck import derived

    stored = derived.closest(store, label, ids)
    if stored is None:
        return None
    where = {int(v): i for i, v in enumerate(stored["ids"].tolist())}
    known = np.array([where.get(int(v), -1) for v in ids.tolist()], dtype=np.int64)
    added = int((known < 0).sum())
    removed = len(stored["ids"]) - len(set(known[known >= 0].tolist()))
    if added + removed > MAX_PLACED_SHARE * len(rows) or added == len(rows):
        return None
    coords = np.full((len(rows), 2), np.nan, np.float32)
    coords[known >= 0] = stored["coords"][known[known >= 0]]
    position = np.full(ctx.n, -1, np.int64)
    position[rows] = np.arange(len(rows))
    for local in np.flatnonzero(known < 0):
        coords[local] = _neighbour_position(ctx, int(rows[local]), position, coords)
    logger.info("map: %d images, %d placed into the stored layout (%d removed)", len(rows), added, removed)
    return str(stored["method"]), coords


def _neighbour_position(ctx: AuditContext, row: int, position: np.ndarray, coords: np.ndarray) -> np.ndarray:
    near, sims = ctx.knn.indices[row], ctx.knn.similarities[row]
    local = np.where(near >= 0, position[np.maximum(near, 0)], -1)
    ok = (local >= 0) & np.isfinite(coords[np.maximum(local, 0), 0])
    if not ok.any():
        return np.nanmean(coords, axis=0)  # no neighbour on the map: the centre of the map
    weights = np.maximum(sims[ok], 1e-6)
    return (coords[local[ok]] * weights[:, None]).sum(axis=0) / weights.sum()


def _layout(
    ctx: AuditContext, rows: np.ndarray, method: MapMethod, seed: int
) -> tuple[str, np.ndarray | None]:
    """2-D coordinates of ``rows`` scaled to ``[0, 1]``, and the method actually used."""
    if method == "none" or len(rows) == 0:
        return "none", None
    if len(rows) < 3:
        return "pca", _unit_square(np.zeros((len(rows), 2), np.float32))
    reduced = np.ascontiguousarray(ctx.reduced(PCA_DIM)[rows])  # the audit's shared basis
    if method == "pca" or len(rows) < MIN_UMAP_POINTS:
        return "pca", _unit_square(reduced[:, :2])
    try:
        graph = ctx.knn if len(rows) == ctx.n else _subsample_graph(reduced)
        return "umap", _unit_square(_umap(reduced, _precomputed_knn(graph), seed))
    except Exception:  # a map is a nicety: a UMAP failure must not lose the audit
        logger.warning("UMAP failed; the map falls back to PCA", exc_info=True)
        return "pca", _unit_square(reduced[:, :2])


def _subsample_graph(vectors: np.ndarray) -> KnnGraph:
    """The nearest-neighbour graph of a subsample, built like the shared one (faster than UMAP's own)."""
    n = len(vectors)
    k = min(UMAP_NEIGHBOURS, n - 1)
    return build_knn(vectors, KnnParams(k=k, candidates=min(2 * k, n - 1), search_dim=0))


def _precomputed_knn(graph: KnnGraph) -> tuple[np.ndarray, np.ndarray] | None:
    """A kNN graph in UMAP's format (self first, cosine distances); ``None`` if it has padding."""
    indices = graph.indices
    if indices.size == 0 or (indices < 0).any():
        return None
    n = len(indices)
    self_col = np.arange(n, dtype=indices.dtype)[:, None]
    knn_indices = np.concatenate([self_col, indices], axis=1).astype(np.int32)
    distances = np.clip(1.0 - graph.similarities, 0.0, 2.0).astype(np.float32)
    knn_dists = np.concatenate([np.zeros((n, 1), np.float32), distances], axis=1)
    return knn_indices, knn_dists


def _import_umap() -> ModuleType:
    """Import umap-learn without the TensorFlow import its package ``__init__`` does for ParametricUMAP.

    The map never uses ParametricUMAP, and on a warm-cache audit nothing else needs TensorFlow: importing
    it would cost ~2.5 s and ~0.5 GB. A ``None`` entry in ``sys.modules`` makes umap's own
    ``try: from .parametric_umap import ...`` fail the way it does without TensorFlow; the entry is removed
    again so a later explicit import still works.
    """
    if "umap" not in sys.modules:
        blocked = "umap.parametric_umap"
        sys.modules.setdefault(blocked, None)  # type: ignore[arg-type]
        try:
            import umap  # noqa: F401
        finally:
            if sys.modules.get(blocked, ModuleType("placeholder")) is None:
                del sys.modules[blocked]
    # also when something else imported umap first; functions already cached are left alone
    _keep_compiled_code(("umap.", "pynndescent."))
    _release_gil_in_layout_epochs()
    return sys.modules["umap"]


#: The compiled UMAP epoch that lets go of the GIL (:func:`_release_gil_in_layout_epochs`), once a process.
_NOGIL_EPOCH = "_nb_optimize_layout_euclidean_single_epoch"


def _release_gil_in_layout_epochs() -> None:
    """Have UMAP's layout epochs release the GIL, so the layout runs beside the checks' Python threads.

    umap-learn compiles its single-threaded epoch without ``nogil``: each epoch (tens of ms at 20,000 points)
    then holds the GIL, and every check thread waits — laying the map out beside the checks gained nothing.
    The epoch works on numpy arrays only, so the same function compiled with ``nogil=True`` computes the
    same layout. It is compiled from a copy with its own name, so numba's disk cache (which does not key on
    ``nogil``) never serves the GIL-holding build in its place. A umap-learn without that function is left
    as it is.
    """
    layouts = sys.modules.get("umap.layouts")
    epoch = getattr(layouts, _NOGIL_EPOCH, None)
    python_epoch = getattr(epoch, "py_func", None)
    if python_epoch is None or epoch.targetoptions.get("nogil"):
        return
    from datacheck.jit import compiled

    copy = types.FunctionType(
        python_epoch.__code__,
        python_epoch.__globals__,
        python_epoch.__name__ + "_nogil",
        python_epoch.__defaults__,
        python_epoch.__closure__,
    )
    copy.__qualname__ = python_epoch.__qualname__ + "_nogil"
    copy.__module__ = python_epoch.__module__
    options = {
        name: epoch.targetoptions[name] for name in ("fastmath", "parallel") if name in epoch.targetoptions
    }
    setattr(layouts, _NOGIL_EPOCH, compiled(copy, nogil=True, **options))


def _keep_compiled_code(prefixes: tuple[str, ...]) -> int:
    """Let numba keep the compiled code of these modules' functions on disk, for the next process.

    umap-learn compiles most of its numba functions without ``cache=True``, so every audit paid 10-15 s
    compiling them again. Turning the on-disk cache on before their first call stores each compiled function
    next to its module (or in numba's per-user cache directory where that is read-only); numba itself
    recompiles when the source, numba or the CPU changes. A function it cannot cache is compiled as before.
    Only the functions not already cached are touched. Returns how many were.
    """
    try:
        from numba.core.registry import CPUDispatcher
    except ImportError:  # a numba that moved its internals: compile every time, as before
        return 0
    enabled = 0
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(prefixes):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, CPUDispatcher) and type(value._cache).__name__ == "NullCache":
                try:
                    value.enable_caching()
                except RuntimeError:  # nowhere writable for this function
                    continue
                enabled += 1
    logger.debug("numba: on-disk cache enabled for %d umap functions", enabled)
    return enabled


def _umap(reduced: np.ndarray, knn: tuple[np.ndarray, np.ndarray] | None, seed: int) -> np.ndarray:
    """UMAP of the PCA-reduced bottlenecks (reusing the shared kNN graph when given)."""
    umap = _import_umap()
    n = len(reduced)
    n_neighbors = knn[0].shape[1] if knn is not None else min(UMAP_NEIGHBOURS, n - 1)
    options: dict[str, Any] = {
        "n_neighbors": n_neighbors,
        "n_components": 2,
        "metric": "cosine",
        "min_dist": 0.1,
        "random_state": seed,
        "init": "pca",
        "n_epochs": 200 if n <= 10_000 else 120,
        "low_memory": True,
    }
    if knn is not None:
        options["precomputed_knn"] = (knn[0], knn[1], None)
    with warnings.catch_warnings():
        # umap's own notices only (the seed pins n_jobs to 1; no search index is kept for transform): the
        # filter list is the process's, and another thread's warnings must still be seen
        warnings.filterwarnings("ignore", category=UserWarning, module=r"umap\.")
        return umap.UMAP(**options).fit_transform(reduced)


def _unit_square(coords: np.ndarray) -> np.ndarray:
    """Scale to ``[0, 1]`` on the larger axis, centred on the smaller; degenerate layouts go to the centre."""
    coords = np.nan_to_num(np.asarray(coords, dtype=np.float64))
    low, high = coords.min(axis=0), coords.max(axis=0)
    span = float((high - low).max())
    if span <= 0:
        return np.full_like(coords, 0.5)
    return (coords - low) / span + (1.0 - (high - low) / span) / 2


def _rounded(values: np.ndarray | None, n: int) -> list[float | None]:
    if values is None:
        return [None] * n
    return [round(float(v), 4) for v in values]
