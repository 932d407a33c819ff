"""``leakage``: the same image (exact copy or near duplicate) in two different splits.

A query over the duplicate pairs of :func:`datacheck.neardup.duplicate_pairs` — candidates from the shared
kNN graph, verified on thumbnails — so it agrees with the ``duplicates`` check on what a duplicate is and
builds no index of its own. One finding per cross-split pair. See docs/checks/leakage.md.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from datacheck.checks.base import (
    CheckResult,
    Finding,
    GateLimit,
    ReportView,
    Severity,
    Status,
    register,
    status_from,
)
from datacheck.context import AuditContext
from datacheck.neardup import JUDGEMENTS, NearDupParams, duplicate_pairs
from datacheck.params import param

logger = logging.getLogger(__name__)

CHECK_ID = "leakage"

_ADVICE = "Keep one copy, or move both into the same split."


@dataclass(frozen=True)
class LeakageParams(NearDupParams):
    """Parameters of the ``leakage`` check.

    The duplicate definition (``min_cosine``, ``min_score``, ``near``) is inherited from
    :class:`~datacheck.neardup.NearDupParams`, shared with the ``duplicates`` check.

    Attributes:
        test_split: Split whose leaked images are counted in the ``test_images_leaked`` metric.
        max_findings: Most pairs reported (most similar first); metrics count all.
    """

    test_split: str = "test"
    max_findings: int = param(1000, ge=0)


def _cross_split(ctx: AuditContext, pairs: pd.DataFrame) -> pd.DataFrame:
    """The pairs whose two images lie in different (named) splits, with split names ordered per pair."""
    splits = np.array([s if s is not None else "" for s in ctx.splits], dtype=object)
    a, b = splits[pairs["i"].to_numpy()], splits[pairs["j"].to_numpy()]
    keep = (a != b) & (a != "") & (b != "")
    cross = pairs[keep].copy()
    swap = (a > b)[keep]
    i, j = cross["i"].to_numpy(), cross["j"].to_numpy()
    cross["i"], cross["j"] = np.where(swap, j, i), np.where(swap, i, j)
    cross["split_i"] = splits[cross["i"].to_numpy()]
    cross["split_j"] = splits[cross["j"].to_numpy()]
    return cross.sort_values(
        ["score", "cosine", "i", "j"],
        ascending=[False, False, True, True],
        kind="mergesort",
        ignore_index=True,
    )


#: How each judgement reads in a message, the finding's kind and its severity. Exact copies and the same
#: photograph are leaks a gate fails on; a look-alike may be another shot of the same scene and only warns.
_JUDGED = {
    "exact": ("an exact copy of", "leak", Severity.FAIL),
    "same_shot": ("the same photograph as", "leak", Severity.FAIL),
    "look_alike": ("very like", "possible_leak", Severity.WARN),
}


def _finding(ctx: AuditContext, paths: tuple[str, ...], row: pd.Series) -> Finding:
    i, j = int(row["i"]), int(row["j"])
    what, kind, severity = _JUDGED[str(row["judgement"])]
    return Finding(
        kind=kind,
        severity=severity,
        message=(
            f"An image in '{row['split_i']}' is {what} one in '{row['split_j']}' "
            f"(score {row['score']:.2f}, cosine {row['cosine']:.2f})."
        ),
        advice=_ADVICE,
        files=(paths[i], paths[j]),
        extra={
            "similarity": float(row["cosine"]),
            "score": float(row["score"]),
            "match": str(row["kind"]),
            "judgement": str(row["judgement"]),
            "splits": [str(row["split_i"]), str(row["split_j"])],
            "labels": [str(ctx.label_names[i]), str(ctx.label_names[j])],
        },
    )


def _metrics(ctx: AuditContext, cross: pd.DataFrame, test_split: str) -> dict:
    per_pair = Counter(f"{a}/{b}" for a, b in zip(cross["split_i"], cross["split_j"], strict=True))
    same_photo = cross[cross["judgement"] != "look_alike"]
    leaked = _images_by_split(ctx, same_photo)
    in_any_pair = _images_by_split(ctx, cross)
    sizes = Counter(s for s in ctx.splits if s is not None)
    n_test = sizes.get(test_split, 0)
    return {
        "pairs": len(cross),
        "same_photo_pairs": len(same_photo),
        "pairs_by_judgement": {k: int((cross["judgement"] == k).sum()) for k in JUDGEMENTS},
        "pairs_by_splits": dict(sorted(per_pair.items())),
        "leaked_images": {s: leaked.get(s, 0) for s in sorted(sizes)},
        "test_images_leaked": leaked.get(test_split, 0),
        "test_fraction_leaked": leaked.get(test_split, 0) / n_test if n_test else 0.0,
        "test_images_look_alike": in_any_pair.get(test_split, 0) - leaked.get(test_split, 0),
    }


def _images_by_split(ctx: AuditContext, pairs: pd.DataFrame) -> Counter:
    rows = np.unique(np.r_[pairs["i"].to_numpy(), pairs["j"].to_numpy()]).astype(int)
    return Counter(ctx.splits[r] for r in rows)


def _summary(cross: pd.DataFrame, metrics: dict, test_split: str) -> str:
    if cross.empty:
        return "no image appears in more than one split"
    n, alike = metrics["same_photo_pairs"], len(cross) - metrics["same_photo_pairs"]
    text = f"{n} pair{'s' if n != 1 else ''} of the same photo across splits"
    if alike:
        text += f", {alike} more very alike"
    if metrics["test_images_leaked"]:
        text += (
            f"; {metrics['test_images_leaked']} '{test_split}' images "
            f"({metrics['test_fraction_leaked']:.1%}) have a copy in another split"
        )
    return text


@register(
    CHECK_ID,
    LeakageParams,
    limits=[
        GateLimit(
            "max_leak_pairs",
            "same_photo_pairs",
            "max_count",
            "Cross-split pairs of the same photo (exact or same shot) allowed.",
            default=0,
            counted_kinds=("leak",),
        )
    ],
    view=ReportView(card="group"),
    after=("duplicates",),  # reads the duplicate pairs that check computes (neardup.duplicate_pairs)
)
def check_leakage(ctx: AuditContext, p: LeakageParams) -> CheckResult:
    """Exact or near-duplicate images that appear in two different splits."""
    if not ctx.has_splits:
        return CheckResult(CHECK_ID, Status.PASS, "no splits")
    cross = _cross_split(ctx, duplicate_pairs(ctx, p))
    metrics = _metrics(ctx, cross, p.test_split)
    paths = ctx.paths
    findings = [_finding(ctx, paths, row) for _, row in cross.head(p.max_findings).iterrows()]
    summary = _summary(cross, metrics, p.test_split)
    if len(cross) > p.max_findings:
        summary += f" (first {p.max_findings} pairs listed)"
    logger.info("leakage: %s", metrics["pairs_by_splits"])
    unlisted = Status.FAIL if metrics["same_photo_pairs"] else Status.WARN  # max_findings 0 lists nothing
    status = status_from(findings) if findings or cross.empty else unlisted
    return CheckResult(CHECK_ID, status, summary, metrics, tuple(findings))
