"""``shortcuts``: does something other than the object predict the label (the tank problem)?

Two probes, both cross-validated and compared with what the object itself achieves:

1. **Image properties** (``ctx.stats``): brightness, colour cast, contrast, saturation, sharpness, file size,
   grayscale, image size, aspect ratio, file format, JPEG quality, camera — each alone, and all together.
   Each is scored by a cross-validated histogram (naive Bayes) classifier; per class we measure the
   one-vs-rest AUC of the cue.
2. **Where in the image** (``ctx.thumbs``): the twelve outer 8×8 cells of the 32×32 thumbnail, the background
   with the centre masked and the thin border ring, each described by a few dozen numbers and scored by a
   cross-validated shrunk LDA, compared with the same probe on the image centre (the object's place).

Only the training split is probed when the dataset has one (a shortcut matters where the model learns it).

The significance rule is what keeps a clean dataset quiet. A cue is reported for a class when

* it is a property nobody intended (format, JPEG quality, camera, size, grayscale) and separates the class
  clearly (conservative AUC ≥ ``unintended_auc``); or
* it is a content property (frogs *are* greener than airplanes) and separates the class almost perfectly
  (conservative AUC ≥ ``content_auc``) *and* nearly as well as the object does (within ``object_margin`` of
  the kNN classifier on the embeddings); or
* it is an outer cell that predicts the class well (conservative AUC ≥ ``region_auc``), clearly better (by
  ``region_excess``) than the median other outer cell, and about as well as the image centre (within
  ``object_margin``) — a watermark or stamp is local, natural context (sky, water, grass) is everywhere; or
* it is the background or the border ring and predicts the class clearly better than the image centre.

"Conservative" AUC is the estimate minus two Hanley–McNeil standard errors, so small classes need stronger
evidence. See docs/checks/shortcuts.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from datacheck.checks.base import CheckResult, Finding, ReportView, Severity, register, result, skipped
from datacheck.context import AuditContext
from datacheck.dataset import TRAIN, splits_with_role
from datacheck.params import Params, param
from datacheck.probes import cv
from datacheck.probes.properties import PROPERTY_CUES, PropertyCue, encode
from datacheck.probes.regions import CENTRE, Region, ThumbGrid, outer_regions

logger = logging.getLogger(__name__)

CHECK_ID = "shortcuts"

#: Extra numeric stats columns the combined probe uses besides the individual cues.
_COMBINED_EXTRA = ("entropy", "border_r", "border_g", "border_b", "border_std")

_ADVICE_PROPERTY = (
    "Collect images of these classes under varied conditions (or normalise the property) so a model cannot "
    "learn the label from it."
)
_ADVICE_REGION = (
    "Look at the example images' marked region and remove or crop what is there (watermark, stamp, frame), "
    "or add images of other classes that carry it too."
)


@dataclass(frozen=True)
class ShortcutsParams(Params):
    """Parameters of the ``shortcuts`` check.

    Attributes:
        n_folds: Cross-validation folds of every probe.
        n_bins: Quantile bins per numeric property.
        unintended_auc: Conservative one-vs-rest AUC from which a property nobody intended (format, JPEG
            quality, camera, image size, aspect ratio, grayscale) is reported.
        content_auc: Conservative AUC from which a content property (brightness, colour cast, contrast,
            saturation, sharpness, file size, all properties together) is reported…
        object_margin: …and only when its AUC is within this margin of the object's (kNN on embeddings).
        combined_margin: All properties together are reported when their conservative AUC reaches
            ``content_auc`` and their AUC is within this (smaller) margin of the object's: combined, cheap
            statistics naturally do better than any one of them.
        region_auc: Conservative AUC from which an outer region of the thumbnail is reported…
        region_excess: …and only when it beats the median other outer cell (for a cell) or the image centre
            (for background and border) by this much.
        fail_auc: A cue whose AUC for a class reaches this is severity ``fail`` (``warn`` below).
        min_class_size: Classes with fewer images are never reported (their AUCs are too noisy).
        max_region_rows: Rows sampled (stratified) for the region probe; the property probe uses every row.
        n_examples: Example files per finding (the most typical of the cue first).
        seed: Seed of folds and sampling.
    """

    n_folds: int = param(3, ge=2)
    n_bins: int = param(10, ge=2)
    unintended_auc: float = param(0.75, ge=0.5, le=1)
    content_auc: float = param(0.9, ge=0.5, le=1)
    object_margin: float = param(0.1, ge=0, le=0.5)
    combined_margin: float = param(0.02, ge=0, le=0.5)
    region_auc: float = param(0.85, ge=0.5, le=1)
    region_excess: float = param(0.15, ge=0, le=0.5)
    fail_auc: float = param(0.97, ge=0.5, le=1)
    min_class_size: int = param(20, ge=2)
    max_region_rows: int = param(10_000, ge=10)
    n_examples: int = param(6, ge=0)
    seed: int = 0


@dataclass(frozen=True)
class _Probe:
    """Cross-validated scores of one cue over some rows."""

    rows: np.ndarray
    scores: np.ndarray
    auc: cv.OvrAuc
    accuracy: float


@dataclass(frozen=True)
class _Setup:
    """What every probe of one run shares.

    Attributes:
        rows: Context rows probed (the training split when there is one), aligned with ``labels``.
        labels: Their labels.
        n_classes: Number of classes.
        eligible: ``bool[C]`` classes large enough to be reported.
        folds: Cross-validation fold of each probed row.
        object_auc: ``float[C]`` one-vs-rest AUC of the kNN vote on the embeddings.
        baseline: Majority-class rate.
    """

    rows: np.ndarray
    labels: np.ndarray
    n_classes: int
    eligible: np.ndarray
    folds: np.ndarray
    object_auc: np.ndarray
    baseline: float


@register(CHECK_ID, ShortcutsParams, view=ReportView(card="shortcut"))
def shortcuts(ctx: AuditContext, params: ShortcutsParams) -> CheckResult:
    """Image properties or image regions other than the object that predict the label."""
    n_classes = len(ctx.class_names)
    rows = training_rows(ctx)
    if n_classes < 2 or len(np.unique(np.asarray(ctx.labels)[rows])) < 2 or len(rows) < 2 * params.n_folds:
        return skipped(CHECK_ID, "needs at least two classes with a few images each")
    setup = _setup(ctx, rows, params)
    prop_findings, prop_metrics = _property_probe(ctx, params, setup)
    region_findings, region_metrics = _region_probe(ctx, params, setup)
    findings = sorted(prop_findings + region_findings, key=lambda f: -max(f.extra["auc"].values()))
    metrics = {
        "probed_images": len(rows),
        "baseline": setup.baseline,
        "object_accuracy": cv.accuracy(
            cv.neighbour_class_scores(ctx.knn.indices[rows], np.asarray(ctx.labels), n_classes), setup.labels
        ),
        **prop_metrics,
        **region_metrics,
    }
    return result(CHECK_ID, _summary(findings), findings, metrics)


def training_rows(ctx: AuditContext) -> np.ndarray:
    """Rows of the training split (``train`` or ``training``) when the dataset has one, else every row.

    A shortcut matters where the model learns it; a held-out split without the cue would only dilute it.
    """
    splits = np.array([s if s is not None else "" for s in ctx.splits], dtype=object)
    train = np.flatnonzero(np.isin(splits, splits_with_role(TRAIN)))
    return train if len(train) else np.arange(ctx.n)


def _setup(ctx: AuditContext, rows: np.ndarray, params: ShortcutsParams) -> _Setup:
    all_labels = np.asarray(ctx.labels)
    labels = all_labels[rows]
    n_classes = len(ctx.class_names)
    object_scores = cv.neighbour_class_scores(ctx.knn.indices[rows], all_labels, n_classes)
    return _Setup(
        rows=rows,
        labels=labels,
        n_classes=n_classes,
        eligible=np.bincount(labels, minlength=n_classes) >= params.min_class_size,
        folds=cv.stratified_folds(labels, params.n_folds, params.seed),
        object_auc=cv.ovr_auc(object_scores, labels, n_classes).auc,
        baseline=cv.majority_rate(labels),
    )


def _summary(findings: Sequence[Finding]) -> str:
    if not findings:
        return "no image property or outer image region predicts a class suspiciously well"
    parts = [f"{f.extra['cue']} ({', '.join(f.extra['classes'])})" for f in findings]
    noun = "shortcut" if len(findings) == 1 else "shortcuts"
    return f"{len(findings)} suspected {noun}: " + "; ".join(parts)


# ------------------------------------------------------------------------------------- probe 1: properties


def _property_probe(ctx: AuditContext, params: ShortcutsParams, setup: _Setup) -> tuple[list[Finding], dict]:
    if len(ctx.stats) != ctx.n:
        return [], {"property_accuracy": {}}
    stats = ctx.stats.iloc[setup.rows].reset_index(drop=True)
    cues = [cue for cue in PROPERTY_CUES if cue.available(stats)]
    findings, accuracies, flagged = [], {}, set()
    all_codes = []
    for cue in cues:
        values = cue.values(stats)
        codes = encode(values, params.n_bins)
        all_codes.append(codes)
        probe = _nb_probe(codes, setup)
        accuracies[cue.name] = probe.accuracy
        classes = _flag_property(cue.kind, probe.auc, params, setup)
        flagged |= set(classes.tolist())
        if len(classes):
            findings.append(_property_finding(ctx, cue, values, probe, classes, params, setup))
    metrics: dict = {"property_accuracy": accuracies}
    extra = [c for c in _COMBINED_EXTRA if c in stats.columns and stats[c].nunique() > 1]
    if extra:
        all_codes.append(encode(stats[extra], params.n_bins))
    if all_codes:
        combined = _nb_probe(np.concatenate(all_codes, axis=1), setup)
        metrics["combined_accuracy"] = combined.accuracy
        hits = _flag_property("content", combined.auc, params, setup, margin=params.combined_margin)
        classes = np.array([c for c in hits if c not in flagged])
        if len(classes):
            findings.append(_combined_finding(ctx, combined, classes, params, setup))
    return findings, metrics


def _nb_probe(codes: np.ndarray, setup: _Setup) -> _Probe:
    scores = cv.cross_val_scores(codes, setup.labels, setup.n_classes, cv.binned_naive_bayes, setup.folds)
    return _Probe(
        setup.rows,
        scores,
        cv.ovr_auc(scores, setup.labels, setup.n_classes),
        cv.accuracy(scores, setup.labels),
    )


def _flag_property(
    kind: str, auc: cv.OvrAuc, params: ShortcutsParams, setup: _Setup, margin: float | None = None
) -> np.ndarray:
    """Classes for which a property cue is suspicious (see the module docstring)."""
    margin = params.object_margin if margin is None else margin
    lower = np.nan_to_num(auc.lower, nan=0.0)
    if kind == "unintended":
        hit = lower >= params.unintended_auc
    else:
        rivals_object = np.where(np.isnan(setup.object_auc), True, auc.auc >= setup.object_auc - margin)
        hit = (lower >= params.content_auc) & rivals_object
    return np.flatnonzero(hit & setup.eligible)


def _property_finding(
    ctx: AuditContext,
    cue: PropertyCue,
    values: pd.DataFrame,
    probe: _Probe,
    classes: np.ndarray,
    params: ShortcutsParams,
    setup: _Setup,
) -> Finding:
    names = [ctx.class_names[c] for c in classes]
    effects = [cue.effect(values, setup.labels == c, ctx.class_names[c]) for c in classes]
    kind_words = "a property nobody intended" if cue.kind == "unintended" else "an image property"
    message = (
        f"{cue.name} ({kind_words}) alone predicts {_join(names)} with AUC "
        f"{_join([f'{probe.auc.auc[c]:.2f}' for c in classes])}: {effects[0]}"
    )
    return _finding(
        ctx, cue.name, message, _ADVICE_PROPERTY, probe, classes, params, setup, "; ".join(effects)
    )


def _combined_finding(
    ctx: AuditContext, probe: _Probe, classes: np.ndarray, params: ShortcutsParams, setup: _Setup
) -> Finding:
    names = [ctx.class_names[c] for c in classes]
    effect = (
        f"together, cheap image statistics separate {_join(names)} from the other classes almost as well "
        f"as the image content does (AUC {_join([f'{probe.auc.auc[c]:.2f}' for c in classes])} vs "
        f"{_join([f'{setup.object_auc[c]:.2f}' for c in classes])})"
    )
    message = f"image statistics combined predict {_join(names)}: {effect}"
    return _finding(ctx, "image statistics", message, _ADVICE_PROPERTY, probe, classes, params, setup, effect)


# ---------------------------------------------------------------------------------------- probe 2: regions


def _region_probe(ctx: AuditContext, params: ShortcutsParams, setup: _Setup) -> tuple[list[Finding], dict]:
    picked = cv.stratified_subsample(setup.labels, params.max_region_rows, params.seed)
    rows = setup.rows[picked]
    thumbs = ctx.thumbs[rows]
    if len(thumbs) == 0 or int(thumbs.max()) == int(thumbs.min()):
        return [], {"region_rows": 0}
    grid = ThumbGrid(thumbs)
    sub = _Setup(
        rows=rows,
        labels=setup.labels[picked],
        n_classes=setup.n_classes,
        eligible=setup.eligible,
        folds=cv.stratified_folds(setup.labels[picked], params.n_folds, params.seed),
        object_auc=setup.object_auc,
        baseline=cv.majority_rate(setup.labels[picked]),
    )
    centre = _lda_probe(CENTRE, grid, rows, sub)
    regions = outer_regions()
    probes = {region.name: _lda_probe(region, grid, rows, sub) for region in regions}
    cell_auc = np.stack([probes[r.name].auc.auc for r in regions if r.cell is not None])
    best = _best_regions(thumbs, regions, probes, centre, cell_auc, params, sub)
    findings = []
    for name in dict.fromkeys(best.values()):
        region = next(r for r in regions if r.name == name)
        classes = np.array(sorted(c for c, r in best.items() if r == name))
        reference = _region_reference(region, regions, cell_auc, centre.auc.auc)
        findings.append(
            _region_finding(ctx, region, thumbs, probes[name], centre, reference, classes, params, sub)
        )
    metrics = {
        "region_rows": len(rows),
        "centre_accuracy": centre.accuracy,
        "region_accuracy": {name: p.accuracy for name, p in probes.items()},
    }
    return findings, metrics


def _lda_probe(region: Region, grid: ThumbGrid, rows: np.ndarray, setup: _Setup) -> _Probe:
    features = region.describe(grid).astype(np.float64)
    scores = cv.cross_val_scores(features, setup.labels, setup.n_classes, cv.shrunk_lda, setup.folds)
    return _Probe(
        rows, scores, cv.ovr_auc(scores, setup.labels, setup.n_classes), cv.accuracy(scores, setup.labels)
    )


def _region_reference(
    region: Region, regions: Sequence[Region], cell_auc: np.ndarray, centre_auc: np.ndarray
) -> np.ndarray:
    """Per class, the AUC a region must beat by ``region_excess``.

    For a cell: the median other outer cell (a watermark is local, sky and water are everywhere). For the
    background and the border: the image centre.
    """
    if region.cell is None:
        return centre_auc
    cells = [r for r in regions if r.cell is not None]
    others = np.array([r.name != region.name for r in cells])
    return np.nanmedian(cell_auc[others], axis=0)


def _flag_region(
    region: Region,
    auc: cv.OvrAuc,
    reference: np.ndarray,
    centre_auc: np.ndarray,
    params: ShortcutsParams,
    setup: _Setup,
) -> np.ndarray:
    """Classes for which a region is suspicious.

    It predicts the class well, clearly better than its reference, and (for a cell) at least about as well as
    the image centre where the object is.
    """
    lower = np.nan_to_num(auc.lower, nan=0.0)
    excess = np.nan_to_num(auc.auc - reference, nan=0.0)
    hit = (lower >= params.region_auc) & (excess >= params.region_excess)
    if region.cell is not None:
        hit &= np.nan_to_num(auc.auc - centre_auc, nan=0.0) >= -params.object_margin
    return np.flatnonzero(hit & setup.eligible)


def _best_regions(
    thumbs: np.ndarray,
    regions: Sequence[Region],
    probes: dict[str, _Probe],
    centre: _Probe,
    cell_auc: np.ndarray,
    params: ShortcutsParams,
    setup: _Setup,
) -> dict[int, str]:
    """For each flagged class, the one region that explains it best.

    The strongest flagged cell (ties broken by the lowest within-class pixel spread: the cell holding most of
    a constant stamp), else the stronger of background and border (a watermark also lights up the
    background that contains it).
    """
    best: dict[int, tuple[bool, float, float, str]] = {}
    for region in regions:
        probe = probes[region.name]
        reference = _region_reference(region, regions, cell_auc, centre.auc.auc)
        for c in _flag_region(region, probe.auc, reference, centre.auc.auc, params, setup):
            constancy = -_spread_ratio(region, thumbs, setup.labels, int(c))
            key = (region.cell is not None, round(float(probe.auc.auc[c]), 2), constancy, region.name)
            if c not in best or key[:3] > best[int(c)][:3]:
                best[int(c)] = key
    return {c: key[3] for c, key in sorted(best.items())}


def _spread_ratio(region: Region, thumbs: np.ndarray, labels: np.ndarray, label: int) -> float:
    """Pixel spread of the region within one class relative to within the other images (1 = as varied)."""
    pixels = region.pixels(thumbs)
    inside, outside = pixels[labels == label], pixels[labels != label]
    if len(inside) < 2 or len(outside) < 2:
        return float("nan")
    return float(inside.std(axis=0).mean() / max(outside.std(axis=0).mean(), 1e-6))


def _region_finding(
    ctx: AuditContext,
    region: Region,
    thumbs: np.ndarray,
    probe: _Probe,
    centre: _Probe,
    reference: np.ndarray,
    classes: np.ndarray,
    params: ShortcutsParams,
    setup: _Setup,
) -> Finding:
    effects = []
    for c in classes:
        ratio = _spread_ratio(region, thumbs, setup.labels, c)
        spread = (
            f"; its pixels vary {100 * (1 - ratio):.0f}% less across {ctx.class_names[c]} images than across "
            "the others (a constant patch?)"
            if ratio < 0.8
            else ""
        )
        effects.append(
            f"{region.words} alone tells {ctx.class_names[c]} images apart with AUC {probe.auc.auc[c]:.2f}, "
            f"the image centre only {centre.auc.auc[c]:.2f}{spread}"
        )
    names = [ctx.class_names[c] for c in classes]
    message = f"{region.words} alone predicts {_join(names)}: {effects[0]}"
    extra = {"centre_auc": {ctx.class_names[c]: float(centre.auc.auc[c]) for c in classes}}
    return _finding(
        ctx, region.name, message, _ADVICE_REGION, probe, classes, params, setup, "; ".join(effects), extra
    )


# ------------------------------------------------------------------------------------------------ shared


def _finding(
    ctx: AuditContext,
    cue: str,
    message: str,
    advice: str,
    probe: _Probe,
    classes: np.ndarray,
    params: ShortcutsParams,
    setup: _Setup,
    effect: str,
    extra: dict | None = None,
) -> Finding:
    auc = {ctx.class_names[c]: float(probe.auc.auc[c]) for c in classes}
    severity = Severity.FAIL if max(auc.values()) >= params.fail_auc else Severity.WARN
    return Finding(
        kind="shortcut",
        severity=severity,
        message=message,
        advice=advice,
        files=_examples(ctx, probe, classes, setup.labels, params.n_examples),
        extra={
            "cue": cue,
            "classes": [ctx.class_names[c] for c in classes],
            "accuracy": probe.accuracy,
            "baseline": setup.baseline,
            "effect": effect,
            "auc": auc,
            "object_auc": {ctx.class_names[c]: float(setup.object_auc[c]) for c in classes},
            **(extra or {}),
        },
    )


def _examples(
    ctx: AuditContext, probe: _Probe, classes: np.ndarray, labels: np.ndarray, n_examples: int
) -> tuple[str, ...]:
    """The images of the flagged classes the cue scores highest for their class, round-robin over classes."""
    paths = ctx.paths
    ranked = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        order = members[np.argsort(-probe.scores[members, c], kind="stable")]
        ranked.append([paths[probe.rows[i]] for i in order[:n_examples]])
    out: list[str] = []
    for i in range(n_examples):
        out += [group[i] for group in ranked if i < len(group)]
    return tuple(out[:n_examples])


def _join(items: Sequence[str]) -> str:
    return ", ".join(items)
