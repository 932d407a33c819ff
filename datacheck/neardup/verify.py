"""Stage 2 of the duplicate search: verify image pairs on their 32×32 thumbnails.

Each image becomes two maps, grayscale and a band-pass (grayscale minus its Gaussian blur, which removes the
large-scale layout — sky above, sea below — that makes look-alikes correlate). Each map is compared
zero-mean/unit-variance (so brightness and contrast changes do not matter) and the score of a pair is the
mean of the two normalised cross-correlations (NCC) at the best alignment, searched over shifts, zoom
factors, small rotations and the horizontal flip. The search runs coarse-to-fine: every pair at 16×16 px
(shifts of ±4 px, three zooms, ±8°, flip; pairs near the bar also the other way round, since the search
shifts the first image and zooms/turns the second), then the pairs that come close at 32×32 px (the best
coarse shift and flip ±1 px; five zooms and four rotations up to ±10°). Resampling is one compiled pass
per block, the correlations batched dense products, blocks of pairs on every core.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import sparse

from datacheck.blocks import map_blocks
from datacheck.jit import compiled

#: ITU-R BT.601 luma weights.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
#: Standard deviation (thumbnail pixels) of the blur subtracted to form the band-pass map.
_BANDPASS_SIGMA = 2.0
#: Coarse search: shifts of ±2 px at 16×16 (±4 px of the thumbnail) and these ``(zoom, rotation°)``.
_COARSE_SHIFT = 2
_COARSE_VARIANTS = ((0.87, 0.0), (1.0, 0.0), (1.15, 0.0), (1.0, -8.0), (1.0, 8.0))
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
#: Pairs whose coarse score is at least ``refine bar - _REVERSE_BAND`` are also searched the other way round.
_REVERSE_BAND = 0.1
#: Thumbnails turned into maps at a time.
_MAP_CHUNK = 4096
#: Pairs sharing a query image per row of the coarse batch, and query rows per batch.
_SLOTS = 16
_ROW_BLOCK = 256
_PAIR_BLOCK = 1024
#: Most bytes of half-size maps and candidate crops the coarse search holds at once (bounds memory at scale).
_CROP_BYTES = 1 << 29
#: Most bytes of full-resolution maps held at once by the fine stage.
_FINE_MAP_BYTES = 1 << 29
#: Most threads verifying blocks of pairs at once.
_VERIFY_THREADS = 4


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


def _half_maps(thumbs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The maps of ``thumbs[rows]`` at half resolution: ``float32[len(rows), 2, S/2, S/2]``.

    2×2 averages; the band-pass blur is halved too.
    """

    def half(chunk: np.ndarray) -> np.ndarray:
        gray = _gray(chunk)
        small = (gray[:, ::2, ::2] + gray[:, 1::2, ::2] + gray[:, ::2, 1::2] + gray[:, 1::2, 1::2]) / 4
        return _maps(small, _BANDPASS_SIGMA / 2)

    return _maps_in_chunks(thumbs, rows, thumbs.shape[1] // 2, half)


def _full_maps(thumbs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """:func:`thumbnail_maps` of ``thumbs[rows]``: ``float32[len(rows), 2, S, S]``."""
    return _maps_in_chunks(thumbs, rows, thumbs.shape[1], thumbnail_maps)


def _maps_in_chunks(
    thumbs: np.ndarray, rows: np.ndarray, size: int, make: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """``make`` applied to ``thumbs[rows]`` a chunk at a time: ``float32[len(rows), 2, size, size]``.

    Neither those thumbnails nor a float copy of them all is ever held beside the result.
    """
    out = np.empty((len(rows), 2, size, size), np.float32)
    for start in range(0, len(rows), _MAP_CHUNK):
        out[start : start + _MAP_CHUNK] = make(thumbs[rows[start : start + _MAP_CHUNK]])
    return out


def _inverse_norms(norms: np.ndarray, pixels: int) -> np.ndarray:
    """``1 / norms``, or 0 for patches flatter than ``_FLAT_STD`` (whose correlation would be noise)."""
    flat = norms < _FLAT_STD * math.sqrt(pixels)
    return np.where(flat, np.float32(0), 1 / np.where(flat, np.float32(1), norms)).astype(np.float32)


@functools.cache
def _variant_taps(
    size: int, variants: tuple[tuple[float, float], ...], margin: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear resampling of a flattened ``size×size`` map into the central ``m×m`` crop of each variant.

    A variant ``(zoom, degrees)`` scales the image by ``zoom`` and rotates it by ``degrees`` about its centre.

    Returns:
        ``(taps int64[V·m·m, 4], weights float32[V·m·m, 4])``: the four source pixels of each output pixel
        (ascending) and their weights, variant-major.
    """
    m, centre = size - 2 * margin, (size - 1) / 2
    y, x = np.divmod(np.arange(m * m), m)
    y, x = y + margin - centre, x + margin - centre
    taps, weights = [], []
    for zoom, degrees in variants:
        cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
        src_y = np.clip(centre + (cos * y - sin * x) / zoom, 0, size - 1)
        src_x = np.clip(centre + (sin * y + cos * x) / zoom, 0, size - 1)
        y0 = np.minimum(np.floor(src_y).astype(np.intp), size - 2)
        x0 = np.minimum(np.floor(src_x).astype(np.intp), size - 2)
        fy, fx = src_y - y0, src_x - x0
        taps.append(
            np.stack([y0 * size + x0, y0 * size + x0 + 1, (y0 + 1) * size + x0, (y0 + 1) * size + x0 + 1], 1)
        )
        weights.append(np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], 1))
    return np.concatenate(taps).astype(np.int64), np.concatenate(weights).astype(np.float32)


def _transformed(maps: np.ndarray, variants: tuple[tuple[float, float], ...], margin: int) -> np.ndarray:
    """Central crops of each map under each variant, normalised per crop: ``float32[N, C, V, m·m]``.

    One compiled pass (:func:`_crop_kernel`): the crops come out in the layout the products read (a sparse
    matrix product gave them pixel-major, and reordering them cost twice the product).
    """
    taps, weights = _variant_taps(maps.shape[-1], variants, margin)
    flat = np.ascontiguousarray(maps, dtype=np.float32).reshape(*maps.shape[:2], -1)
    m = maps.shape[-1] - 2 * margin
    return _crop_kernel()(flat, taps, weights, len(variants), np.float32(_FLAT_STD * m))


@functools.cache
def _crop_kernel() -> Callable:
    """:func:`_resampled_crops` compiled by numba on first use (``nogil``: blocks run on every core)."""
    return compiled(_resampled_crops, nogil=True)


def _resampled_crops(
    flat: np.ndarray, taps: np.ndarray, weights: np.ndarray, n_variants: int, flat_norm: np.float32
) -> np.ndarray:
    """``out[i, c, v]``: map ``flat[i, c]`` resampled through variant ``v``'s taps, zero mean, unit norm.

    A crop whose centred norm is below ``flat_norm`` (:data:`_FLAT_STD` per pixel) becomes zero. Pixels are
    float32 sums of the four taps in order; mean and norm are summed in float64.
    """
    n, channels = flat.shape[0], flat.shape[1]
    pixels = taps.shape[0] // n_variants
    out = np.empty((n, channels, n_variants, pixels), np.float32)
    for i in range(n):
        for c in range(channels):
            source = flat[i, c]
            for v in range(n_variants):
                crop = out[i, c, v]
                total = 0.0
                for k in range(pixels):
                    row = v * pixels + k
                    value = weights[row, 0] * source[taps[row, 0]]
                    value += weights[row, 1] * source[taps[row, 1]]
                    value += weights[row, 2] * source[taps[row, 2]]
                    value += weights[row, 3] * source[taps[row, 3]]
                    crop[k] = value
                    total += value
                mean = np.float32(total / pixels)
                squares = 0.0
                for k in range(pixels):
                    crop[k] -= mean
                    squares += crop[k] * crop[k]
                norm = np.float32(np.sqrt(squares))
                scale = np.float32(0.0) if norm < flat_norm else np.float32(1.0) / norm
                for k in range(pixels):
                    crop[k] *= scale
    return out


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


def _candidate_crops(maps16: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The coarse variants of the maps ``maps16[rows]``, normalised: ``float32[C, U, Z, m·m]`` (in chunks)."""
    n, (c, size) = len(rows), maps16.shape[1:3]
    m = size - 2 * _COARSE_SHIFT
    crops = np.empty((c, n, len(_COARSE_VARIANTS), m * m), np.float32)

    def chunk(start: int) -> None:
        part = _transformed(maps16[rows[start : start + _MAP_CHUNK]], _COARSE_VARIANTS, _COARSE_SHIFT)
        crops[:, start : start + _MAP_CHUNK] = part.transpose(1, 0, 2, 3)

    map_blocks(chunk, range(0, n, _MAP_CHUNK), _VERIFY_THREADS)
    return crops


def _coarse(thumbs: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Coarse search for ``pairs`` of thumbnail rows: ``(score, flip, dy, dx)`` with shifts in 16-px units.

    The half-resolution maps of the images a part of the pair list involves (2 kB each) and its candidates'
    transformed crops (6 kB each) are held for that part only; the list is cut into parts that keep them
    within :data:`_CROP_BYTES` (~65,000 images).
    """
    size = thumbs.shape[1] // 2
    per_map = 2 * size * size * 4
    per_crop = 2 * len(_COARSE_VARIANTS) * (size - 2 * _COARSE_SHIFT) ** 2 * 4
    done = []
    for a, b in _parts(pairs, (per_map, per_map + per_crop), _CROP_BYTES):
        rows, local = np.unique(pairs[a:b], return_inverse=True)
        done.append(_coarse_part(_half_maps(thumbs, rows), local.reshape(-1, 2)))
    if len(done) == 1:
        return done[0]
    return tuple(np.concatenate(column) for column in zip(*done, strict=True))  # type: ignore[return-value]


#: Pairs a part boundary may fall between (the unit in which :func:`_parts` counts a part's images).
_PART_STEP = 4096


def _parts(pairs: np.ndarray, per_image: tuple[int, int], budget: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive parts of ``pairs``, each holding at most ~``budget`` bytes.

    A part holds ``per_image[0]`` bytes for each distinct first image of its pairs and ``per_image[1]`` for
    each distinct second image, counted as the part grows (:data:`_PART_STEP` pairs at a time; it may pass
    the budget by one step's images). Counted, not estimated: at a million images a part's candidates are
    nearly all distinct, and dividing the whole list's distinct images by the number of parts held three
    times the budget.
    """
    if not len(pairs):
        return []
    part_of = np.full((2, int(pairs.max()) + 1), -1, np.int64)  # the last part each image was counted in
    bounds, start, held, part = [], 0, 0, 0
    for step in range(0, len(pairs), _PART_STEP):
        block = pairs[step : step + _PART_STEP]
        new = [np.unique(block[:, side][part_of[side, block[:, side]] != part]) for side in (0, 1)]
        cost = len(new[0]) * per_image[0] + len(new[1]) * per_image[1]
        if held + cost > budget and step > start:  # this step opens the next part: all of it is new there
            bounds.append((start, step))
            start, held, part = step, 0, part + 1
            new = [np.unique(block[:, side]) for side in (0, 1)]
            cost = len(new[0]) * per_image[0] + len(new[1]) * per_image[1]
        for side in (0, 1):
            part_of[side, new[side]] = part
        held += cost
    return [*bounds, (start, len(pairs))]


def _coarse_part(
    maps16: np.ndarray, pairs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_coarse` for one part of the pair list."""
    score = np.full(len(pairs), -1.0, np.float32)
    best = np.zeros(len(pairs), np.int64)
    cand_ids, cand_local = np.unique(pairs[:, 1], return_inverse=True)
    crops = _candidate_crops(maps16, cand_ids)
    row_query, table = _slot_table(pairs[:, 0])

    def block(start: int) -> None:  # every pair sits in one slot: blocks write disjoint entries
        slots = table[start : start + _ROW_BLOCK]
        slots = slots[:, : int((slots >= 0).sum(axis=1).max())]  # rows are sorted fullest first
        valid = slots >= 0
        cands = np.where(valid, cand_local[np.maximum(slots, 0)], 0)
        sims = _coarse_block(maps16[row_query[start : start + _ROW_BLOCK]], crops, cands)
        arg = sims.argmax(axis=2)
        score[slots[valid]] = np.take_along_axis(sims, arg[..., None], axis=2)[..., 0][valid]
        best[slots[valid]] = arg[valid]

    map_blocks(block, range(0, len(row_query), _ROW_BLOCK), _VERIFY_THREADS)
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

    def block(start: int) -> None:
        sel = slice(start, start + _PAIR_BLOCK)
        out[sel] = _fine_block(maps32, pairs[sel], flip[sel], dy[sel], dx[sel])

    map_blocks(block, range(0, len(pairs), _PAIR_BLOCK), _VERIFY_THREADS)
    return np.clip(out, -1.0, 1.0)


def _fine_block(
    maps32: np.ndarray, p: np.ndarray, flip: np.ndarray, dy: np.ndarray, dx: np.ndarray
) -> np.ndarray:
    """:func:`_fine`'s best mean NCC for one block of pairs ``p``."""
    n_maps, size = maps32.shape[1], maps32.shape[-1]
    m, r = size - 2 * _FINE_SHIFT, _FINE_RADIUS
    side = m + 2 * r
    patches = sliding_window_view(_flipped(maps32[p[:, 0]], flip), (side, side), axis=(2, 3))
    last = 2 * (_FINE_SHIFT - r)  # the neighbourhood slides inwards at the edge of the search range
    y0 = np.clip(2 * dy + _FINE_SHIFT - r, 0, last)
    x0 = np.clip(2 * dx + _FINE_SHIFT - r, 0, last)
    patch = patches[np.arange(len(p)), :, y0, x0]  # P, C, side, side
    windows = sliding_window_view(patch, (m, m), axis=(2, 3)).transpose(1, 0, 2, 3, 4, 5)
    windows = np.ascontiguousarray(windows).reshape(n_maps, len(p), -1, m * m)  # C, P, W, m·m
    norms = _window_norms(patch, m).transpose(1, 0, 2, 3).reshape(n_maps, len(p), -1, 1)
    crops = _transformed(maps32[p[:, 1]], _FINE_VARIANTS, _FINE_SHIFT)  # P, C, V, m·m
    sims = np.zeros((len(p), windows.shape[2], len(_FINE_VARIANTS)), np.float32)
    for ch in range(n_maps):
        sims += np.matmul(windows[ch], crops[:, ch].transpose(0, 2, 1)) * _inverse_norms(norms[ch], m * m)
    return sims.reshape(len(p), -1).max(axis=1) / np.float32(n_maps)


def _coarse_both_ways(
    thumbs: np.ndarray, pairs: np.ndarray, refine_above: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_coarse`, plus the other orientation for the pairs that come near ``refine_above``.

    The search is asymmetric (the first image is shifted, the second zoomed and turned), so a crop can align
    one way round and not the other. Pairs within ``_REVERSE_BAND`` of the bar are also searched the other
    way round, and each pair keeps its better orientation: its score no longer depends on which image the
    candidate search happened to list first.

    Returns:
        ``(score, flip, dy, dx, oriented pairs)`` with every row in its kept orientation.
    """
    coarse, flip, dy, dx = _coarse(thumbs, pairs)
    near = np.flatnonzero(coarse >= refine_above - _REVERSE_BAND)
    if not len(near):
        return coarse, flip, dy, dx, pairs
    back = _coarse(thumbs, pairs[near, ::-1])
    better = near[back[0] > coarse[near]]
    keep = back[0] > coarse[near]
    for mine, theirs in zip((coarse, flip, dy, dx), back, strict=True):
        mine[better] = theirs[keep]
    pairs = pairs.copy()
    pairs[better] = pairs[better, ::-1]
    return coarse, flip, dy, dx, pairs


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
    order = _local_order(pairs)
    coarse, flip, dy, dx, oriented = _coarse_both_ways(thumbs, pairs[order], refine_above)
    refine = np.flatnonzero(coarse >= refine_above)
    if len(refine):
        fine = _fine_in_parts(thumbs, oriented[refine], flip[refine], dy[refine], dx[refine])
        score[order[refine]] = fine
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return Verification(coarse[back], score, flip[back])


#: From this many pairs they are verified in :func:`_local_order` (below, the order they come in).
_LOCAL_ORDER_MIN = 100_000


def _local_order(pairs: np.ndarray) -> np.ndarray:
    """An order of ``pairs`` in which pairs that share images come close together.

    The pairs are verified in parts whose images' maps are held at once (:func:`_parts`). In the order a kNN
    graph lists them (by first image), a part's second images lie anywhere in the dataset, so at a million
    images every image was mapped in three parts on average. Ordered by the first image's place in a
    reverse Cuthill–McKee ordering of the graph the pairs form (neighbours get nearby places), a part's
    images are mostly each other's partners. Pairs of one first image stay together (the coarse search
    batches them).
    """
    if len(pairs) < _LOCAL_ORDER_MIN:
        return np.arange(len(pairs))
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    nodes, local = np.unique(pairs, return_inverse=True)
    local = local.reshape(-1, 2)
    ones = np.ones(len(local), np.int8)
    graph = sparse.coo_matrix((ones, (local[:, 0], local[:, 1])), shape=(len(nodes), len(nodes))).tocsr()
    place = np.empty(len(nodes), np.int64)
    place[reverse_cuthill_mckee(graph + graph.T, symmetric_mode=True)] = np.arange(len(nodes))
    return np.lexsort((place[local[:, 1]], place[local[:, 0]]))


def _fine_in_parts(
    thumbs: np.ndarray, pairs: np.ndarray, flip: np.ndarray, dy: np.ndarray, dx: np.ndarray
) -> np.ndarray:
    """:func:`_fine` for ``pairs`` of thumbnail rows, the full-resolution maps held for a part at a time.

    The maps take 8 kB per image: the pair list is cut into parts whose maps stay within
    :data:`_FINE_MAP_BYTES` (~65,000 images; an image in several parts is mapped in each).
    """
    per_image = 2 * thumbs.shape[1] * thumbs.shape[2] * 4
    out = np.empty(len(pairs), np.float32)
    for a, b in _parts(pairs, (per_image, per_image), _FINE_MAP_BYTES):
        rows, local = np.unique(pairs[a:b], return_inverse=True)
        out[a:b] = _fine(_full_maps(thumbs, rows), local.reshape(-1, 2), flip[a:b], dy[a:b], dx[a:b])
    return out
