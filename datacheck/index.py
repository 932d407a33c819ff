"""The one shared cosine k-nearest-neighbour graph every neighbour-based check reads.

Built once per audit. Never materialises an N×N matrix:

* up to ``exact_max`` images: blocked exact search (faiss flat index). Vectors are first projected to
  ``search_dim`` principal components (10× less BLAS work than 1280-d), ``candidates`` neighbours are
  retrieved per row, and those are re-scored with the full-dimensional cosine so reported similarities are
  exact.
* beyond: an approximate inverted-file index (faiss IVF-Flat) over the same reduced vectors. How many of
  its lists a query searches is set per dataset: raised from 16 until a sample of rows, searched both ways,
  finds ``min_recall`` of the candidates an exact search of the same space finds
  (:func:`calibrated_probes`). The share measured is kept with the graph and reported.

Memory is O(N × (search_dim + candidates)); time is O(N² × search_dim) for the exact path.

:func:`build_knn_cached` keeps built graphs in a directory, keyed by a hash of the vectors themselves and
the parameters, so re-auditing unchanged data (new thresholds, another check selection) skips the build.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np

from datacheck import derived
from datacheck.blocks import map_blocks
from datacheck.halfrows import HalfUnitRows, as_rows, row_blocks, row_norms
from datacheck.jit import compiled
from datacheck.params import Params, param
from datacheck.reduce import SharedBasis, content_sample, fit_basis

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KnnParams(Params):
    """How the shared kNN graph is built.

    Attributes:
        k: Neighbours kept per image (excluding itself).
        search_dim: PCA dimensions used to retrieve candidates (0 = search in the full space).
        candidates: Candidates retrieved per image before exact re-scoring (>= k).
        block: Query rows per candidate-search block (bounds its memory at block × candidates).
        exact_max: Largest N searched exactly; above it the approximate index is used.
        min_recall: The approximate index searches as many lists as it takes for a sample of rows to get
            this share of the candidates an exact search of the same reduced space returns.
    """

    k: int = param(15, ge=1)
    search_dim: int = param(128, ge=0)
    candidates: int = 40
    block: int = param(8192, ge=1)
    exact_max: int = 200_000
    min_recall: float = param(0.95, ge=0.0, le=1.0)

    def relations(self) -> list[str]:
        """At least ``k`` candidates are retrieved."""
        if self.candidates >= self.k:
            return []
        return [f"candidates must be at least k ({self.k}), got {self.candidates!r}"]


@dataclass(frozen=True)
class KnnGraph:
    """Neighbours of every row, nearest first.

    Attributes:
        indices: ``int32[N, k]`` neighbour row numbers (``-1`` pads rows of tiny datasets).
        similarities: ``float32[N, k]`` cosine similarities in the full embedding space.
        method: ``"exact"`` or ``"approximate"``.
        search_recall: Share of the candidates an exact search of the reduced space returns that the
            search returned, measured on a sample of rows (1.0 for the exact search).
    """

    indices: np.ndarray
    similarities: np.ndarray
    method: str
    search_recall: float = 1.0

    @property
    def k(self) -> int:
        """Neighbours per row."""
        return int(self.indices.shape[1])

    def pairs(self, min_similarity: float) -> np.ndarray:
        """Unique undirected pairs ``(i, j)``, ``i < j``, with similarity at least ``min_similarity``."""
        rows, cols = np.nonzero((self.similarities >= min_similarity) & (self.indices >= 0))
        i = rows.astype(np.int64)
        j = self.indices[rows, cols].astype(np.int64)
        pairs = np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1)
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def l2_normalise(vectors: np.ndarray, *, in_place: bool = False) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero).

    ``in_place``: divide a writeable float32 ``vectors`` itself (the same values, no copy: 5 GB at a million
    1280-d rows); anything else is copied as without it.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = row_norms(vectors)[:, None]
    if in_place and vectors.flags.writeable:
        vectors /= norms
        return vectors
    return vectors / norms


def unit_rows(vectors: np.ndarray | HalfUnitRows) -> np.ndarray | HalfUnitRows:
    """``vectors`` as unit-length float32 rows: themselves when they already are (the context's), no copy.

    At a million 1280-d rows a normalised copy is 5 GB.
    """
    if isinstance(vectors, HalfUnitRows):
        return vectors
    vectors = np.asarray(vectors, dtype=np.float32)
    squared = np.einsum("ij,ij->i", vectors, vectors)
    return vectors if np.allclose(squared, 1.0, rtol=0, atol=1e-5) else l2_normalise(vectors)


def _search_space(unit: np.ndarray, dim: int, shared: SharedBasis | None) -> np.ndarray:
    """Rows on their top ``dim`` principal axes, re-normalised: used only to retrieve candidates."""
    if dim == 0 or dim >= unit.shape[1] or len(unit) <= dim:
        return unit
    reduced = shared.reduced(dim) if shared is not None else fit_basis(unit, dim).project(unit)
    return l2_normalise(reduced)


def _top_candidates(space: np.ndarray, n_candidates: int, block: int) -> np.ndarray:
    """Blocked exact inner-product search: the ``n_candidates`` most similar other rows of each row.

    faiss' flat index does the blocked BLAS product and keeps a running top-k heap, so neither an N×N matrix
    nor a full-row partition is ever built (an ``argpartition`` per block was ~20× slower, see
    docs/benchmarks.md).
    """
    import faiss

    n = len(space)
    m = min(n_candidates, n - 1)
    index = faiss.IndexFlatIP(space.shape[1])
    index.add(np.ascontiguousarray(space, dtype=np.float32))
    out = np.empty((n, m), dtype=np.int32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        _, found = index.search(space[start:stop], m + 1)
        out[start:stop] = _drop_self(found, np.arange(start, stop), m)
    return out


def _drop_self(found: np.ndarray, rows: np.ndarray, m: int) -> np.ndarray:
    """Remove each row's own id from its result list (exact duplicates may rank above it)."""
    return found[others_mask(found, rows)].reshape(len(found), m)


def others_mask(found: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``bool[B, m + 1]``: the ``m`` hits of each row's ``m + 1`` search results that are not the row itself.

    A row tied with identical copies may not be listed among its own results: its last (least similar) hit
    goes instead, so every row keeps exactly ``m``.
    """
    keep = found != rows[:, None]
    keep[keep.all(axis=1), -1] = False
    return keep


def _rescore(
    queries: np.ndarray, unit: np.ndarray | HalfUnitRows, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact full-dimensional cosine for each candidate; keep the best ``k`` sorted (gathered rows)."""
    sims = np.einsum("nd,nkd->nk", queries, unit[candidates], optimize=True)
    return _best(candidates, sims, k)


def _best(candidates: np.ndarray, sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` most similar candidates, most similar first, and their similarities."""
    order = np.argsort(-sims, axis=1)[:, :k]
    return (
        np.take_along_axis(candidates, order, axis=1).astype(np.int32),
        np.take_along_axis(sims, order, axis=1).astype(np.float32),
    )


#: Bytes of gathered candidate vectors re-scored at once: small enough to stay in cache (a block of 8,192
#: rows × 40 candidates × 1280 dims was 1.6 GB and twice as slow, docs/benchmarks.md).
_RESCORE_BYTES = 64 << 20
#: Rows re-scored per block by the compiled kernel (which gathers nothing: a block holds only its results).
_DOTS_BLOCK = 4096


def _rescore_blocked(
    unit: np.ndarray | HalfUnitRows, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, ...]:
    """:func:`_rescore` of every row against its candidates, in blocks, on every core.

    Rows held as a float32 array are scored by a compiled kernel that reads each candidate's row where it
    lies: gathering them first (64 MB blocks) tripled the memory traffic and had the kernel zero ~12 GB of
    fresh pages at 60,000 images (2.1 s and 4.1 CPU-s against 0.6 s and 1.2). Float16 rows
    (:class:`~datacheck.halfrows.HalfUnitRows`, large sets) are gathered as float32 blocks and multiplied.
    The blocks run on threads (the kernel and BLAS let go of the GIL); each row's result is the same whatever
    runs beside it.
    """
    if isinstance(unit, np.ndarray):
        kernel = _dots_kernel()

        def fused(start: int) -> tuple[np.ndarray, np.ndarray]:
            block = candidates[start : start + _DOTS_BLOCK]
            return _best(block, kernel(unit, start, block), k)

        done = map_blocks(fused, range(0, len(unit), _DOTS_BLOCK))
    else:
        step = max(1, _RESCORE_BYTES // max(1, candidates.shape[1] * unit.shape[1] * unit.itemsize))

        def gathered(start: int) -> tuple[np.ndarray, np.ndarray]:
            return _rescore(unit[start : start + step], unit, candidates[start : start + step], k)

        done = map_blocks(gathered, range(0, len(unit), step))
    return np.concatenate([i for i, _ in done]), np.concatenate([s for _, s in done])


@functools.cache
def _dots_kernel() -> Callable[[np.ndarray, int, np.ndarray], np.ndarray]:
    """:func:`_candidate_dots` compiled on first use (``nogil``: blocks run on every core)."""
    return compiled(_candidate_dots, nogil=True, fastmath=True)


def _candidate_dots(unit: np.ndarray, first: int, candidates: np.ndarray) -> np.ndarray:
    """``out[i, j] = unit[first + i] · unit[candidates[i, j]]`` in float32, read in place (no gathered copy).

    ``fastmath`` lets the compiler split each sum over vector lanes, as a BLAS product does.
    """
    n_rows, n_candidates = candidates.shape
    dim = unit.shape[1]
    out = np.empty((n_rows, n_candidates), np.float32)
    for i in range(n_rows):
        query = unit[first + i]
        for j in range(n_candidates):
            row = unit[candidates[i, j]]
            total = np.float32(0.0)
            for t in range(dim):
                total += query[t] * row[t]
            out[i, j] = total
    return out


def trained_inverted_lists(training: np.ndarray, n_lists: int, probes: int):
    """An empty faiss IVF-Flat inner-product index, its ``n_lists`` lists trained on ``training``.

    ``probes`` lists are searched per query. Shared by the kNN graph and the duplicates' layout index.
    """
    import faiss

    dim = training.shape[1]
    # faiss's Python constructor keeps the quantizer alive with the index (its referenced_objects)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, n_lists, faiss.METRIC_INNER_PRODUCT)
    index.train(training)
    index.nprobe = probes
    return index


def _inverted_file(space: np.ndarray):
    """A faiss IVF-Flat index of ``space`` (unit rows): ``4·√N`` lists, :data:`FIRST_PROBES` searched each."""
    n = len(space)
    n_lists = int(4 * np.sqrt(n))
    rng = np.random.default_rng(0)
    training = space[rng.choice(n, size=min(n, 64 * n_lists), replace=False)]
    index = trained_inverted_lists(training, n_lists, FIRST_PROBES)
    index.add(space)
    return index


#: Lists an inverted-file query searches before :func:`calibrated_probes` measures whether that is enough.
FIRST_PROBES = 16
#: Rows (chosen by content) on which the approximate search is compared with the exact one.
RECALL_SAMPLE = 1_000


def calibrated_probes(index, space: np.ndarray, n_candidates: int, min_recall: float) -> float:
    """Double ``index.nprobe`` until a sample of rows gets ``min_recall`` of their exact candidates.

    The sample (:data:`RECALL_SAMPLE` rows of ``space``, chosen by content) is searched exactly in the same
    space — linear in N — and through the index. A returned candidate counts when it is as similar as the
    exact search's last one (so ties between identical rows do not count as misses). Sets ``index.nprobe``
    and returns the recall measured at it (every list searched gives the exact candidates).
    """
    import faiss

    n = len(space)
    m = min(n_candidates, n - 1)
    rows = content_sample(space, RECALL_SAMPLE)
    queries = np.ascontiguousarray(space[rows], dtype=np.float32)
    exact_sims, exact_ids = faiss.knn(queries, space, m + 1, metric=faiss.METRIC_INNER_PRODUCT)
    last = exact_sims[others_mask(exact_ids, rows)].reshape(len(rows), m)[:, -1]
    # two float32 dot products of unit rows differ by at most 2·d·2⁻²⁴ (different summation orders)
    floor = last - 2 * space.shape[1] * np.float32(2.0**-24)
    while True:
        sims, found = index.search(queries, m + 1)
        hits = others_mask(found, rows) & (found >= 0) & (sims >= floor[:, None])
        recall = float(np.minimum(hits.sum(axis=1), m).mean() / m)
        if recall >= min_recall or index.nprobe >= index.nlist:
            break
        index.nprobe = min(2 * index.nprobe, index.nlist)
    logger.info(
        "inverted file: %d of %d lists searched per query, candidate recall %.3f",
        index.nprobe,
        index.nlist,
        recall,
    )
    return recall


def _approximate(
    space: np.ndarray, n_candidates: int, block: int, min_recall: float
) -> tuple[np.ndarray, float]:
    """Inverted-file search (faiss IVF-Flat) in the reduced space: sub-quadratic time, linear memory.

    Returns the candidates and the search's measured recall (:func:`calibrated_probes`).
    """
    n = len(space)
    index = _inverted_file(space)
    recall = calibrated_probes(index, space, n_candidates, min_recall)
    out = np.empty((n, n_candidates), dtype=np.int32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        _, found = index.search(space[start:stop], n_candidates + 1)
        out[start:stop] = _drop_self(found, np.arange(start, stop), n_candidates)
    # IVF may return fewer than asked for in sparse cells (-1): point those slots at self's best hit.
    missing = out < 0
    if missing.any():
        out[missing] = np.broadcast_to(out[:, :1], out.shape)[missing]
    return out, recall


def nearest_among(
    unit: np.ndarray, space: np.ndarray, rows: np.ndarray, members: np.ndarray, k: int, params: KnnParams
) -> np.ndarray:
    """``float32[len(rows), k]``: each of ``rows``'s ``k`` highest cosines to the other ``members``.

    As the graph is built: ``params.candidates`` candidates from an inverted file over the members' rows
    in the reduced space (``space``: every row on the principal axes, normalised here), re-scored exactly
    on ``unit``. Linear in the number of members, where an exact search of a class against itself grows
    with its square. ``rows`` must be members; ``k < len(members)``. A row whose searched lists held fewer
    than ``k`` other members keeps ``-inf`` in its last columns: search it exactly.
    """
    n_candidates = min(max(params.candidates, k), len(members) - 1)
    member_space = l2_normalise(np.asarray(space[members], dtype=np.float32))
    index = _inverted_file(member_space)
    calibrated_probes(index, member_space, n_candidates, params.min_recall)
    del member_space
    out = np.empty((len(rows), k), np.float32)
    # gathers of cache size, as in the graph's re-scoring
    step = max(1, _RESCORE_BYTES // ((n_candidates + 1) * unit.shape[1] * unit.itemsize))
    for start in range(0, len(rows), step):
        block = rows[start : start + step]
        _, found = index.search(l2_normalise(np.asarray(space[block], dtype=np.float32)), n_candidates + 1)
        candidates = members[np.maximum(found, 0)]
        listed = (found >= 0) & (candidates != block[:, None])  # sparse lists return -1 for missing hits
        sims = np.einsum("nd,nkd->nk", unit[block], unit[candidates], optimize=True)
        sims[~listed] = -np.inf
        out[start : start + len(block)] = -np.sort(-sims, axis=1)[:, :k]
    return out


def build_knn(
    vectors: np.ndarray | HalfUnitRows,
    params: KnnParams | None = None,
    shared: SharedBasis | None = None,
    depth: int | None = None,
) -> KnnGraph:
    """Build the shared cosine kNN graph of ``vectors`` (any scale; they are L2-normalised here).

    ``shared``: the audit's principal-component basis of these (unit) vectors, searched in; ``None`` fits one.
    ``depth``: neighbours kept per row (default ``params.k``; the stored graph keeps :func:`stored_depth`).
    """
    params = params or KnnParams()
    n = len(vectors)
    if n < 2:
        return KnnGraph(np.full((n, 0), -1, np.int32), np.zeros((n, 0), np.float32), "exact")
    unit = unit_rows(vectors)
    n_candidates = min(params.candidates, n - 1)
    space = _search_space(unit, params.search_dim, shared)
    recall = 1.0
    if n <= params.exact_max:
        candidates = _top_candidates(space, n_candidates, params.block)
        method = "exact"
    else:
        candidates, recall = _approximate(space, n_candidates, params.block, params.min_recall)
        method = "approximate"
    indices, sims = _rescore_blocked(unit, candidates, min(depth or params.k, n_candidates))
    logger.info("kNN graph: %d images, k=%d, %s", n, indices.shape[1], method)
    return KnnGraph(indices, sims, method, recall)


#: Bump when the graph construction changes, so stored graphs are rebuilt.
GRAPH_VERSION = 6

#: Neighbours the stored graph keeps beyond ``k`` (the build re-scores ``candidates`` anyway): a row whose
#: neighbours were removed takes the next ones instead of being searched again. At 60,000 images 100
#: removed rows left ~1,500 lists short, each an exact search of every row (3 s).
SPARE_NEIGHBOURS = 5


def stored_depth(params: KnnParams, n: int) -> int:
    """Neighbours per row of the stored graph: ``k`` plus :data:`SPARE_NEIGHBOURS`, within the candidates."""
    return min(max(params.k, min(params.k + SPARE_NEIGHBOURS, params.candidates)), n - 1)


def _first(graph: KnnGraph, k: int) -> KnnGraph:
    """The graph cut to each row's ``k`` nearest (the stored graph keeps more)."""
    if graph.k <= k:
        return graph
    cut = (np.ascontiguousarray(a[:, :k]) for a in (graph.indices, graph.similarities))
    return KnnGraph(*cut, graph.method, graph.search_recall)


#: Largest share of rows added or removed since a stored graph for it to be updated instead of rebuilt.
MAX_UPDATE_SHARE = 0.05


def row_ids(vectors: np.ndarray | HalfUnitRows) -> np.ndarray:
    """A 64-bit identity per row: a hash of its bytes, plus its rank among identical rows (``int64[N]``).

    Identical rows get consecutive ids in row order, so a graph's rows can be matched with another
    graph's even when images repeat.
    """
    import hashlib

    base = np.array(
        [
            int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
            for _, block in row_blocks(vectors)
            for row in np.ascontiguousarray(block)
        ],
        dtype=np.uint64,
    )
    ids = base.copy()
    seen: dict[int, int] = {}
    for i, value in enumerate(base.tolist()):
        rank = seen.get(value, 0)
        seen[value] = rank + 1
        ids[i] = np.uint64((value + rank * 0x9E3779B97F4A7C15) % (1 << 64))
    return ids.view(np.int64)


def build_knn_cached(
    vectors: np.ndarray | HalfUnitRows,
    params: KnnParams | None,
    directory: Path | None,
    shared: SharedBasis | None = None,
) -> KnnGraph:
    """:func:`build_knn`, served from ``directory`` when the same vectors were indexed with the same params.

    When they were not, but a stored graph covers all but a small share (:data:`MAX_UPDATE_SHARE`) of the
    rows, that graph is updated (:func:`update_knn`) instead of rebuilt: the daily case of a few hundred
    images added to or removed from a large dataset.

    Args:
        vectors: ``float32[N, D]``, e.g. the context's L2-normalised bottlenecks.
        params: Graph parameters (part of the key).
        directory: Where graphs are kept (:mod:`datacheck.derived`); ``None``: always build.
        shared: The audit's principal-component basis of ``vectors`` (see :func:`build_knn`).
    """
    params = params or KnnParams()
    if directory is None or len(vectors) < 2:
        return build_knn(vectors, params, shared)
    k = min(params.k, len(vectors) - 1)
    vectors = as_rows(vectors)  # no copy for the context's vectors
    label = f"knn-v{GRAPH_VERSION}|{astuple(params)}"
    key = derived.content_key(label, vectors)
    stored = derived.load(directory, key)
    fields = {"indices", "similarities", "method", "search_recall", "ids", "label"}
    if stored is not None and fields <= stored.keys() and len(stored["indices"]) == len(vectors):
        logger.info("kNN graph: %d images, served from %s", len(vectors), directory)
        return _first(_stored_graph(stored), k)
    ids = row_ids(vectors)
    base = _updatable(directory, label, ids)
    depth = stored_depth(params, len(vectors))
    graph = (
        update_knn(vectors, ids, base, params)
        if base is not None
        else build_knn(vectors, params, shared, depth=depth)
    )
    derived.store(
        directory,
        key,
        {
            "indices": graph.indices,
            "similarities": graph.similarities,
            "method": np.array(graph.method),
            "search_recall": np.array(graph.search_recall),
            "ids": ids,
            "label": np.array(label),
        },
    )
    return _first(graph, k)


def _stored_graph(stored: dict[str, np.ndarray]) -> KnnGraph:
    recall = float(stored["search_recall"])
    return KnnGraph(stored["indices"], stored["similarities"], str(stored["method"]), recall)


@dataclass(frozen=True)
class StoredGraph:
    """A graph built earlier, with the identity of each of its rows (:func:`row_ids`)."""

    graph: KnnGraph
    ids: np.ndarray


def _updatable(directory: Path, label: str, ids: np.ndarray) -> StoredGraph | None:
    """The stored graph (same params) of the rows nearest to ``ids``, if it differs by a small share.

    The nearest stored state, not the latest: after a change is undone, or labels change right after an
    audit, that is the very graph of the same images (:func:`datacheck.derived.closest`).
    """
    stored = derived.closest_to_update(directory, label, ids, MAX_UPDATE_SHARE)
    if stored is None:
        return None
    old = stored["ids"]
    logger.info(
        "kNN graph: updating a stored graph (%d of %d rows changed)", derived.changed_rows(old, ids), len(ids)
    )
    return StoredGraph(_stored_graph(stored), old)


def _exact_neighbours(unit: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full-dimensional exact top-``k`` other rows for each of ``rows`` (blocked; no N×N matrix)."""
    block = max(1, _RESCORE_BYTES // max(1, len(unit) * 4))
    idx = np.empty((len(rows), k), np.int32)
    sim = np.empty((len(rows), k), np.float32)
    for start in range(0, len(rows), block):
        part = rows[start : start + block]
        scores = _against_all(unit, unit[part])
        scores[np.arange(len(part)), part] = -np.inf  # never its own neighbour
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        idx[start : start + len(part)] = np.take_along_axis(top, order, axis=1)
        sim[start : start + len(part)] = np.take_along_axis(top_sims, order, axis=1)
    return idx, sim


def _against_all(unit: np.ndarray | HalfUnitRows, queries: np.ndarray) -> np.ndarray:
    """``float32[Q, N]``: ``queries @ unit.T``, ``unit`` read block by block when it is not an array."""
    if isinstance(unit, np.ndarray):
        return queries @ unit.T
    out = np.empty((len(queries), len(unit)), np.float32)
    for start, block in unit.blocks():
        out[:, start : start + len(block)] = queries @ block.T
    return out


def update_knn(
    vectors: np.ndarray | HalfUnitRows, ids: np.ndarray, base: StoredGraph, params: KnnParams
) -> KnnGraph:
    """The kNN graph of ``vectors`` from a graph of mostly the same rows (some added, some removed).

    Returns :func:`stored_depth` neighbours per row (the context reads the first ``k``). Rows kept keep their
    lists, the removed neighbours taken out (the next ones move up: a removal cannot bring a nearer row)
    and the added rows merged in where nearer; kept rows left with fewer than ``k`` neighbours, and added
    rows, are searched exactly in the full space. A kept row's list is therefore the old one (approximate
    where the old one was) plus exact changes, which agrees with a rebuild on ≥ 99 % of neighbours
    (docs/benchmarks.md).
    """
    unit = unit_rows(vectors)
    n = len(unit)
    k = min(params.k, n - 1)
    depth = max(k, min(stored_depth(params, n), base.graph.k))
    old_to_new = derived.new_positions(base.ids, ids)
    new_rows = np.setdiff1d(np.arange(n), old_to_new[old_to_new >= 0])
    kept_old = np.flatnonzero(old_to_new >= 0)
    kept_new = old_to_new[kept_old]
    old_idx = base.graph.indices[kept_old]
    mapped = np.where(old_idx >= 0, old_to_new[np.maximum(old_idx, 0)], -1)
    # the neighbours still there first, in their order; the removed ones' places padded at the end
    order = np.argsort(mapped < 0, axis=1, kind="stable")
    mapped = np.take_along_axis(mapped, order, axis=1)
    old_sims = np.where(
        mapped >= 0, np.take_along_axis(base.graph.similarities[kept_old], order, axis=1), -np.inf
    )
    lost = (mapped >= 0).sum(axis=1) < k
    width = min(depth, mapped.shape[1])
    indices = np.full((n, depth), -1, np.int32)
    sims = np.full((n, depth), -np.inf, np.float32)
    keep_rows = kept_new[~lost]
    if len(keep_rows):
        indices[keep_rows, :width] = mapped[~lost][:, :width]
        sims[keep_rows, :width] = old_sims[~lost][:, :width]
    redo = np.concatenate([new_rows, kept_new[lost]]).astype(np.int64)
    if len(redo):
        indices[redo], sims[redo] = _exact_neighbours(unit, redo, depth)
    if len(new_rows) and len(keep_rows):
        _merge_new(unit, keep_rows, new_rows, indices, sims)
    logger.info(
        "kNN graph: %d images, %d added, %d removed, %d re-searched",
        n,
        len(new_rows),
        len(base.ids) - len(kept_old),
        len(redo),
    )
    return KnnGraph(indices, sims, base.graph.method, base.graph.search_recall)


def _merge_new(
    unit: np.ndarray, rows: np.ndarray, new_rows: np.ndarray, indices: np.ndarray, sims: np.ndarray
) -> None:
    """Let the added rows into the lists of ``rows`` where they are nearer than the current k-th."""
    k = indices.shape[1]
    block = max(1, _RESCORE_BYTES // max(1, len(new_rows) * 4))
    for start in range(0, len(rows), block):
        part = rows[start : start + block]
        scores = unit[part] @ unit[new_rows].T
        both_idx = np.concatenate(
            [indices[part], np.broadcast_to(new_rows.astype(np.int32), scores.shape)], axis=1
        )
        both_sim = np.concatenate([sims[part], scores.astype(np.float32)], axis=1)
        order = np.argsort(-both_sim, axis=1, kind="stable")[:, :k]
        indices[part] = np.take_along_axis(both_idx, order, axis=1)
        sims[part] = np.take_along_axis(both_sim, order, axis=1)
