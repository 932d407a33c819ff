"""Exact and near-duplicate pairs, shared by the ``duplicates`` and ``leakage`` checks (and ``compare``).

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

:func:`find_pairs` computes the pairs from plain arrays (vectors, thumbnails, content keys, splits);
:func:`duplicate_pairs` computes them once per context and parameter set: a small memo keyed on ``id(ctx)``
and the frozen :class:`NearDupParams` holds a weak reference to the context, so a result is only reused for
the very same (immutable) context and forgotten when the context is garbage-collected.

Modules: ``candidates`` (kNN candidates, exact-copy keys), ``verify`` (thumbnail NCC), ``store`` (scores
kept by content across audits), ``pairs`` (the two stages together, the memo), ``groups`` (pairs → groups).
"""

from datacheck.neardup.candidates import _exact_pairs as _exact_pairs
from datacheck.neardup.candidates import candidate_pairs, exact_keys, exact_keys_of
from datacheck.neardup.groups import duplicate_groups
from datacheck.neardup.pairs import JUDGEMENTS, PAIR_COLUMNS, NearDupParams, duplicate_pairs, find_pairs
from datacheck.neardup.store import PAIR_SCORES_VERSION, PAIR_STORE_CAP, pair_scores
from datacheck.neardup.verify import _COARSE_SLACK as _COARSE_SLACK
from datacheck.neardup.verify import Verification, thumbnail_maps, verify_pairs

__all__ = [
    "JUDGEMENTS",
    "PAIR_COLUMNS",
    "PAIR_SCORES_VERSION",
    "PAIR_STORE_CAP",
    "NearDupParams",
    "Verification",
    "candidate_pairs",
    "duplicate_groups",
    "duplicate_pairs",
    "exact_keys",
    "exact_keys_of",
    "find_pairs",
    "pair_scores",
    "thumbnail_maps",
    "verify_pairs",
]
