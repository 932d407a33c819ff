"""Image-property cues read from the shared stats table (``ctx.stats``, one ``ImageStats.as_row()`` per row).

Each :class:`PropertyCue` turns one or two columns into small integer codes (quantile bins of a numeric
property, or categories) for :func:`datacheck.probes.cv.binned_naive_bayes`, and words the effect of a
flagged class ("cat images are 34% brighter than the other images").

Cues are of two kinds:

* ``content``: properties that honestly differ between objects (frogs are greener than airplanes): only a
  near-perfect separation that rivals the object itself is suspicious;
* ``unintended``: properties nobody meant to vary with the label (file format, JPEG quality, camera, image
  size, grayscale): a clear association is enough.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

CueKind = Literal["content", "unintended"]

#: Most categories kept per categorical column (the rest share one code).
MAX_CATEGORIES = 24


@dataclass(frozen=True)
class PropertyCue:
    """A cheap image property that might predict the label.

    Attributes:
        name: Cue name in findings (``"brightness"``, ``"file format"`` …).
        kind: ``"content"`` or ``"unintended"`` (see the module docstring).
        columns: Stats columns it needs (all must be present).
        values: ``stats -> DataFrame`` of the cue's value columns (numeric or categorical).
        effect: ``(values, in_class, class_name) -> str`` human-readable size of the effect.
    """

    name: str
    kind: CueKind
    columns: tuple[str, ...]
    values: Callable[[pd.DataFrame], pd.DataFrame]
    effect: Callable[[pd.DataFrame, np.ndarray, str], str]

    def available(self, stats: pd.DataFrame) -> bool:
        """Whether the stats have the columns and the cue varies at all."""
        if not all(c in stats.columns for c in self.columns):
            return False
        values = self.values(stats)
        return any(values[c].nunique(dropna=False) > 1 for c in values.columns)


# ------------------------------------------------------------------------------------------------ codes


def encode(values: pd.DataFrame, n_bins: int) -> np.ndarray:
    """Integer codes ``int[N, F]``: quantile bins of numeric columns, else categories; missing is a code."""
    return np.stack([_encode_column(values[c], n_bins) for c in values.columns], axis=1)


def _encode_column(column: pd.Series, n_bins: int) -> np.ndarray:
    if pd.api.types.is_bool_dtype(column):
        column = column.astype("object")
    if pd.api.types.is_numeric_dtype(column) and column.nunique() > n_bins:
        numbers = column.to_numpy(dtype=np.float64)
        finite = np.isfinite(numbers)
        edges = np.unique(np.quantile(numbers[finite], np.linspace(0, 1, n_bins + 1)[1:-1]))
        codes = np.searchsorted(edges, numbers, side="right")
        return np.where(finite, codes, len(edges) + 1)
    text = column.astype("object").where(column.notna(), "\x00missing").astype(str)
    top = text.value_counts().index[:MAX_CATEGORIES]
    lookup = {value: i for i, value in enumerate(top)}
    return text.map(lambda v: lookup.get(v, len(top))).to_numpy(dtype=np.int64)


# ---------------------------------------------------------------------------------------------- effects


def _median_effect(column: str, more: str, less: str, unit: str = "") -> Callable[..., str]:
    """Effect wording for one numeric column: relative difference of medians."""

    def effect(values: pd.DataFrame, in_class: np.ndarray, class_name: str) -> str:
        inside = float(np.nanmedian(values[column].to_numpy(dtype=float)[in_class]))
        outside = float(np.nanmedian(values[column].to_numpy(dtype=float)[~in_class]))
        word = more if inside >= outside else less
        base = max(abs(outside), 1e-9)
        change = abs(inside - outside) / base * 100
        return (
            f"{class_name} images are {change:.0f}% {word} than the other images "
            f"(median {column.replace('_', ' ')} {inside:.3g}{unit} vs {outside:.3g}{unit})"
        )

    return effect


def _share_effect(column: str, what: str) -> Callable[..., str]:
    """Effect wording for a categorical column: the class's most common value and its share elsewhere."""

    def effect(values: pd.DataFrame, in_class: np.ndarray, class_name: str) -> str:
        text = values[column].astype("object").where(values[column].notna(), "none").astype(str)
        inside = text[in_class]
        top = inside.value_counts().index[0]
        share_in = float((inside == top).mean()) * 100
        share_out = float((text[~in_class] == top).mean()) * 100 if (~in_class).any() else 0.0
        return (
            f"{share_in:.0f}% of {class_name} images have {what} {top} "
            f"vs {share_out:.0f}% of the other images"
        )

    return effect


def _cast_effect(values: pd.DataFrame, in_class: np.ndarray, class_name: str) -> str:
    diffs = {
        "red": values["red-blue"].to_numpy(dtype=float),
        "green": values["green-magenta"].to_numpy(dtype=float),
    }
    best, delta, inside, outside = "red", 0.0, 0.0, 0.0
    for name, column in diffs.items():
        i, o = float(np.median(column[in_class])), float(np.median(column[~in_class]))
        if abs(i - o) >= abs(delta):
            best, delta, inside, outside = name, i - o, i, o
    tint = {
        ("red", True): "redder",
        ("red", False): "bluer",
        ("green", True): "greener",
        ("green", False): "more magenta",
    }
    axis = "R−B" if best == "red" else "G−(R+B)/2"
    return (
        f"{class_name} images are {tint[(best, delta >= 0)]} than the other images "
        f"(median {axis} {inside:+.0f} vs {outside:+.0f})"
    )


def _size_effect(values: pd.DataFrame, in_class: np.ndarray, class_name: str) -> str:
    sizes = values["width"].astype(int).astype(str) + "×" + values["height"].astype(int).astype(str)
    top = sizes[in_class].value_counts().index[0]
    share_in = float((sizes[in_class] == top).mean()) * 100
    share_out = float((sizes[~in_class] == top).mean()) * 100 if (~in_class).any() else 0.0
    return f"{share_in:.0f}% of {class_name} images are {top} pixels vs {share_out:.0f}% of the other images"


# ----------------------------------------------------------------------------------------------- values


def _col(*names: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda stats: stats[list(names)]


def _colour(stats: pd.DataFrame) -> pd.DataFrame:
    r, g, b = (stats[c].astype(float) for c in ("mean_r", "mean_g", "mean_b"))
    return pd.DataFrame({"red-blue": r - b, "green-magenta": g - (r + b) / 2})


def _aspect(stats: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"aspect_ratio": stats["width"].astype(float) / stats["height"].clip(lower=1)})


def _log_sharpness(stats: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"sharpness": stats["sharpness"].astype(float)})


#: Every property cue, in report order.
PROPERTY_CUES: tuple[PropertyCue, ...] = (
    PropertyCue(
        "brightness",
        "content",
        ("brightness",),
        _col("brightness"),
        _median_effect("brightness", "brighter", "darker"),
    ),
    PropertyCue("colour cast", "content", ("mean_r", "mean_g", "mean_b"), _colour, _cast_effect),
    PropertyCue(
        "contrast",
        "content",
        ("contrast",),
        _col("contrast"),
        _median_effect("contrast", "higher in contrast", "lower in contrast"),
    ),
    PropertyCue(
        "saturation",
        "content",
        ("saturation",),
        _col("saturation"),
        _median_effect("saturation", "more saturated", "less saturated"),
    ),
    PropertyCue(
        "sharpness",
        "content",
        ("sharpness",),
        _log_sharpness,
        _median_effect("sharpness", "sharper", "blurrier"),
    ),
    PropertyCue(
        "file size",
        "content",
        ("file_size",),
        _col("file_size"),
        _median_effect("file_size", "larger", "smaller", " bytes"),
    ),
    PropertyCue(
        "grayscale",
        "unintended",
        ("grayscale",),
        _col("grayscale"),
        _share_effect("grayscale", "grayscale ="),
    ),
    PropertyCue("image size", "unintended", ("width", "height"), _col("width", "height"), _size_effect),
    PropertyCue(
        "aspect ratio",
        "unintended",
        ("width", "height"),
        _aspect,
        _median_effect("aspect_ratio", "wider", "narrower"),
    ),
    PropertyCue("file format", "unintended", ("format",), _col("format"), _share_effect("format", "format")),
    PropertyCue(
        "JPEG quality",
        "unintended",
        ("jpeg_quality",),
        _col("jpeg_quality"),
        _share_effect("jpeg_quality", "JPEG quality"),
    ),
    PropertyCue("camera", "unintended", ("camera",), _col("camera"), _share_effect("camera", "camera")),
)

#: Numeric stats columns used by the combined probe ("all properties together").
COMBINED_COLUMNS: tuple[str, ...] = (
    "brightness", "contrast", "saturation", "mean_r", "mean_g", "mean_b", "sharpness", "entropy",
    "border_r", "border_g", "border_b", "border_std", "width", "height", "file_size", "jpeg_quality",
)  # fmt: skip
