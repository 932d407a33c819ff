"""Verification scores stored by content, so a re-audit verifies only the image pairs it has not seen.

A score depends only on the two images' contents (their thumbnails) and the refinement threshold, so it is
stored under the pair's content ids (64-bit prefixes of each SHA-256) in the cache's folder of derived arrays
(:mod:`datacheck.derived`), keyed by the verification version, the stats version and the threshold.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from datacheck.neardup.verify import verify_pairs

if TYPE_CHECKING:
    from pathlib import Path

# The records keep the name of the module they were split from (logging configuration, tests).
logger = logging.getLogger("datacheck.neardup")

#: Bump when :func:`verify_pairs` changes its scores: stored pair scores of older versions are ignored.
PAIR_SCORES_VERSION = 3

#: Most pair scores kept in the cache (the current audit's first, then earlier ones); ~20 bytes each.
PAIR_STORE_CAP = 2_000_000


def pair_scores(
    thumbs: np.ndarray,
    pairs: np.ndarray,
    refine_above: float,
    content_ids: np.ndarray | None = None,
    derived_dir: Path | None = None,
) -> np.ndarray:
    """:func:`verify_pairs` scores of ``pairs``, reusing those of image pairs scored by an earlier audit.

    A score depends only on the two images' contents (their thumbnails) and ``refine_above``, so it is
    stored under the pair's content ids in ``derived_dir``: an unchanged re-audit verifies nothing, and an
    audit after images were added, changed or relabelled verifies only the pairs it has not seen. Without a
    ``derived_dir`` (or ``content_ids``) every pair is verified.

    Args:
        thumbs: ``uint8[N, 32, 32, 3]`` thumbnails.
        pairs: ``int[P, 2]`` row numbers.
        refine_above: Coarse score from which a pair is re-scored at full resolution (:func:`verify_pairs`).
        content_ids: ``uint64[N]`` content identity of each row (the first 64 bits of its SHA-256).
        derived_dir: The cache's folder of derived arrays; scores are kept in its ``pairs`` sub-folder.

    Returns:
        ``float32[P]`` fine scores (NaN where the coarse score stayed below ``refine_above``).
    """
    from datacheck import derived
    from datacheck.images import STATS_VERSION

    store = derived_dir / "pairs" if derived_dir is not None and content_ids is not None else None
    key = derived.content_key(f"pair-scores-v{PAIR_SCORES_VERSION}|stats-v{STATS_VERSION}|{refine_above!r}")
    score = np.full(len(pairs), np.nan, np.float32)
    known = np.zeros(len(pairs), bool)
    stored = derived.load(store, key) if len(pairs) else None
    ids = None if content_ids is None else (content_ids[pairs[:, 0]], content_ids[pairs[:, 1]])
    if stored is not None and ids is not None:
        at, known = derived.lookup(_pair_keys(stored["a"], stored["b"]), _pair_keys(*ids))
        score[known] = stored["score"][at[known]]
    todo = np.flatnonzero(~known)
    logger.info(
        "pair verification: %d of %d pairs scored by an earlier audit", len(pairs) - len(todo), len(pairs)
    )
    if len(todo):
        score[todo] = verify_pairs(thumbs, pairs[todo], refine_above).score
        if ids is not None:
            _store_scores(store, key, (*ids, score), stored)
    return score


def _pair_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One 16-byte key per pair (the two 64-bit content ids side by side): equal keys, equal pairs."""
    both = np.empty((len(a), 2), np.uint64)
    both[:, 0], both[:, 1] = a, b
    return both.view("V16").ravel()


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
        older = ~derived.lookup(_pair_keys(a, b), _pair_keys(earlier["a"], earlier["b"]))[1]
        a = np.concatenate([a, earlier["a"][older]])
        b = np.concatenate([b, earlier["b"][older]])
        score = np.concatenate([score, earlier["score"][older]])
    derived.store(
        store, key, {"a": a[:PAIR_STORE_CAP], "b": b[:PAIR_STORE_CAP], "score": score[:PAIR_STORE_CAP]}
    )
