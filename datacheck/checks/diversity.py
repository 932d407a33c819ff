"""``diversity``: classes whose images are far less varied than the others ("all your cat photos look alike").

Per class, two measures of spread of the L2-normalised embeddings:

* ``spread``: mean cosine distance of the class's images to their (normalised) centroid — how far a typical
  image is from the class average; independent of the class size.
* ``effective_rank``: ``exp`` of the entropy of the normalised eigenvalues of the class covariance (Roy &
  Vetterli 2007) — how many independent directions the images vary in. It grows with the number of images,
  so every class is measured on the same number of images (``rank_sample``, or the smallest class).

A class is reported when its spread is below ``narrow_ratio`` times the median spread of all classes
(``fail`` below ``fail_ratio``). See docs/checks/diversity.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from datacheck.checks.base import CheckResult, Finding, Severity, register, result, skipped
from datacheck.context import AuditContext
from datacheck.params import Params, param

logger = logging.getLogger(__name__)

CHECK_ID = "diversity"
#: Rows of a class converted to float64 at a time (10 MB at 1,280 dimensions).
_BLOCK_ROWS = 1024

_ADVICE = (
    "Add images of this class with other backgrounds, poses, lighting and sources, so the model learns the "
    "class and not one kind of picture."
)


@dataclass(frozen=True)
class DiversityParams(Params):
    """Parameters of the ``diversity`` check.

    Attributes:
        narrow_ratio: A class whose spread is below this fraction of the median class spread is reported…
        fail_ratio: …with severity ``fail`` below this fraction (``warn`` otherwise).
        min_class_size: Classes with fewer images are measured but never reported.
        rank_sample: Images per class (at most) the effective rank is computed on.
        n_examples: Example files per finding (the most typical, i.e. closest to the centroid, first).
        seed: Seed of the sampling.
    """

    narrow_ratio: float = param(0.6, gt=0, lt=1)
    fail_ratio: float = param(0.35, gt=0, lt=1)
    min_class_size: int = param(10, ge=2)
    rank_sample: int = param(500, ge=2)
    n_examples: int = param(8, ge=0)
    seed: int = 0

    def relations(self) -> list[str]:
        """``fail_ratio <= narrow_ratio``."""
        if self.fail_ratio <= self.narrow_ratio:
            return []
        return [f"fail_ratio must be at most narrow_ratio ({self.narrow_ratio}), got {self.fail_ratio!r}"]


@dataclass(frozen=True)
class ClassSpread:
    """Spread of one class.

    Attributes:
        spread: Mean cosine distance to the normalised centroid.
        effective_rank: Effective rank of the covariance (on a fixed number of images).
        typical: Row numbers of the class, closest to the centroid first.
    """

    spread: float
    effective_rank: float
    typical: np.ndarray


@register(CHECK_ID, DiversityParams)
def diversity(ctx: AuditContext, params: DiversityParams) -> CheckResult:
    """Classes whose images are far less varied than those of the other classes."""
    labels = np.asarray(ctx.labels)
    sizes = np.bincount(labels, minlength=len(ctx.class_names))
    measured = [c for c in range(len(ctx.class_names)) if sizes[c] >= 2]
    if len(measured) < 2:
        return skipped(CHECK_ID, "needs at least two classes with two or more images")
    sample = int(min(params.rank_sample, min(sizes[c] for c in measured)))
    spreads = {c: class_spread(ctx.vectors, labels, c, sample, params.seed) for c in measured}
    median = float(np.median([s.spread for s in spreads.values()]))
    median_rank = float(np.median([s.effective_rank for s in spreads.values()]))
    findings = [
        _finding(ctx, c, spreads[c], median, median_rank, params)
        for c in measured
        if sizes[c] >= params.min_class_size and spreads[c].spread < params.narrow_ratio * median
    ]
    findings.sort(key=lambda f: f.extra["ratio"])
    metrics = {
        "spread": {ctx.class_names[c]: s.spread for c, s in spreads.items()},
        "effective_rank": {ctx.class_names[c]: s.effective_rank for c, s in spreads.items()},
        "median_spread": median,
        "rank_sample": sample,
    }
    return result(CHECK_ID, _summary(findings, median), findings, metrics)


def class_spread(
    vectors: np.ndarray, labels: np.ndarray, label: int, sample: int, seed: int = 0
) -> ClassSpread:
    """Spread and effective rank of one class (the rank on ``sample`` randomly chosen images)."""
    rows = np.flatnonzero(labels == label)
    blocks = [rows[start : start + _BLOCK_ROWS] for start in range(0, len(rows), _BLOCK_ROWS)]
    # in blocks: a float64 copy of a class of 100,000 images would hold 1 GB
    centroid = np.sum([vectors[block].sum(axis=0, dtype=np.float64) for block in blocks], axis=0)
    centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
    distance = np.concatenate([1.0 - vectors[block].astype(np.float64) @ centroid for block in blocks])
    rng = np.random.default_rng(seed)
    picked = rows[rng.choice(len(rows), size=min(sample, len(rows)), replace=False)]
    chosen = vectors[picked].astype(np.float64)
    return ClassSpread(
        float(distance.mean()), effective_rank(chosen), rows[np.argsort(distance, kind="stable")]
    )


def effective_rank(points: np.ndarray) -> float:
    """``exp`` of the entropy of the normalised squared singular values of the centred points.

    Computed from the eigenvalues of the ``m×m`` Gram matrix (the same non-zero spectrum, much cheaper than
    an SVD of ``m×D`` when ``m < D``).
    """
    centred = points - points.mean(axis=0)
    gram = centred @ centred.T if len(centred) <= centred.shape[1] else centred.T @ centred
    energy = np.clip(np.linalg.eigvalsh(gram), 0.0, None)
    if energy.sum() <= 0:
        return 1.0
    p = energy[energy > 0] / energy.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def _finding(
    ctx: AuditContext,
    label: int,
    spread: ClassSpread,
    median: float,
    median_rank: float,
    params: DiversityParams,
) -> Finding:
    name = ctx.class_names[label]
    ratio = spread.spread / max(median, 1e-12)
    severity = Severity.FAIL if ratio < params.fail_ratio else Severity.WARN
    return Finding(
        kind="low_diversity",
        severity=severity,
        message=(
            f"'{name}' images are much more alike than those of other classes: spread {spread.spread:.3f} is "
            f"{ratio:.0%} of the median class's {median:.3f} (effective rank {spread.effective_rank:.0f} vs "
            f"{median_rank:.0f})"
        ),
        advice=_ADVICE,
        files=tuple(np.asarray(ctx.paths, dtype=object)[spread.typical[: params.n_examples]]),
        extra={
            "class": name,
            "spread": spread.spread,
            "median_spread": median,
            "ratio": ratio,
            "effective_rank": spread.effective_rank,
            "median_effective_rank": median_rank,
        },
    )


def _summary(findings: list[Finding], median: float) -> str:
    if not findings:
        return f"every class is about as varied as the others (median spread {median:.3f})"
    names = ", ".join(f"{f.extra['class']} ({f.extra['ratio']:.0%})" for f in findings)
    return f"classes far narrower than the others (spread relative to the median): {names}"
