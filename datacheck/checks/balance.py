"""``balance``: images per class and split: too few, too unequal, missing from a split, odd split sizes.

Counts come from the images that were embedded (unreadable files are not training data). Minimums and the
imbalance ratio are judged on the *training* images: the ``train`` split when the dataset has one, otherwise
every image. See docs/checks/balance.md.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from datacheck.checks.base import CheckResult, Finding, GateLimit, ReportView, Severity, register, result
from datacheck.context import AuditContext
from datacheck.params import Params, param

logger = logging.getLogger(__name__)

CHECK_ID = "balance"


@dataclass(frozen=True)
class BalanceParams(Params):
    """Parameters of the ``balance`` check.

    Attributes:
        min_images: Training images per class below which a class gets a warning.
        hard_min_images: Training images per class below which a class fails (TF retrain.py warned below 20).
        max_imbalance: Largest allowed ratio of the biggest to the smallest training class before a warning.
        min_eval_images: Images per class in each held-out split (val, test, …) below which it gets a warning.
        heldout_fraction: ``(low, high)`` share of all images each held-out split should have.
        min_train_fraction: Smallest share of all images the training split should have.
        train_split: Name of the training split; every other split is held out.
    """

    min_images: int = param(100, ge=0)
    hard_min_images: int = param(20, ge=0)
    max_imbalance: float = param(10.0, ge=1)
    min_eval_images: int = param(10, ge=0)
    heldout_fraction: tuple[float, float] = (0.05, 0.40)
    min_train_fraction: float = param(0.5, ge=0, le=1)
    train_split: str = "train"

    def __post_init__(self) -> None:
        """Store ``heldout_fraction`` as a pair of floats (a TOML or JSON list is fine), then validate."""
        object.__setattr__(self, "heldout_fraction", _float_pair(self.heldout_fraction))
        super().__post_init__()

    def relations(self) -> list[str]:
        """``hard_min_images <= min_images``; ``heldout_fraction``: ``0 <= low < high <= 1``; a split name."""
        pair = self.heldout_fraction
        return [
            f"hard_min_images must be at most min_images ({self.min_images}), got {self.hard_min_images!r}"
            if self.hard_min_images > self.min_images
            else "",
            f"heldout_fraction must be (low, high) with 0 <= low < high <= 1, got {self.heldout_fraction!r}"
            if not (_is_float_pair(pair) and 0 <= pair[0] < pair[1] <= 1)
            else "",
            "train_split must be a split name" if not self.train_split else "",
        ]


def _float_pair(value: object) -> object:
    """``value`` as a ``(float, float)`` tuple, or unchanged when it is not a pair of numbers."""
    try:
        low, high = (float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return value
    return (low, high)


def _is_float_pair(value: object) -> bool:
    """Whether ``value`` is what :func:`_float_pair` makes of a pair of numbers."""
    return isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, float) for v in value)


@dataclass(frozen=True)
class _Counts:
    """Images per class overall, in training, and per split."""

    classes: tuple[str, ...]
    total: dict[str, int]
    train: dict[str, int]
    splits: dict[str, dict[str, int]]
    files: dict[tuple[str | None, str], list[str]]
    has_train_split: bool


def _count(ctx: AuditContext, train_split: str) -> _Counts:
    names = ctx.label_names
    per_split: dict[str, Counter[str]] = defaultdict(Counter)
    files: dict[tuple[str | None, str], list[str]] = defaultdict(list)
    for path, label, split in zip(ctx.paths, names, ctx.splits, strict=True):
        files[(split, label)].append(path)
        if split is not None:
            per_split[split][label] += 1
    has_train = train_split in per_split
    total = Counter(str(label) for label in names)
    # Without a training split every image is training data; rows without a split count as training rows.
    train = Counter(
        str(label)
        for label, split in zip(names, ctx.splits, strict=True)
        if not has_train or split is None or split == train_split
    )
    return _Counts(
        classes=ctx.class_names,
        total={c: total[c] for c in ctx.class_names},
        train={c: train[c] for c in ctx.class_names},
        splits={s: {c: per_split[s][c] for c in ctx.class_names} for s in sorted(per_split)},
        files=dict(files),
        has_train_split=has_train,
    )


def _plural(n: int, word: str = "image") -> str:
    suffix = "es" if word.endswith("s") else "s"
    return f"{n} {word}{'' if n == 1 else suffix}"


def _train_files(counts: _Counts, cls: str, train_split: str) -> tuple[str, ...]:
    keys = (
        [(train_split, cls), (None, cls)]
        if counts.has_train_split
        else [key for key in counts.files if key[1] == cls]
    )
    return tuple(sorted(p for key in keys for p in counts.files.get(key, [])))


def _minimum_findings(counts: _Counts, p: BalanceParams) -> list[Finding]:
    where = f"in '{p.train_split}'" if counts.has_train_split else "in the dataset"
    findings = []
    for cls, n in counts.train.items():
        if n == 0 or n >= p.min_images:
            continue  # a class with no training images is reported as missing from the training split
        hard = n < p.hard_min_images
        target = p.hard_min_images if hard else p.min_images
        advice = f"Collect at least {p.min_images - n} more '{cls}' images for training."
        if hard:
            advice = (
                f"Collect at least {p.hard_min_images - n} more '{cls}' images for training, "
                f"ideally {p.min_images - n} more."
            )
        findings.append(
            Finding(
                kind="too_few_images",
                severity=Severity.FAIL if hard else Severity.WARN,
                message=f"Class '{cls}' has only {_plural(n)} {where}, below the minimum of {target}.",
                advice=advice,
                files=_train_files(counts, cls, p.train_split),
                extra={
                    "class": cls,
                    "split": p.train_split if counts.has_train_split else None,
                    "count": n,
                    "minimum": target,
                },
            )
        )
    return findings


def _imbalance(counts: _Counts) -> tuple[float, str, str]:
    """``(max/min ratio, largest class, smallest class)`` over classes with training images."""
    present = {c: n for c, n in counts.train.items() if n > 0}
    if len(present) < 2:
        return 1.0, "", ""
    largest = max(present, key=lambda c: (present[c], c))
    smallest = min(present, key=lambda c: (present[c], c))
    return present[largest] / present[smallest], largest, smallest


def _imbalance_findings(counts: _Counts, p: BalanceParams) -> list[Finding]:
    ratio, largest, smallest = _imbalance(counts)
    if ratio <= p.max_imbalance:
        return []
    big, small = counts.train[largest], counts.train[smallest]
    needed = math.ceil(big / p.max_imbalance) - small
    return [
        Finding(
            kind="imbalance",
            severity=Severity.WARN,
            message=(
                f"Training classes are unbalanced: '{largest}' has {big} images "
                f"but '{smallest}' only {small} "
                f"(ratio {ratio:.1f}, limit {p.max_imbalance:g})."
            ),
            advice=(
                f"Collect at least {needed} more '{smallest}' images (and likewise for other small classes), "
                "or use class weights or balanced sampling when training."
            ),
            extra={"largest": largest, "smallest": smallest, "ratio": ratio, "limit": p.max_imbalance},
        )
    ]


def _held_out(counts: _Counts, p: BalanceParams) -> Iterator[tuple[str, Mapping[str, int]]]:
    """Each held-out split with its per-class counts (none when the dataset has no training split)."""
    if counts.has_train_split:
        yield from (
            (split, per_class) for split, per_class in counts.splits.items() if split != p.train_split
        )


def _missing_findings(counts: _Counts, p: BalanceParams) -> list[Finding]:
    """Classes in a held-out split but not in training (fail) and vice versa (warn)."""
    findings = []
    for split, per_class in _held_out(counts, p):
        for cls in counts.classes:
            in_train, in_split = counts.train[cls] > 0, per_class[cls] > 0
            if in_split and not in_train:
                findings.append(_untrainable(cls, split, per_class[cls], counts, p))
            elif in_train and not in_split:
                findings.append(_unmeasured(cls, split, p))
    return findings


def _untrainable(cls: str, split: str, n: int, counts: _Counts, p: BalanceParams) -> Finding:
    return Finding(
        kind="missing_class",
        severity=Severity.FAIL,
        message=(
            f"Class '{cls}' has {_plural(n)} in '{split}' but none in '{p.train_split}', "
            "so a model can never learn it."
        ),
        advice=(
            f"Add '{cls}' images to '{p.train_split}' (at least {p.min_images}), "
            f"or drop the class from '{split}'."
        ),
        files=tuple(sorted(counts.files.get((split, cls), []))),
        extra={"class": cls, "split": p.train_split, "present_in": split},
    )


def _unmeasured(cls: str, split: str, p: BalanceParams) -> Finding:
    return Finding(
        kind="missing_class",
        severity=Severity.WARN,
        message=(
            f"Class '{cls}' is in '{p.train_split}' but has no images in '{split}', "
            "so its accuracy is never measured."
        ),
        advice=(
            f"Collect at least {max(p.min_eval_images, 1)} '{cls}' images for '{split}' "
            "(never copies of training images)."
        ),
        extra={"class": cls, "split": split, "present_in": p.train_split},
    )


def _eval_findings(counts: _Counts, p: BalanceParams) -> list[Finding]:
    """Classes with some, but too few, images in a held-out split."""
    findings = []
    for split, per_class in _held_out(counts, p):
        for cls, n in per_class.items():
            if 0 < n < p.min_eval_images:
                findings.append(
                    Finding(
                        kind="too_few_eval_images",
                        severity=Severity.WARN,
                        message=(
                            f"Class '{cls}' has only {_plural(n)} in '{split}', "
                            "too few to measure its accuracy "
                            f"(minimum {p.min_eval_images})."
                        ),
                        advice=f"Collect at least {p.min_eval_images - n} more '{cls}' images for '{split}'.",
                        files=tuple(sorted(counts.files.get((split, cls), []))),
                        extra={"class": cls, "split": split, "count": n, "minimum": p.min_eval_images},
                    )
                )
    return findings


def _split_fractions(counts: _Counts) -> dict[str, float]:
    total = sum(counts.total.values())
    return {s: sum(per.values()) / total for s, per in counts.splits.items()} if total else {}


def _fraction_findings(counts: _Counts, p: BalanceParams) -> list[Finding]:
    if not counts.has_train_split:
        return []
    findings = []
    low, high = p.heldout_fraction
    for split, fraction in _split_fractions(counts).items():
        if split == p.train_split:
            if fraction < p.min_train_fraction:
                findings.append(_fraction_finding(split, fraction, f"at least {p.min_train_fraction:.0%}"))
        elif not low <= fraction <= high:
            findings.append(_fraction_finding(split, fraction, f"between {low:.0%} and {high:.0%}"))
    return findings


def _fraction_finding(split: str, fraction: float, wanted: str) -> Finding:
    return Finding(
        kind="split_fraction",
        severity=Severity.WARN,
        message=f"Split '{split}' holds {fraction:.1%} of the images; the usual share is {wanted}.",
        advice=f"Move or collect images so that '{split}' holds {wanted} of the data (e.g. 80/10/10).",
        extra={"split": split, "fraction": fraction},
    )


def _single_class(counts: _Counts) -> list[Finding]:
    if len(counts.classes) >= 2:
        return []
    has = f"only the class '{counts.classes[0]}'" if counts.classes else "no usable images"
    return [
        Finding(
            kind="single_class",
            severity=Severity.FAIL,
            message=f"The dataset has {has}; classification needs two or more classes.",
            advice="Add a folder of images for every other class the model must tell apart.",
            extra={"classes": list(counts.classes)},
        )
    ]


def _summary(counts: _Counts, ratio: float) -> str:
    present = [n for n in counts.train.values() if n > 0]
    if not present:
        return "no training images"
    where = "training " if counts.has_train_split else ""
    text = (
        f"{_plural(len(counts.classes), 'class')}, {min(present)}–{max(present)} {where}images per class "
        f"(ratio {ratio:.1f})"
    )
    if counts.splits:
        shares = ", ".join(f"{s} {f:.0%}" for s, f in _split_fractions(counts).items())
        text += f"; splits: {shares}"
    return text


@register(
    CHECK_ID,
    BalanceParams,
    limits=[
        GateLimit(
            "min_images_per_class", "smallest_class_count", "min_value", "Fewest images a class may have."
        ),
        GateLimit(
            "max_imbalance_ratio",
            "imbalance_ratio",
            "max_value",
            "Largest ratio between the biggest and the smallest class.",
        ),
    ],
    view=ReportView(class_chart=True),
)
def check_balance(ctx: AuditContext, params: BalanceParams) -> CheckResult:
    """Images per class and split: too few, unbalanced, classes missing from a split, odd split sizes."""
    counts = _count(ctx, params.train_split)
    findings = [
        *_single_class(counts),
        *_missing_findings(counts, params),
        *_minimum_findings(counts, params),
        *_imbalance_findings(counts, params),
        *_eval_findings(counts, params),
        *_fraction_findings(counts, params),
    ]
    order = {Severity.FAIL: 0, Severity.WARN: 1, Severity.INFO: 2}
    findings.sort(key=lambda f: order[f.severity])
    ratio, largest, smallest = _imbalance(counts)
    metrics = {
        "classes": len(counts.classes),
        "class_counts": counts.total,
        "train_counts": counts.train,
        "split_counts": counts.splits,
        "split_fractions": _split_fractions(counts),
        "imbalance_ratio": ratio,
        "largest_class": largest,
        "smallest_class": smallest,
        "smallest_class_count": min(counts.train.values(), default=0),
    }
    return result(CHECK_ID, _summary(counts, ratio), findings, metrics)
