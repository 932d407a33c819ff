"""``quality``: images that are dark, bright, blurry, nearly empty, tiny, oddly shaped or grayscale.

Every threshold is relative to the dataset *and* bounded by an absolute sanity limit: an image is flagged
only when it is an outlier among this dataset's images (robust z-score, median/MAD) **and** bad in absolute
terms. A dataset of night shots is not all "dark", and a uniformly fine dataset yields nothing.
See docs/checks/quality.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from datacheck.checks.base import CheckResult, Finding, ReportView, Severity, register, result, skipped
from datacheck.context import AuditContext
from datacheck.params import Params, param

logger = logging.getLogger(__name__)

CHECK_ID = "quality"

#: Issue types in report order.
ISSUES: tuple[str, ...] = ("tiny", "dark", "bright", "low_information", "blurry", "odd_aspect", "grayscale")

#: Issues that explain another one away: a dark image also has little contrast, entropy and detail.
_SUPPRESSED_BY: dict[str, tuple[str, ...]] = {
    "low_information": ("dark", "bright"),
    # Stats are computed at a fixed short side, so a small or very elongated image is upscaled more than the
    # rest and loses detail: its size or shape is the cause, not blur.
    "blurry": ("tiny", "odd_aspect", "dark", "bright", "low_information"),
    "grayscale": ("dark", "bright", "low_information"),  # too little colour left to tell
}

#: MAD scales are floored at these values (per derived feature) so that a dataset of nearly identical
#: images does not turn tiny differences into huge z-scores.
_MIN_SCALE = {"log_brightness": 0.05, "log_headroom": 0.05, "detail": 0.05, "entropy": 0.05}

_MAD_TO_SIGMA = 1.4826

_MESSAGES: dict[str, tuple[str, str]] = {  # issue -> (message template, advice)
    "tiny": (
        "'{path}' is tiny ({width}x{height} px) next to the typical {median_short:.0f} px short side.",
        "Replace it with a larger image of the same subject, or remove it.",
    ),
    "dark": (
        "'{path}' is much darker than the rest of the dataset (mean brightness {brightness:.0f} of 255).",
        "Check that the subject is visible; re-shoot or remove it if it is not.",
    ),
    "bright": (
        "'{path}' is much brighter than the rest of the dataset (mean brightness {brightness:.0f} of 255).",
        "Check that the image is not washed out; re-shoot or remove it if the subject is not visible.",
    ),
    "low_information": (
        "'{path}' shows almost nothing (luma entropy {entropy:.1f} bits, contrast {contrast:.1f}).",
        "Check that the image shows the subject; remove it if it is an empty or failed shot.",
    ),
    "blurry": (
        "'{path}' is much blurrier than the rest of the dataset.",
        "Replace it with a sharp image of the same subject, or remove it if the subject is unrecognisable.",
    ),
    "odd_aspect": (
        "'{path}' has an unusual shape ({width}x{height} px, {factor:.1f}x off the typical aspect ratio).",
        "Crop it to the subject with the dataset's usual aspect ratio; resizing will distort it otherwise.",
    ),
    "grayscale": (
        "'{path}' is a grayscale image in a dataset of colour images.",
        "Use a colour version if there is one, or give every class a similar share of grayscale images.",
    ),
}


@dataclass(frozen=True)
class QualityParams(Params):
    """Parameters of the ``quality`` check.

    Attributes:
        z_threshold: Robust z-score (median/MAD) beyond which an image is unusual for this dataset.
        dark_max_luma: An unusually dark image is reported when even its bright end (mean + 2 std of luma,
            0..255) is below this.
        bright_min_luma: An unusually bright image is reported when even its dark end (mean - 2 std of
            luma, 0..255) is above this.
        low_information_entropy: Luma-histogram entropy (bits, 0..8) below which an unusually flat image
            is reported as ``low_information``.
        blurry_detail: Laplacian variance as a fraction of luma variance below which an unusually smooth
            image is reported as ``blurry``.
        min_side: Short side in pixels below which an image is always ``tiny``.
        tiny_fraction: Short side, as a fraction of the dataset's median short side, below which an image
            is ``tiny``.
        aspect_factor: How many times wider or taller than the dataset's median aspect ratio an image may be
            before it is ``odd_aspect``.
        max_grayscale_fraction: Grayscale images are reported only when at most this fraction of the
            dataset is grayscale (a mostly colour dataset).
        max_findings_per_issue: Most findings listed per issue type (the worst first); the metrics count all.
    """

    z_threshold: float = param(3.0, gt=0)
    dark_max_luma: float = param(35.0, ge=0, le=255)
    bright_min_luma: float = param(220.0, ge=0, le=255)
    low_information_entropy: float = param(3.5, ge=0, le=8)
    blurry_detail: float = param(0.05, gt=0)
    min_side: int = param(16, ge=0)
    tiny_fraction: float = param(0.25, ge=0, le=1)
    aspect_factor: float = param(2.0, ge=1)
    max_grayscale_fraction: float = param(0.1, ge=0, le=1)
    max_findings_per_issue: int = param(200, ge=0)

    def relations(self) -> list[str]:
        """``dark_max_luma`` is below ``bright_min_luma``."""
        if self.dark_max_luma < self.bright_min_luma:
            return []
        return [
            f"dark_max_luma must be less than bright_min_luma ({self.bright_min_luma:g}), "
            f"got {self.dark_max_luma!r}"
        ]


def robust_z(values: np.ndarray, min_scale: float = 1e-9) -> np.ndarray:
    """``(x - median) / (1.4826 · MAD)`` ignoring NaNs; the scale is floored at ``min_scale``.

    Args:
        values: One value per item (NaN allowed; its z-score is NaN).
        min_scale: Smallest scale used, so nearly constant data does not blow up.

    Returns:
        Robust z-scores, same shape as ``values``.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.full(values.shape, np.nan)
    median = float(np.median(finite))
    scale = max(_MAD_TO_SIGMA * float(np.median(np.abs(finite - median))), min_scale)
    return (values - median) / scale


def _column(stats: pd.DataFrame, name: str) -> np.ndarray | None:
    if name not in stats.columns:
        return None
    return pd.to_numeric(stats[name], errors="coerce").to_numpy(dtype=np.float64)


@dataclass(frozen=True)
class _Flags:
    """Per issue: a boolean mask and a score per image (higher = worse)."""

    masks: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    context: dict[str, float]


def _exposure(stats: pd.DataFrame, p: QualityParams, out: _Flags) -> None:
    brightness = _column(stats, "brightness")
    if brightness is None:
        return
    contrast = _column(stats, "contrast")
    spread = 2.0 * (np.zeros_like(brightness) if contrast is None else np.nan_to_num(contrast))
    # The bright end (mean + 2 std) of a dark image is dim too, while a dark background with a lit subject
    # has a bright end; likewise the dark end (mean - 2 std) of a washed-out image is near white.
    highlights = np.clip(brightness + spread, 0.0, 255.0)
    shadows = np.clip(brightness - spread, 0.0, 255.0)
    z_dark = robust_z(np.log1p(highlights), _MIN_SCALE["log_brightness"])
    z_bright = robust_z(np.log1p(255.0 - shadows), _MIN_SCALE["log_headroom"])
    out.masks["dark"] = (z_dark <= -p.z_threshold) & (highlights < p.dark_max_luma)
    out.scores["dark"] = -z_dark
    out.masks["bright"] = (z_bright <= -p.z_threshold) & (shadows > p.bright_min_luma)
    out.scores["bright"] = -z_bright


def _information(stats: pd.DataFrame, p: QualityParams, out: _Flags) -> None:
    entropy = _column(stats, "entropy")
    if entropy is None:
        return
    z = robust_z(entropy, _MIN_SCALE["entropy"])
    out.masks["low_information"] = (z <= -p.z_threshold) & (entropy < p.low_information_entropy)
    out.scores["low_information"] = -z


def _blur(stats: pd.DataFrame, p: QualityParams, out: _Flags) -> None:
    sharpness, contrast = _column(stats, "sharpness"), _column(stats, "contrast")
    if sharpness is None or contrast is None:
        return
    # Laplacian variance relative to luma variance: exposure and contrast scale both alike, so a dark or
    # flat image is not mistaken for a blurry one (log-sharpness alone would be).
    detail = np.log((np.maximum(sharpness, 0.0) + 1.0) / (np.square(contrast) + 1.0))
    z = robust_z(detail, _MIN_SCALE["detail"])
    out.masks["blurry"] = (z <= -p.z_threshold) & (detail < np.log(p.blurry_detail))
    out.scores["blurry"] = -z


def _geometry(stats: pd.DataFrame, p: QualityParams, out: _Flags) -> None:
    width, height = _column(stats, "width"), _column(stats, "height")
    if width is None or height is None:
        return
    short = np.minimum(width, height)
    valid = short > 0
    if not valid.any():
        return
    median_short = float(np.median(short[valid]))
    out.context["median_short"] = median_short
    out.masks["tiny"] = valid & ((short < p.min_side) | (short < p.tiny_fraction * median_short))
    out.scores["tiny"] = np.where(valid, median_short / np.maximum(short, 1.0), 0.0)
    log_aspect = np.log(np.where(valid, width, 1.0) / np.where(valid, height, 1.0))
    off = np.abs(log_aspect - float(np.median(log_aspect[valid])))
    out.masks["odd_aspect"] = valid & (off > np.log(p.aspect_factor))
    out.scores["odd_aspect"] = np.exp(off)


def _grayscale(stats: pd.DataFrame, p: QualityParams, out: _Flags) -> None:
    column = "grayscale" if "grayscale" in stats.columns else "is_grayscale"
    if column not in stats.columns:
        return
    gray = stats[column].fillna(False).to_numpy(dtype=bool)
    fraction = float(gray.mean()) if gray.size else 0.0
    out.context["grayscale_fraction"] = fraction
    out.masks["grayscale"] = gray if 0 < fraction <= p.max_grayscale_fraction else np.zeros_like(gray)
    out.scores["grayscale"] = np.full(gray.shape, 1.0 - fraction)


_DETECTORS: tuple[Callable[[pd.DataFrame, QualityParams, _Flags], None], ...] = (
    _geometry,
    _exposure,
    _information,
    _blur,
    _grayscale,
)


def flag_images(stats: pd.DataFrame, params: QualityParams) -> _Flags:
    """Every quality issue the stats show, before capping (derived issues suppressed by their cause)."""
    flags = _Flags({}, {}, {})
    for detect in _DETECTORS:
        detect(stats, params, flags)
    for issue, causes in _SUPPRESSED_BY.items():
        if issue in flags.masks:
            for cause in causes:
                if cause in flags.masks:
                    flags.masks[issue] = flags.masks[issue] & ~flags.masks[cause]
    for issue, mask in flags.masks.items():
        flags.masks[issue] = np.asarray(mask, dtype=bool) & np.isfinite(flags.scores[issue])
    return flags


def _row_values(stats: pd.DataFrame, row: int, flags: _Flags, score: float) -> dict[str, float]:
    values = {
        name: stats[name].iat[row]
        for name in ("width", "height", "brightness", "contrast", "entropy")
        if name in stats.columns
    }
    return {**flags.context, **values, "factor": score}


def _findings_for(
    issue: str, stats: pd.DataFrame, paths: tuple[str, ...], flags: _Flags, p: QualityParams
) -> list[Finding]:
    rows = np.flatnonzero(flags.masks[issue])
    scores = flags.scores[issue][rows]
    order = rows[np.argsort(-scores, kind="stable")][: p.max_findings_per_issue]
    template, advice = _MESSAGES[issue]
    severity = Severity.INFO if issue == "grayscale" else Severity.WARN
    findings = []
    for row in order:
        score = float(flags.scores[issue][row])
        values = _row_values(stats, int(row), flags, score)
        findings.append(
            Finding(
                kind=issue,
                severity=severity,
                message=template.format(path=paths[row], **values),
                advice=advice,
                files=(paths[row],),
                extra={"issue": issue, "score": score},
            )
        )
    return findings


@register(CHECK_ID, QualityParams, view=ReportView(card="quality"))
def check_quality(ctx: AuditContext, params: QualityParams) -> CheckResult:
    """Dark, bright, blurry, empty, tiny, odd-aspect and grayscale images (relative to the dataset)."""
    stats = ctx.stats.reset_index(drop=True)
    if ctx.n == 0 or len(stats) != ctx.n or stats.shape[1] == 0:
        return _skipped("no image statistics are available")
    flags = flag_images(stats, params)
    if not flags.masks:
        return _skipped("the image statistics lack every column this check reads")
    paths = ctx.paths
    findings = [
        f
        for issue in ISSUES
        if issue in flags.masks
        for f in _findings_for(issue, stats, paths, flags, params)
    ]
    counts = {issue: int(flags.masks[issue].sum()) for issue in ISSUES if issue in flags.masks}
    flagged = int(np.logical_or.reduce(list(flags.masks.values())).sum())
    metrics = {"counts": counts, "images_flagged": flagged, "checked": sorted(flags.masks), **flags.context}
    return result(CHECK_ID, _summary(counts, flagged, ctx.n), findings, metrics)


def _summary(counts: dict[str, int], flagged: int, n: int) -> str:
    if not flagged:
        return f"no quality problems in {n} images"
    parts = ", ".join(f"{c} {issue.replace('_', ' ')}" for issue, c in counts.items() if c)
    return f"{flagged} of {n} images have quality problems: {parts}"


def _skipped(reason: str) -> CheckResult:
    return skipped(CHECK_ID, f"skipped: {reason}")
