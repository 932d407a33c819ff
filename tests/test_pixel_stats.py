"""The compiled pixel statistics agree with plain numpy reductions, within what float32 arithmetic allows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from datacheck.images.stats import (
    BORDER_FRACTION,
    GRAYSCALE_CHROMA_TOLERANCE,
    _analysis_image,
    _pixel_stats,
    _thumbnail,
)

_EPS32 = 2.0**-24  # unit roundoff of float32


def reference_stats(pixels: np.ndarray) -> dict[str, float]:
    """The statistics as numpy reductions over float32 arrays (how they were computed before the kernel)."""
    rgb = pixels.astype(np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    high, low = rgb.max(axis=2), rgb.min(axis=2)
    chroma = high - low
    saturation = np.divide(chroma, high, out=np.zeros_like(chroma), where=high > 0)
    height, width = luma.shape
    ring = max(1, round(BORDER_FRACTION * min(height, width)))
    if 2 * ring >= min(height, width):
        border = rgb.reshape(-1, 3)
    else:
        inner = np.ones((height, width), bool)
        inner[ring:-ring, ring:-ring] = False
        border = rgb[inner]
    sharpness = 0.0
    if min(height, width) >= 3:
        centre = luma[1:-1, 1:-1]
        laplacian = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4.0 * centre
        sharpness = float(laplacian.var())
    levels = np.clip(np.rint(luma), 0, 255).astype(np.uint8)
    p = np.bincount(levels.ravel(), minlength=256) / levels.size
    p = p[p > 0]
    return {
        "brightness": float(luma.mean()),
        "contrast": float(luma.std()),
        "saturation": float(saturation.mean()),
        "mean_r": float(rgb[..., 0].mean()),
        "mean_g": float(rgb[..., 1].mean()),
        "mean_b": float(rgb[..., 2].mean()),
        "sharpness": sharpness,
        "entropy": float(-(p * np.log2(p)).sum()),
        "grayscale": bool(np.count_nonzero(chroma > GRAYSCALE_CHROMA_TOLERANCE) <= 0.01 * chroma.size),
        "border_r": float(border[:, 0].mean()),
        "border_g": float(border[:, 1].mean()),
        "border_b": float(border[:, 2].mean()),
        "border_std": float(border.std(axis=0).mean()),
    }


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (128, 160, 3), dtype=np.uint8)
    ramp = np.broadcast_to(np.linspace(0, 255, 200, dtype=np.float32)[None, :, None], (128, 200, 3))
    gray = np.repeat(rng.integers(0, 256, (130, 128, 1), dtype=np.uint8), 3, axis=2)
    smooth = np.asarray(Image.fromarray(noise).resize((16, 16)).resize((128, 128), Image.Resampling.BICUBIC))
    return [
        noise,
        np.rint(ramp).astype(np.uint8),
        gray,
        smooth,
        np.full((128, 128, 3), 77, np.uint8),  # flat: every spread is exactly 0
        np.zeros((128, 128, 3), np.uint8),  # black: saturation's 0/0 pixels count as 0
        rng.integers(0, 256, (2, 2, 3), dtype=np.uint8),  # too small for a ring or a Laplacian
        rng.integers(0, 256, (5, 9, 3), dtype=np.uint8),
    ]


@pytest.mark.parametrize("index", range(len(_images())))
def test_kernel_matches_numpy_reductions(index: int) -> None:
    pixels = _images()[index]
    got = _pixel_stats(Image.fromarray(pixels), gray_mode=False)
    want = reference_stats(pixels)
    n = pixels.shape[0] * pixels.shape[1]
    # numpy sums float32 pairwise: each mean is off by at most ~log2(n) roundings of the running total
    # (values <= 255, so <= 255 * eps * log2 n); the kernel sums in float64, error negligible beside it.
    rel = 4 * _EPS32 * math.ceil(math.log2(n) + 1)
    means = ("brightness", "mean_r", "mean_g", "mean_b", "border_r", "border_g", "border_b")
    for name in means:
        assert got[name] == pytest.approx(want[name], abs=255.0 * rel), name
    assert got["saturation"] == pytest.approx(want["saturation"], abs=rel)  # values <= 1
    for name in ("contrast", "border_std"):  # deviations of values <= 255: same bound
        assert got[name] == pytest.approx(want[name], abs=255.0 * rel), name
    # Laplacian values reach 4 * 255 and their squares 16 * 255**2: bound relative to that range
    assert got["sharpness"] == pytest.approx(want["sharpness"], abs=16 * 255.0**2 * rel)
    # Luma may differ by one float32 rounding (fused multiply-adds), which moves a pixel whose luma lies
    # within that rounding of a half-integer to the next histogram bin: allow a few such moves, each
    # changing the entropy by at most (log2(n) + 2) / n.
    assert got["entropy"] == pytest.approx(want["entropy"], abs=4 * (math.log2(n) + 2) / n)
    assert got["grayscale"] == want["grayscale"]


def test_flat_images_have_no_spread_and_gray_mode_wins() -> None:
    flat = Image.fromarray(np.full((128, 128, 3), 200, np.uint8))
    stats = _pixel_stats(flat, gray_mode=False)
    assert stats["contrast"] == stats["sharpness"] == stats["border_std"] == stats["entropy"] == 0.0
    assert stats["grayscale"]
    colourful = Image.fromarray(np.tile(np.array([255, 0, 0], np.uint8), (128, 128, 1)))
    assert not _pixel_stats(colourful, gray_mode=False)["grayscale"]
    assert _pixel_stats(colourful, gray_mode=True)["grayscale"]
    assert _pixel_stats(colourful, gray_mode=False)["saturation"] == 1.0


def test_analysis_image_and_thumbnail() -> None:
    small = Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8))
    analysis = _analysis_image(small)
    assert analysis.size == (192, 128)  # short side 128, aspect kept
    thumb = _thumbnail(analysis)
    assert len(thumb) == 32 * 32 * 3
    # the thumbnail is the box average of the analysis image
    expected = np.asarray(analysis, np.float64).reshape(32, 4, 32, 6, 3).mean(axis=(1, 3))
    got = np.frombuffer(thumb, np.uint8).reshape(32, 32, 3)
    assert np.abs(got - expected).max() <= 1.0  # Pillow rounds the 8-bit average
