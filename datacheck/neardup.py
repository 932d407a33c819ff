"""Exact and near-duplicate pairs, shared by the ``duplicates`` and ``leakage`` checks.

Two stages:

1. **Retrieve** candidate pairs from the shared kNN graph (``ctx.knn``) with a loose cosine floor. The
   bottleneck cosine alone is a poor duplicate detector (look-alike photos score as high as real copies),
   but a copy's original is almost always among its nearest neighbours: a good candidate generator.
2. **Verify** each candidate on the 32×32 thumbnails with a normalised cross-correlation (NCC) that tolerates
   the edits copies typically go through: each image becomes two maps, grayscale and a band-pass (grayscale
   minus its Gaussian blur, which removes the large-scale layout — sky above, sea below — that makes
   look-alikes correlate). Each map is compared zero-mean/unit-variance (so brightness and contrast changes
   do not matter) and the score is the mean of the two correlations at the best alignment, searched over
   shifts, zoom factors, small rotations and the horizontal flip. The search runs coarse-to-fine: every
   candidate at 16×16 px (shifts of ±4 px, three zooms, flip), then the pairs that come close at 32×32 px
   (the best coarse shift and flip ±1 px; five zooms and four rotations up to ±10°). Resampling is a sparse
   matrix product, the correlations batched dense ones.

A pair is a near duplicate when ``cosine >= min_cosine`` and ``score >= min_score``; an exact duplicate when
the decoded pixels are identical (``ctx.stats["pixel_hash"]``; the file hash where that column is missing).
The defaults were measured on CIFAR-10 with planted copies (``bench/bench_near_duplicates.py``,
docs/benchmarks.md).

:func:`duplicate_pairs` computes the pairs once per context and parameter set: a small memo keyed on
``id(ctx)`` and the frozen :class:`NearDupParams` holds a weak reference to the context, so a result is
only reused for the very same (immutable) context and forgotten when the context is garbage-collected.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from scipy import sparse

if TYPE_CHECKING:
    from pathlib import Path

    from datacheck.context import AuditContext
    from datacheck.index import KnnGraph

logger = logging.getLogger(__name__)

#: ITU-R BT.601 luma weights.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
#: Standard deviation (thumbnail pixels) of the blur subtracted to form the band-pass map.
_BANDPASS_SIGMA = 2.0
#: Coarse search: shifts of ±2 px at 16×16 (±4 px of the thumbnail) and these ``(zoom, rotation°)``.
_COARSE_SHIFT = 2
_COARSE_VARIANTS = ((0.87, 0.0), (1.0, 0.0), (1.15, 0.0))
#: Fine search at 32×32: the coarse shift ±1 px, within ±4 px, and these ``(zoom, rotation°)``.
_FINE_SHIFT = 4
_FINE_RADIUS = 1
_FINE_VARIANTS = (
    (0.8, 0.0),
    (0.89, 0.0),
    (1.0, 0.0),
    (1.12, 0.0),
    (1.25, 0.0),
    (1.0, -10.0),
    (1.0, -5.0),
    (1.0, 5.0),
    (1.0, 10.0),
)
#: Patches whose standard deviation is below this (gray levels) count as flat and correlate 0 with anything.
_FLAT_STD = 0.5
#: Pairs whose coarse score is at least ``min_score - _COARSE_SLACK`` are re-scored at 32×32 px.
_COARSE_SLACK = 0.2
#: Thumbnails turned into maps at a time.
_MAP_CHUNK = 4096
#: Pairs sharing a query image per row of the coarse batch, and query rows per batch.
_SLOTS = 16
_ROW_BLOCK = 256
_PAIR_BLOCK = 1024
#: Contexts whose pairs are remembered at once (an audit holds one).
_MEMO_SIZE = 4


@dataclass(frozen=True)
class NearDupParams:
    """What counts as a duplicate pair; shared by the ``duplicates`` and ``leakage`` checks.

    Attributes:
        min_cosine: Candidate floor: pairs of the shared kNN graph with a bottleneck cosine below this are not
            examined. Deliberately loose; the verification score decides.
        min_score: Verification threshold: mean NCC of grayscale and band-pass thumbnails at the best
            shift, zoom, rotation and flip (1 = identical up to brightness and contrast).
        near: Look for near duplicates at all (``False``: exact copies only).
    """

    min_cosine: float = 0.5
    min_score: float = 0.85
    near: bool = True

    def __post_init__(self) -> None:
        if not -1.0 <= self.min_cosine <= 1.0:
            raise ValueError(f"min_cosine must be within [-1, 1], got {self.min_cosine}")
        if not 0.0 < self.min_score <= 1.0:
            raise ValueError(f"min_score must be within (0, 1], got {self.min_score}")

    def near_params(self) -> NearDupParams:
        """Just the duplicate definition (a subclass's own fields dropped), e.g. as a memo key."""
        names = [f.name for f in dataclasses.fields(NearDupParams)]
        return NearDupParams(**{name: getattr(self, name) for name in names})


# ------------------------------------------------------------------------------------------ image maps


def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """``n×n`` Gaussian blur along one axis with edge replication (rows sum to 1)."""
    radius = math.ceil(3 * sigma)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    matrix = np.zeros((n, n))
    for row in range(n):
        np.add.at(matrix[row], np.clip(row + offsets, 0, n - 1), weights)
    return matrix.astype(np.float32)


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``float32[N, S, S]``: one (batched) matrix product per axis."""
    matrix = _blur_matrix(images.shape[-1], sigma)
    return np.matmul(np.matmul(matrix, images), matrix.T)


def _maps(gray: np.ndarray, sigma: float) -> np.ndarray:
    """Grayscale and band-pass (grayscale minus its blur) maps: ``float32[N, 2, S, S]``."""
    return np.stack([gray, gray - _blur(gray, sigma)], axis=1)


def _gray(thumbs: np.ndarray) -> np.ndarray:
    """Luma of ``uint8[N, S, S, 3]`` thumbnails as ``float32[N, S, S]``."""
    return thumbs.astype(np.float32) @ _LUMA


def thumbnail_maps(thumbs: np.ndarray) -> np.ndarray:
    """Grayscale and band-pass maps of ``uint8[N, S, S, 3]`` thumbnails: ``float32[N, 2, S, S]``."""
    return _maps(_gray(thumbs), _BANDPASS_SIGMA)


def _half_maps(thumbs: np.ndarray) -> np.ndarray:
    """The maps at half resolution (2×2 averages; band-pass blur halved too): ``float32[N, 2, S/2, S/2]``.

    Computed in chunks so that no full-resolution float copy of a large dataset is ever held.
    """
    n, size = len(thumbs), thumbs.shape[1]
    out = np.empty((n, 2, size // 2, size // 2), np.float32)
    for start in range(0, n, _MAP_CHUNK):
        gray = _gray(thumbs[start : start + _MAP_CHUNK])
        half = (gray[:, ::2, ::2] + gray[:, 1::2, ::2] + gray[:, ::2, 1::2] + gray[:, 1::2, 1::2]) / 4
        out[start : start + _MAP_CHUNK] = _maps(half, _BANDPASS_SIGMA / 2)
    return out


def _normalise(patches: np.ndarray, axis: int = -1) -> np.ndarray:
    """In place: zero mean and unit norm along ``axis`` (flat patches, with no variance, become zero)."""
    patches -= patches.mean(axis=axis, keepdims=True)
    norms = np.sqrt(np.square(patches).sum(axis=axis, keepdims=True))
    patches *= _inverse_norms(norms, patches.shape[axis])
    return patches


def _inverse_norms(norms: np.ndarray, pixels: int) -> np.ndarray:
    """``1 / norms``, or 0 for patches flatter than ``_FLAT_STD`` (whose correlation would be noise)."""
    flat = norms < _FLAT_STD * math.sqrt(pixels)
    return np.where(flat, np.float32(0), 1 / np.where(flat, np.float32(1), norms)).astype(np.float32)


@functools.cache
def _variant_matrix(size: int, variants: tuple[tuple[float, float], ...], margin: int) -> sparse.csr_matrix:
    """Bilinear resampling of a flattened ``size×size`` map into the central ``m×m`` crop of each variant.

    A variant ``(zoom, degrees)`` scales the image by ``zoom`` and rotates it by ``degrees`` about its centre.

    Returns:
        A sparse ``(V·m·m) × (size·size)`` matrix, four taps per row, variant-major.
    """
    m, centre = size - 2 * margin, (size - 1) / 2
    y, x = np.divmod(np.arange(m * m), m)
    y, x = y + margin - centre, x + margin - centre
    blocks = []
    for zoom, degrees in variants:
        cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
        src_y = np.clip(centre + (cos * y - sin * x) / zoom, 0, size - 1)
        src_x = np.clip(centre + (sin * y + cos * x) / zoom, 0, size - 1)
        y0 = np.minimum(np.floor(src_y).astype(np.intp), size - 2)
        x0 = np.minimum(np.floor(src_x).astype(np.intp), size - 2)
        fy, fx = src_y - y0, src_x - x0
        cols = np.stack(
            [y0 * size + x0, y0 * size + x0 + 1, (y0 + 1) * size + x0, (y0 + 1) * size + x0 + 1], 1
        )
        weights = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], 1)
        rows = np.repeat(np.arange(m * m), 4)
        blocks.append(sparse.csr_matrix((weights.ravel(), (rows, cols.ravel())), shape=(m * m, size * size)))
    return sparse.vstack(blocks, format="csr", dtype=np.float32)


def _transformed(maps: np.ndarray, variants: tuple[tuple[float, float], ...], margin: int) -> np.ndarray:
    """Central crops of each map under each variant, normalised per map: ``float32[V, m·m, N, C]``.

    (The layout the sparse product yields; callers transpose once into the layout their product needs.)
    """
    n, c, size, _ = maps.shape
    flat = np.ascontiguousarray(maps.reshape(n * c, size * size).T)  # S·S, N·C
    crops = (_variant_matrix(size, variants, margin) @ flat).astype(np.float32, copy=False)  # V·m·m, N·C
    return _normalise(crops.reshape(len(variants), -1, n, c), axis=1)


def _flipped(maps: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Maps with the rows where ``flip`` is true mirrored left-right."""
    return np.where(flip[:, None, None, None], maps[..., ::-1], maps)


def _window_norms(maps: np.ndarray, m: int) -> np.ndarray:
    """Centred L2 norm of every ``m×m`` window: ``[..., S-m+1, S-m+1]`` from ``[..., S, S]`` (box sums)."""
    size = maps.shape[-1]
    offset = np.arange(size)[None, :] - np.arange(size - m + 1)[:, None]
    band = ((offset >= 0) & (offset < m)).astype(np.float64)
    x = maps.astype(np.float64)
    total = band @ x @ band.T
    squares = band @ (x * x) @ band.T
    return np.sqrt(np.maximum(squares - total * total / (m * m), 0.0)).astype(np.float32)


# ------------------------------------------------------------------------------------------ verification


@dataclass(frozen=True)
class Verification:
    """Verification scores of a list of pairs.

    Attributes:
        coarse: ``float32[P]`` best mean NCC at 16×16 px.
        score: ``float32[P]`` best mean NCC at 32×32 px; NaN where the coarse score was too low to refine.
        flip: ``bool[P]`` whether the best alignment mirrors one image.
    """

    coarse: np.ndarray
    score: np.ndarray
    flip: np.ndarray


def _slot_table(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lay pairs out as rows of at most ``_SLOTS`` pairs sharing a query image, fullest rows first.

    Returns:
        ``(row_query int[R], table int[R, _SLOTS])``: the query image of each row and the pair ids in it
        (``-1`` for empty slots, which come last in a row).
    """
    order = np.argsort(queries, kind="stable")
    sorted_q = queries[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_q)) + 1]
    rank = np.arange(len(sorted_q)) - np.repeat(starts, np.diff(np.r_[starts, len(sorted_q)]))
    row = np.cumsum(rank % _SLOTS == 0) - 1
    table = np.full((int(row[-1]) + 1, _SLOTS), -1, np.int64)
    table[row, rank % _SLOTS] = order
    by_fill = np.argsort(-(table >= 0).sum(axis=1), kind="stable")
    return sorted_q[rank % _SLOTS == 0][by_fill], table[by_fill]


@functools.cache
def _window_index(size: int, m: int) -> np.ndarray:
    """Flat indices into a map and its mirror, stacked (``2·S·S`` values), of every shifted ``m×m`` window.

    Returns:
        ``int[m·m, 2·W]``: column ``f·W + a·(S-m+1) + b`` is the window at offset ``(a, b)`` of the mirror
        ``f`` (0: as is, 1: flipped).
    """
    side = size - m + 1
    y, x = np.divmod(np.arange(m * m), m)
    a, b = np.divmod(np.arange(side * side), side)
    one = (y[:, None] + a[None, :]) * size + x[:, None] + b[None, :]
    return np.concatenate([one, one + size * size], axis=1)


def _coarse_block(maps16: np.ndarray, crops: np.ndarray, cands: np.ndarray) -> np.ndarray:
    """Scores of ``B`` query maps against ``K`` candidates each over every shift, flip and zoom.

    Args:
        maps16: ``float32[B, C, S, S]`` query maps.
        crops: ``float32[C, U, Z, m·m]`` normalised candidate crops.
        cands: ``int[B, K]`` rows of ``crops``.

    Returns:
        ``float32[B, K, Z·2·W]`` mean NCC over channels, windows flip-major.
    """
    b, c, size, _ = maps16.shape
    k, n_zooms = cands.shape[1], crops.shape[2]
    m = size - 2 * _COARSE_SHIFT
    both = np.stack([maps16, maps16[..., ::-1]], axis=2)  # B, C, 2, S, S
    inverse = _inverse_norms(_window_norms(both, m).reshape(b, c, 1, -1), m * m)  # B, C, 1, 2W
    flat = both.reshape(b, c, -1)
    sims = np.zeros((b, k * n_zooms, inverse.shape[-1]), np.float32)  # B, K·Z, 2W
    for ch in range(c):
        windows = np.take(flat[:, ch], _window_index(size, m), axis=-1)  # B, m·m, 2W
        cropped = crops[ch][cands].reshape(b, k * n_zooms, m * m)
        sims += np.matmul(cropped, windows) * inverse[:, ch]
    sims /= np.float32(c)
    return sims.reshape(b, k, -1)


def _coarse(maps16: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Coarse search for every pair: ``(score, flip, dy, dx)`` with shifts in 16-px units."""
    score = np.full(len(pairs), -1.0, np.float32)
    best = np.zeros(len(pairs), np.int64)
    cand_ids, cand_local = np.unique(pairs[:, 1], return_inverse=True)
    crops = np.ascontiguousarray(
        _transformed(maps16[cand_ids], _COARSE_VARIANTS, _COARSE_SHIFT).transpose(3, 2, 0, 1)
    )
    row_query, table = _slot_table(pairs[:, 0])
    for start in range(0, len(row_query), _ROW_BLOCK):
        slots = table[start : start + _ROW_BLOCK]
        slots = slots[:, : int((slots >= 0).sum(axis=1).max())]  # rows are sorted fullest first
        valid = slots >= 0
        cands = np.where(valid, cand_local[np.maximum(slots, 0)], 0)
        sims = _coarse_block(maps16[row_query[start : start + _ROW_BLOCK]], crops, cands)
        arg = sims.argmax(axis=2)
        score[slots[valid]] = np.take_along_axis(sims, arg[..., None], axis=2)[..., 0][valid]
        best[slots[valid]] = arg[valid]
    side = 2 * _COARSE_SHIFT + 1
    flip_shift = best % (2 * side * side)
    shift = flip_shift % (side * side)
    flip = flip_shift >= side * side
    return np.clip(score, -1.0, 1.0), flip, shift // side - _COARSE_SHIFT, shift % side - _COARSE_SHIFT


def _fine(
    maps32: np.ndarray, pairs: np.ndarray, flip: np.ndarray, dy: np.ndarray, dx: np.ndarray
) -> np.ndarray:
    """Fine score at 32×32 px around the coarse alignment (shifts given in 16-px units).

    The query's windows are taken at the coarse shift (doubled) ±``_FINE_RADIUS`` px; every candidate is
    zoomed and rotated by each of ``_FINE_VARIANTS``.
    """
    out = np.empty(len(pairs), np.float32)
    n_maps, size = maps32.shape[1], maps32.shape[-1]
    m, r = size - 2 * _FINE_SHIFT, _FINE_RADIUS
    side = m + 2 * r
    for start in range(0, len(pairs), _PAIR_BLOCK):
        sel = slice(start, start + _PAIR_BLOCK)
        p = pairs[sel]
        patches = sliding_window_view(_flipped(maps32[p[:, 0]], flip[sel]), (side, side), axis=(2, 3))
        last = 2 * (_FINE_SHIFT - r)  # the neighbourhood slides inwards at the edge of the search range
        y0 = np.clip(2 * dy[sel] + _FINE_SHIFT - r, 0, last)
        x0 = np.clip(2 * dx[sel] + _FINE_SHIFT - r, 0, last)
        patch = patches[np.arange(len(p)), :, y0, x0]  # P, C, side, side
        windows = sliding_window_view(patch, (m, m), axis=(2, 3)).transpose(1, 0, 2, 3, 4, 5)
        windows = np.ascontiguousarray(windows).reshape(n_maps, len(p), -1, m * m)  # C, P, W, m·m
        norms = _window_norms(patch, m).transpose(1, 0, 2, 3).reshape(n_maps, len(p), -1, 1)
        crops = _transformed(maps32[p[:, 1]], _FINE_VARIANTS, _FINE_SHIFT)  # V, m·m, P, C
        crops = np.ascontiguousarray(crops.transpose(3, 2, 1, 0))  # C, P, m·m, V
        sims = np.zeros((len(p), windows.shape[2], len(_FINE_VARIANTS)), np.float32)
        for ch in range(n_maps):
            sims += np.matmul(windows[ch], crops[ch]) * _inverse_norms(norms[ch], m * m)
        out[sel] = sims.reshape(len(p), -1).max(axis=1) / np.float32(n_maps)
    return np.clip(out, -1.0, 1.0)


def verify_pairs(thumbs: np.ndarray, pairs: np.ndarray, refine_above: float) -> Verification:
    """Alignment- and colour-tolerant similarity of image pairs from their thumbnails.

    Args:
        thumbs: ``uint8[N, 32, 32, 3]`` thumbnails.
        pairs: ``int[P, 2]`` row numbers. Pairs are batched by their first image, so listing each image's
            candidates under it (as a kNN graph does) is fastest.
        refine_above: Pairs whose coarse score reaches this are re-scored at full resolution; the others get
            a NaN ``score``.

    Returns:
        Coarse and fine scores (mean NCC of grayscale and band-pass maps, in [-1, 1]) and the flip flag.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    score = np.full(len(pairs), np.nan, np.float32)
    if not len(pairs):
        return Verification(np.zeros(0, np.float32), score, np.zeros(0, bool))
    rows, local = np.unique(pairs, return_inverse=True)  # only the images that take part
    local = local.reshape(-1, 2)
    coarse, flip, dy, dx = _coarse(_half_maps(thumbs[rows]), local)
    refine = np.flatnonzero(coarse >= refine_above)
    if len(refine):
        rows, fine_local = np.unique(pairs[refine], return_inverse=True)
        maps32 = thumbnail_maps(thumbs[rows])
        score[refine] = _fine(maps32, fine_local.reshape(-1, 2), flip[refine], dy[refine], dx[refine])
    return Verification(coarse, score, flip)


# ------------------------------------------------------------------------------------------ candidates


def candidate_pairs(knn: KnnGraph, min_cosine: float) -> tuple[np.ndarray, np.ndarray]:
    """Unordered pairs of the kNN graph with cosine ≥ ``min_cosine``, each once.

    A pair is kept in the orientation ``(row, neighbour)`` of the first row that lists it, so every image
    heads at most ``k`` pairs (what :func:`verify_pairs` batches best).

    Returns:
        ``(pairs int64[P, 2], cosine float32[P])``.
    """
    rows, cols = np.nonzero((knn.similarities >= min_cosine) & (knn.indices >= 0))
    i = rows.astype(np.int64)
    j = knn.indices[rows, cols].astype(np.int64)
    keep = i != j
    i, j, cos = i[keep], j[keep], knn.similarities[rows[keep], cols[keep]]
    n = int(knn.indices.shape[0])
    _, first = np.unique(np.minimum(i, j) * n + np.maximum(i, j), return_index=True)
    first.sort()
    return np.stack([i[first], j[first]], axis=1), cos[first].astype(np.float32)


def exact_keys(ctx: AuditContext) -> np.ndarray:
    """Per row, the key that identical images share: the decoded-pixel hash, else the file hash."""
    files = np.array([f"file:{sha}" for sha in ctx.file_sha256], dtype=object)
    if "pixel_hash" not in ctx.stats.columns or len(ctx.stats) != ctx.n:
        return files
    pixels = ctx.stats["pixel_hash"].to_numpy(dtype=object)
    missing = pd.isna(pixels) | (pixels == "")
    return np.where(missing, files, np.array([f"pixels:{h}" for h in pixels], dtype=object))


def _groups_of(labels: np.ndarray) -> list[np.ndarray]:
    """Row numbers of every label that occurs more than once, ascending."""
    order = np.argsort(labels, kind="stable")
    runs = np.split(order, np.flatnonzero(np.diff(labels[order])) + 1)
    return [run for run in runs if len(run) > 1]


def _exact_pairs(keys: np.ndarray, splits: Sequence[str | None]) -> np.ndarray:
    """Pairs linking identical images: each member to the first member of its group within each split.

    That connects every group (first member of the member's own split is linked to the group's first
    member) while listing each member's copies in other splits once per split, in O(group size × splits).
    """
    out: list[tuple[int, int]] = []
    for members in _groups_of(np.unique(keys, return_inverse=True)[1]):
        heads: dict[str | None, int] = {}
        for m in members:
            heads.setdefault(splits[m], int(m))
        anchors = sorted(set(heads.values()))
        for m in members:
            for a in anchors:
                if a != m and (splits[a] != splits[m] or a == heads[splits[m]]):
                    out.append((min(a, int(m)), max(a, int(m))))
        out += [(anchors[0], a) for a in anchors[1:]]
    return np.unique(np.array(out, dtype=np.int64).reshape(-1, 2), axis=0)


# ------------------------------------------------------------------------------------------ the pairs

_MEMO: dict[tuple[int, NearDupParams], tuple[weakref.ref, pd.DataFrame]] = {}

#: Columns of :func:`duplicate_pairs`.
PAIR_COLUMNS = ("i", "j", "cosine", "score", "kind")


def _near_pairs(ctx: AuditContext, params: NearDupParams, keys: np.ndarray) -> pd.DataFrame:
    pairs, cos = candidate_pairs(ctx.knn, params.min_cosine)
    different = keys[pairs[:, 0]] != keys[pairs[:, 1]] if len(pairs) else np.zeros(0, bool)
    pairs, cos = pairs[different], cos[different]
    score = pair_scores(ctx, pairs, refine_above=params.min_score - _COARSE_SLACK)
    hit = np.nan_to_num(score, nan=-1.0) >= params.min_score
    logger.info(
        "near duplicates: %d candidate pairs (cosine >= %.2f), %d refined, %d verified (score >= %.2f)",
        len(pairs),
        params.min_cosine,
        int(np.isfinite(score).sum()),
        int(hit.sum()),
        params.min_score,
    )
    p = np.sort(pairs[hit], axis=1)
    df = pd.DataFrame({"i": p[:, 0], "j": p[:, 1], "cosine": cos[hit], "score": score[hit], "kind": "near"})
    df.attrs.update(candidates=len(pairs), refined=int(np.isfinite(score).sum()))
    return df


#: Bump when :func:`verify_pairs` changes its scores: stored pair scores of older versions are ignored.
PAIR_SCORES_VERSION = 1

#: Most pair scores kept in the cache (the current audit's first, then earlier ones); ~20 bytes each.
PAIR_STORE_CAP = 2_000_000


def pair_scores(ctx: AuditContext, pairs: np.ndarray, refine_above: float) -> np.ndarray:
    """:func:`verify_pairs` scores of ``pairs``, reusing those of image pairs scored by an earlier audit.

    A score depends only on the two images' contents (their thumbnails) and ``refine_above``, so it is
    stored under the pair's content hashes (64-bit prefixes of each SHA-256) in ``ctx.derived_dir``: an
    unchanged re-audit verifies nothing, and an audit after images were added, changed or relabelled
    verifies only the pairs it has not seen. Without a ``derived_dir`` every pair is verified.
    """
    from datacheck import derived
    from datacheck.images import STATS_VERSION

    store = ctx.derived_dir / "pairs" if ctx.derived_dir is not None else None
    key = derived.content_key(f"pair-scores-v{PAIR_SCORES_VERSION}|stats-v{STATS_VERSION}|{refine_above!r}")
    a, b = ctx.content_ids[pairs[:, 0]], ctx.content_ids[pairs[:, 1]]
    score = np.full(len(pairs), np.nan, np.float32)
    known = np.zeros(len(pairs), bool)
    stored = derived.load(store, key) if len(pairs) else None
    if stored is not None:
        lookup = dict(zip(_keys(stored["a"], stored["b"]), stored["score"].tolist(), strict=True))
        for row, pair in enumerate(_keys(a, b)):
            value = lookup.get(pair)
            if value is not None:
                score[row], known[row] = value, True
    todo = np.flatnonzero(~known)
    logger.info(
        "pair verification: %d of %d pairs scored by an earlier audit", len(pairs) - len(todo), len(pairs)
    )
    if len(todo):
        score[todo] = verify_pairs(ctx.thumbs, pairs[todo], refine_above).score
        _store_scores(store, key, (a, b, score), stored)
    return score


def _keys(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    return list(zip(a.tolist(), b.tolist(), strict=True))


def _store_scores(
    store: Path | None,
    key: str,
    current: tuple[np.ndarray, np.ndarray, np.ndarray],
    earlier: dict[str, np.ndarray] | None,
) -> None:
    from datacheck import derived

    if store is None:
        return
    a, b, score = current
    if earlier is not None:
        seen = set(_keys(a, b))
        older = np.array([pair not in seen for pair in _keys(earlier["a"], earlier["b"])], bool)
        a = np.concatenate([a, earlier["a"][older]])
        b = np.concatenate([b, earlier["b"][older]])
        score = np.concatenate([score, earlier["score"][older]])
    derived.store(
        store, key, {"a": a[:PAIR_STORE_CAP], "b": b[:PAIR_STORE_CAP], "score": score[:PAIR_STORE_CAP]}
    )


def _compute(ctx: AuditContext, params: NearDupParams) -> pd.DataFrame:
    start = time.perf_counter()
    keys = exact_keys(ctx)
    exact = _exact_pairs(keys, ctx.splits)
    cos = np.einsum("pd,pd->p", ctx.vectors[exact[:, 0]], ctx.vectors[exact[:, 1]]) if len(exact) else []
    frames = [
        pd.DataFrame(
            {
                "i": exact[:, 0],
                "j": exact[:, 1],
                "cosine": np.asarray(cos, np.float32),
                "score": np.float32(1.0),
                "kind": "exact",
            }
        )
    ]
    if params.near and ctx.n > 1:
        frames.append(_near_pairs(ctx, params, keys))
    attrs = {"candidates": 0, "refined": 0} | (frames[-1].attrs if len(frames) > 1 else {})
    df = pd.concat(frames, ignore_index=True).sort_values(["i", "j"], ignore_index=True)
    df = df.astype({"i": np.int64, "j": np.int64, "cosine": np.float32, "score": np.float32})
    df.attrs.update(attrs)
    logger.info(
        "duplicate pairs: %d exact, %d near in %.2f s",
        int((df["kind"] == "exact").sum()),
        int((df["kind"] == "near").sum()),
        time.perf_counter() - start,
    )
    return df


def duplicate_pairs(ctx: AuditContext, params: NearDupParams) -> pd.DataFrame:
    """Every duplicate pair of the context, computed once per context and duplicate definition.

    Args:
        ctx: The audit context.
        params: A :class:`NearDupParams` or a subclass (only the base fields matter).

    Returns:
        A frame with columns ``i < j`` (row numbers), ``cosine`` (bottleneck), ``score`` (verification; 1 for
        exact copies) and ``kind`` (``"exact"`` or ``"near"``), sorted by ``(i, j)``. Treat it as read-only:
        the same frame is handed to every caller.
    """
    key = (id(ctx), params.near_params())
    hit = _MEMO.get(key)
    if hit is not None and hit[0]() is ctx:
        return hit[1]
    df = _compute(ctx, key[1])
    while len(_MEMO) >= _MEMO_SIZE:
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[key] = (weakref.ref(ctx), df)
    weakref.finalize(ctx, _MEMO.pop, key, None)
    return df


def duplicate_groups(n: int, pairs: pd.DataFrame, keys: np.ndarray | None = None) -> list[np.ndarray]:
    """Groups of duplicates: row numbers (ascending) of every group of at least two images.

    Identical images (same ``keys`` value) always share a group. Beyond that the groups are *stars*, not
    connected components: images — each set of identical copies counting as one — are visited by decreasing
    number of duplicate partners, and an unassigned one leads a group of itself and its unassigned partners;
    an image left alone this way joins the group of its best-scoring partner. Every member is thus a verified
    duplicate of the leader or of a member, so a chain of look-alikes (A ≈ B ≈ C ≈ …, common for ships on a
    flat horizon) cannot snowball into one giant group.

    Args:
        n: Number of rows.
        pairs: Frame with ``i``, ``j`` and ``score`` columns (see :func:`duplicate_pairs`).
        keys: Per-row key of identical images (:func:`exact_keys`), or ``None``.
    """
    node = np.unique(keys, return_inverse=True)[1] if keys is not None else np.arange(n)
    a, b = node[pairs["i"].to_numpy()], node[pairs["j"].to_numpy()]
    distinct = a != b
    a, b, score = a[distinct], b[distinct], pairs["score"].to_numpy()[distinct]
    n_nodes = int(node.max()) + 1 if n else 0
    graph = sparse.coo_matrix((np.r_[score, score], (np.r_[a, b], np.r_[b, a])), shape=(n_nodes, n_nodes))
    graph = graph.tocsr()
    graph.sum_duplicates()
    group = _star_groups(graph)
    # identical copies of an image without near duplicates form a group of their own (singletons drop out)
    labels = np.where(group[node] >= 0, group[node], group.max(initial=-1) + 1 + node)
    return _groups_of(labels)


def _star_groups(graph: sparse.csr_matrix) -> np.ndarray:
    """Greedy star clustering of a symmetric weighted graph: group id per node, -1 for isolated nodes."""
    degree = np.diff(graph.indptr)
    group = np.full(graph.shape[0], -1, np.int64)
    leaders = 0
    for leader in np.argsort(-degree, kind="stable"):
        if degree[leader] == 0:
            break
        if group[leader] >= 0:
            continue
        partners = graph.indices[graph.indptr[leader] : graph.indptr[leader + 1]]
        free = partners[group[partners] < 0]
        if len(free):
            group[leader] = group[free] = leaders
            leaders += 1
    for node in np.flatnonzero((group < 0) & (degree > 0)):  # every partner already taken
        start, stop = graph.indptr[node], graph.indptr[node + 1]
        group[node] = group[graph.indices[start + int(np.argmax(graph.data[start:stop]))]]
    return group
