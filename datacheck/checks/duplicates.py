"""``duplicates``: groups of exact copies and near duplicates; copies that carry different labels fail.

Pairs come from :func:`datacheck.neardup.duplicate_pairs` (identical decoded pixels, or a kNN candidate whose
thumbnails still match after the best shift/zoom/flip and brightness/contrast normalisation), computed once
per audit and shared with the ``leakage`` check. Groups are the connected components of those pairs. See
docs/checks/duplicates.md.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from datacheck.checks.base import CheckResult, Finding, GateLimit, ReportView, Severity, register, status_from
from datacheck.context import AuditContext
from datacheck.neardup import JUDGEMENTS, NearDupParams, duplicate_groups, duplicate_pairs, exact_keys
from datacheck.params import param

logger = logging.getLogger(__name__)

CHECK_ID = "duplicates"

#: Groups larger than this get their minimum pairwise cosine from an evenly spaced sample of members.
_MAX_GRAM = 512

_ADVICE = {
    "exact": "Keep one copy and delete the others, unless the repetition is deliberate (e.g. oversampling).",
    "near": "Look at them: if they are the same photo, keep one copy and delete the others.",
    "conflicting_labels": "Decide which label is right, keep one copy with that label and delete the others.",
}


@dataclass(frozen=True)
class DuplicatesParams(NearDupParams):
    """Parameters of the ``duplicates`` check.

    The duplicate definition (``min_cosine``, ``min_score``, ``near``) is inherited from
    :class:`~datacheck.neardup.NearDupParams`, shared with the ``leakage`` check.

    Attributes:
        max_findings: Most groups reported (conflicting labels first, then the largest); metrics count all.
    """

    max_findings: int = param(500, ge=0)


@dataclass(frozen=True)
class _Group:
    """One group of duplicates: row numbers and their paths, sorted by path."""

    rows: tuple[int, ...]
    files: tuple[str, ...]
    kind: str
    match: str
    similarity: float
    score: float
    judgement: str


def _min_cosine(vectors: np.ndarray, rows: np.ndarray) -> float:
    """Smallest pairwise cosine among ``rows`` (unit vectors)."""
    if len(rows) > _MAX_GRAM:
        rows = rows[np.linspace(0, len(rows) - 1, _MAX_GRAM).astype(int)]
    block = vectors[rows]
    return float(np.clip((block @ block.T).min(), -1.0, 1.0))


def _groups(ctx: AuditContext, pairs: pd.DataFrame) -> list[_Group]:
    """The groups of :func:`~datacheck.neardup.duplicate_groups`, described."""
    if not len(pairs):
        return []
    keys = exact_keys(ctx)
    groups = duplicate_groups(ctx.n, pairs, keys)
    group_of = np.full(ctx.n, -1)
    for g, rows in enumerate(groups):
        group_of[rows] = g
    gi, gj = group_of[pairs["i"].to_numpy()], group_of[pairs["j"].to_numpy()]
    inside = (gi == gj) & (gi >= 0)
    edge_score = pairs["score"][inside].groupby(gi[inside]).min()
    # the least sure judgement among the group's pairs (neardup.JUDGEMENTS runs from the surest)
    rank = pairs["judgement"].map({name: n for n, name in enumerate(JUDGEMENTS)}).to_numpy()
    worst = pd.Series(rank[inside]).groupby(gi[inside]).max()
    paths = ctx.paths
    out = []
    for g, rows in enumerate(groups):
        match = "exact" if len(set(keys[rows])) == 1 else "near"
        kind = "conflicting_labels" if len(set(ctx.labels[rows].tolist())) > 1 else match
        ordered = sorted(rows.tolist(), key=lambda r: paths[r])
        out.append(
            _Group(
                rows=tuple(ordered),
                files=tuple(paths[r] for r in ordered),
                kind=kind,
                match=match,
                similarity=_min_cosine(ctx.vectors, rows),
                score=float(edge_score.get(g, 1.0)),
                judgement=JUDGEMENTS[int(worst[g])],
            )
        )
    return out


def _message(ctx: AuditContext, g: _Group) -> str:
    n = len(g.rows)
    if g.kind == "conflicting_labels":
        counts = Counter(str(ctx.label_names[r]) for r in g.rows)
        labels = ", ".join(f"{name} ({c})" for name, c in sorted(counts.items()))
        copies = "exact copies" if g.match == "exact" else "near-duplicate copies"
        return f"{n} {copies} of the same image carry different labels: {labels}."
    if g.kind == "exact":
        return f"{n} images are exact copies of each other (identical pixels)."
    return (
        f"{n} images are near duplicates of each other (thumbnails match with score ≥ {g.score:.2f}, "
        f"embedding cosine ≥ {g.similarity:.2f})."
    )


def _finding(ctx: AuditContext, g: _Group) -> Finding:
    splits = sorted({s for s in (ctx.splits[r] for r in g.rows) if s is not None})
    return Finding(
        kind=g.kind,
        # Different labels on copies of one photo are a labelling error; on look-alikes they may be right.
        severity=Severity.FAIL
        if g.kind == "conflicting_labels" and g.judgement != "look_alike"
        else Severity.WARN,
        message=_message(ctx, g),
        advice=_ADVICE[g.kind],
        files=g.files,
        extra={
            "similarity": g.similarity,
            "score": g.score,
            "match": g.match,
            "judgement": g.judgement,  # the least sure of the group's pairs
            "classes": sorted({str(ctx.label_names[r]) for r in g.rows}),
            "labels": [str(ctx.label_names[r]) for r in g.rows],
            "splits": splits,
        },
    )


def _metrics(ctx: AuditContext, groups: list[_Group], pairs: pd.DataFrame) -> dict:
    redundant = sum(len(g.rows) - 1 for g in groups)
    return {
        "groups": {
            kind: sum(g.kind == kind for g in groups) for kind in ("exact", "near", "conflicting_labels")
        },
        "images_in_groups": sum(len(g.rows) for g in groups),
        "redundant_images": redundant,
        "duplicate_fraction": redundant / ctx.n if ctx.n else 0.0,
        "exact_pairs": int((pairs["kind"] == "exact").sum()),
        "near_pairs": int((pairs["kind"] == "near").sum()),
        "candidate_pairs": int(pairs.attrs.get("candidates", 0)),
    }


def _summary(ctx: AuditContext, groups: list[_Group], metrics: dict) -> str:
    if not groups:
        return f"no duplicates among {ctx.n:,} images"
    by_kind = metrics["groups"]
    parts = [f"{by_kind['exact']} exact", f"{by_kind['near']} near"]
    text = f"{len(groups)} duplicate group{'s' if len(groups) != 1 else ''} ({', '.join(parts)})"
    if by_kind["conflicting_labels"]:
        text += f", {by_kind['conflicting_labels']} with conflicting labels"
    return f"{text}; {metrics['redundant_images']} redundant images ({metrics['duplicate_fraction']:.1%})"


@register(
    CHECK_ID,
    DuplicatesParams,
    limits=[
        GateLimit(
            "max_duplicate_fraction",
            "duplicate_fraction",
            "max_fraction",
            "Largest fraction of redundant duplicate images allowed.",
        )
    ],
    view=ReportView(card="group"),
)
def check_duplicates(ctx: AuditContext, p: DuplicatesParams) -> CheckResult:
    """Exact copies and near duplicates, grouped; copies with different labels fail."""
    pairs = duplicate_pairs(ctx, p)
    groups = _groups(ctx, pairs)
    groups.sort(key=lambda g: (g.kind != "conflicting_labels", -len(g.rows), g.files[0]))
    metrics = _metrics(ctx, groups, pairs)
    findings = [_finding(ctx, g) for g in groups]
    summary = _summary(ctx, groups, metrics)
    if len(findings) > p.max_findings:
        summary += f" (first {p.max_findings} groups listed)"
    logger.info("duplicates: %s", metrics["groups"])
    return CheckResult(CHECK_ID, status_from(findings), summary, metrics, tuple(findings[: p.max_findings]))
