"""The duplicate pairs: exact copies plus verified near duplicates, from arrays or once per audit context.

:func:`find_pairs` works on plain arrays (vectors, thumbnails, content keys, splits); :func:`duplicate_pairs`
calls it for an :class:`~datacheck.context.AuditContext` and keeps the result with the context
(:meth:`AuditContext.shared`), so ``duplicates`` and ``leakage`` read one set of pairs under one definition.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from datacheck.neardup.candidates import (
    LAYOUT_MIN_AGREEMENT,
    _exact_pairs,
    candidate_pairs,
    exact_keys,
    layout_agreement,
    layouts,
    stored_layout_candidates,
)
from datacheck.neardup.store import pair_scores
from datacheck.neardup.verify import _COARSE_SLACK
from datacheck.params import Params, param

if TYPE_CHECKING:
    from pathlib import Path

    from datacheck.context import AuditContext
    from datacheck.index import KnnGraph

# The records keep the name of the module they were split from (logging configuration, tests).
logger = logging.getLogger("datacheck.neardup")


@dataclass(frozen=True)
class NearDupParams(Params):
    """What counts as a duplicate pair; shared by the ``duplicates`` and ``leakage`` checks.

    Attributes:
        min_cosine: Candidate floor: pairs of the shared kNN graph with a bottleneck cosine below this are not
            examined. Deliberately loose; the verification score decides.
        min_score: Verification threshold: mean NCC of grayscale and band-pass thumbnails at the best
            shift, zoom, rotation and flip (1 = identical up to brightness and contrast).
        nearest_score: A pair scoring at least this but below ``min_score`` still counts when the two
            images are each other's nearest neighbours in the dataset (exact copies aside): a copy that stands
            out from everything else around it, as re-encoded, re-cropped or re-coloured copies of one photo
            do, where look-alikes (ships on a flat horizon) come in crowds. ``min_score`` or more: off.
        nearest_standout: ...and when the pair's bottleneck cosine stands at least this many standard
            deviations above the cosines of each image's other kNN neighbours (its own neighbourhood, so the
            bar follows the dataset): a copy is far closer to its original than to anything else, a look-alike
            only a little closer than to the rest of its crowd. 0: any nearest-neighbour pair.
        same_shot_score: Pairs scoring at least this are judged ``same_shot`` (the same photograph); the other
            near duplicates ``look_alike`` (very similar, possibly another shot). Exact copies are ``exact``.
        layout_neighbours: Rows per image the layout index proposes beside the kNN graph
            (:func:`~datacheck.neardup.candidates.layout_candidates`: copies whose embedding moved, such as
            heavy JPEG); verified at ``min_score``. 0: the kNN graph only.
        near: Look for near duplicates at all (``False``: exact copies only).
    """

    min_cosine: float = param(0.5, ge=-1, le=1)
    min_score: float = param(0.85, gt=0, le=1)
    nearest_score: float = param(0.75, gt=0, le=1)
    nearest_standout: float = param(3.0, ge=0)
    same_shot_score: float = param(0.9, gt=0, le=1)
    layout_neighbours: int = param(5, ge=0)
    near: bool = True

    def near_params(self) -> NearDupParams:
        """Just the duplicate definition (a subclass's own fields dropped), e.g. as a memo key."""
        names = [f.name for f in dataclasses.fields(NearDupParams)]
        return NearDupParams(**{name: getattr(self, name) for name in names})


#: Columns of :func:`duplicate_pairs` and :func:`find_pairs`.
PAIR_COLUMNS = ("i", "j", "cosine", "score", "kind", "judgement")
#: The judgement of a pair, from the surest: identical content, the same photograph, a very similar image.
JUDGEMENTS = ("exact", "same_shot", "look_alike")


def find_pairs(
    vectors: np.ndarray,
    thumbs: np.ndarray,
    keys: np.ndarray,
    splits: Sequence[str | None],
    params: NearDupParams,
    *,
    knn: KnnGraph | None = None,
    content_ids: np.ndarray | None = None,
    derived_dir: Path | None = None,
) -> pd.DataFrame:
    """Every duplicate pair among rows given as arrays: what :func:`duplicate_pairs` finds in a context.

    Args:
        vectors: ``float32[N, D]`` L2-normalised bottlenecks.
        thumbs: ``uint8[N, 32, 32, 3]`` thumbnails (near-duplicate verification).
        keys: Per-row key that identical images share (:func:`~datacheck.neardup.exact_keys_of`).
        splits: Split name per row (``None`` without splits); exact copies are linked within and across
            splits.
        params: What counts as a duplicate (only the :class:`NearDupParams` fields matter).
        knn: The cosine kNN graph of ``vectors``; built with the default ``KnnParams`` when ``None``.
        content_ids: ``uint64[N]`` content identity per row (the first 64 bits of its SHA-256): needed to
            store verification scores in ``derived_dir``.
        derived_dir: The cache's folder of derived arrays, where pair scores are kept by content
            (:func:`~datacheck.neardup.pair_scores`); ``None``: verify every candidate.

    Returns:
        A frame with columns ``i < j`` (row numbers), ``cosine`` (bottleneck), ``score`` (verification; 1 for
        exact copies) and ``kind`` (``"exact"`` or ``"near"``), sorted by ``(i, j)``; ``attrs`` holds the
        number of near-duplicate ``candidates`` and of ``refined`` ones.

    Raises:
        ValueError: If ``derived_dir`` is given without ``content_ids``.
    """
    if derived_dir is not None and content_ids is None:
        raise ValueError("content_ids are needed to keep pair scores in derived_dir")
    start = time.perf_counter()
    exact = _exact_pairs(keys, splits)
    cos = np.einsum("pd,pd->p", vectors[exact[:, 0]], vectors[exact[:, 1]]) if len(exact) else []
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
    if params.near and len(vectors) > 1:
        if knn is None:
            from datacheck.index import build_knn

            knn = build_knn(vectors)
        scores = functools.partial(pair_scores, thumbs, content_ids=content_ids, derived_dir=derived_dir)
        layout_store = derived_dir / "layout" if derived_dir is not None else None
        frames.append(_near_pairs(knn, keys, params, scores, vectors, layouts(thumbs), layout_store))
    attrs = {"candidates": 0, "refined": 0} | (frames[-1].attrs if len(frames) > 1 else {})
    df = pd.concat(frames, ignore_index=True).sort_values(["i", "j"], ignore_index=True)
    df = df.astype({"i": np.int64, "j": np.int64, "cosine": np.float32, "score": np.float32})
    same_shot = df["score"].to_numpy() >= params.same_shot_score
    df["judgement"] = np.where(df["kind"] == "exact", "exact", np.where(same_shot, "same_shot", "look_alike"))
    df.attrs.update(attrs)
    logger.info(
        "duplicate pairs: %d exact, %d near in %.2f s",
        int((df["kind"] == "exact").sum()),
        int((df["kind"] == "near").sum()),
        time.perf_counter() - start,
    )
    return df


def _near_pairs(
    knn: KnnGraph,
    keys: np.ndarray,
    params: NearDupParams,
    scores: Callable[[np.ndarray, float], np.ndarray],
    vectors: np.ndarray | None = None,
    grid: np.ndarray | None = None,
    layout_store: Path | None = None,
) -> pd.DataFrame:
    """Verified near duplicates among the candidates that are not exact copies of each other.

    Candidates: the kNN graph's pairs and, with the thumbnails' layouts (``grid``) and the ``vectors``, the
    layout index's (kNN pairs whose layouts disagree are dropped first; the layout index's pairs are kept in
    ``layout_store`` by content). A pair counts when its score reaches
    ``min_score``, or ``nearest_score`` when the two images are each other's nearest neighbours
    (:func:`_nearest_other`).
    """
    pairs, cos = candidate_pairs(knn, params.min_cosine)
    if grid is not None and vectors is not None:
        if len(pairs):  # pairs whose coarse layouts disagree are never duplicates
            agree = layout_agreement(grid, pairs) >= LAYOUT_MIN_AGREEMENT
            pairs, cos = pairs[agree], cos[agree]
        extra = stored_layout_candidates(grid, params.layout_neighbours, keys, layout_store)
        if len(extra):
            pairs, cos = _with_layout_pairs(pairs, cos, extra, vectors)
    different = keys[pairs[:, 0]] != keys[pairs[:, 1]] if len(pairs) else np.zeros(0, bool)
    pairs, cos = pairs[different], cos[different]
    nearest = _nearest_other(knn, keys)
    nearest_pair = np.zeros(len(pairs), bool)
    if len(pairs):
        nearest_pair = (nearest[pairs[:, 0]] == pairs[:, 1]) & (nearest[pairs[:, 1]] == pairs[:, 0])
        rows = np.flatnonzero(nearest_pair)
        nearest_pair[rows] = _standout(knn, keys, pairs[rows], cos[rows]) >= params.nearest_standout
    score = np.full(len(pairs), -1.0, np.float32)
    # Only nearest-neighbour pairs need refining down to nearest_score: the cascade stays as cheap as before.
    floor = min(params.min_score, params.nearest_score)
    for subset, bar in ((~nearest_pair, params.min_score), (nearest_pair, floor)):
        if subset.any():
            score[subset] = np.nan_to_num(scores(pairs[subset], bar - _COARSE_SLACK), nan=-1.0)
    hit = (score >= params.min_score) | ((score >= params.nearest_score) & nearest_pair)
    logger.info(
        "near duplicates: %d candidate pairs (cosine >= %.2f), %d refined, %d verified (score >= %.2f, or "
        ">= %.2f between nearest neighbours)",
        len(pairs),
        params.min_cosine,
        int((score > -1.0).sum()),
        int(hit.sum()),
        params.min_score,
        params.nearest_score,
    )
    p = np.sort(pairs[hit], axis=1)
    df = pd.DataFrame({"i": p[:, 0], "j": p[:, 1], "cosine": cos[hit], "score": score[hit], "kind": "near"})
    df.attrs.update(candidates=len(pairs), refined=int((score > -1.0).sum()))
    return df


def _with_layout_pairs(
    pairs: np.ndarray, cos: np.ndarray, extra: np.ndarray, vectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The kNN candidates plus the layout index's pairs they lack (no cosine floor: the layout is the cue)."""
    n = len(vectors)
    seen = np.minimum(pairs[:, 0], pairs[:, 1]) * n + np.maximum(pairs[:, 0], pairs[:, 1])
    new = extra[~np.isin(extra[:, 0] * n + extra[:, 1], seen)]
    new_cos = np.einsum("pd,pd->p", vectors[new[:, 0]], vectors[new[:, 1]]).astype(np.float32)
    return np.concatenate([pairs, new]), np.concatenate([cos, new_cos])


#: Fewest other neighbours whose spread says how far a pair stands out; with fewer it is taken to stand out.
_MIN_CROWD = 3


def _standout(knn: KnnGraph, keys: np.ndarray, pairs: np.ndarray, cos: np.ndarray) -> np.ndarray:
    """Per pair, how many standard deviations its cosine lies above either image's other neighbours, the less.

    "Other" leaves out the partner and exact copies of either image (they would repeat the pair's cosine).
    """
    out = np.full(len(pairs), np.inf)
    for me, partner in ((pairs[:, 0], pairs[:, 1]), (pairs[:, 1], pairs[:, 0])):
        neighbours = knn.indices[me].astype(np.int64)
        sims = knn.similarities[me].astype(np.float64)
        key_of = keys[np.maximum(neighbours, 0)]
        other = (neighbours >= 0) & (key_of != keys[partner][:, None]) & (key_of != keys[me][:, None])
        count = other.sum(axis=1)
        mean = np.where(other, sims, 0).sum(axis=1) / np.maximum(count, 1)
        spread = np.sqrt(np.where(other, (sims - mean[:, None]) ** 2, 0).sum(axis=1) / np.maximum(count, 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (cos - mean) / spread
        z = np.where(count < _MIN_CROWD, np.inf, np.where(np.isnan(z), 0.0, z))  # 0/0: level with the crowd
        out = np.minimum(out, z)
    return out


def _nearest_other(knn: KnnGraph, keys: np.ndarray) -> np.ndarray:
    """Per row, its nearest neighbour that is not an exact copy of it (``-1``: none listed)."""
    n = len(knn.indices)
    nearest = np.full(n, -1, np.int64)
    for column in range(knn.indices.shape[1]):
        candidate = knn.indices[:, column].astype(np.int64)
        open_rows = (nearest < 0) & (candidate >= 0)
        open_rows[open_rows] = keys[candidate[open_rows]] != keys[np.flatnonzero(open_rows)]
        nearest[open_rows] = candidate[open_rows]
    return nearest


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
    near = params.near_params()
    return ctx.shared(
        ("duplicate_pairs", near),
        lambda: find_pairs(
            ctx.vectors,
            ctx.thumbs,
            exact_keys(ctx),
            ctx.splits,
            near,
            knn=ctx.knn,
            content_ids=ctx.content_ids,
            derived_dir=ctx.derived_dir,
        ),
    )
