"""Colour handling: any supported Pillow mode → 8-bit RGB.

16-bit and other high-bit-depth images are scaled (not clipped) to 8 bit; CMYK is converted with its ICC
profile when it has one; transparency is composited onto neutral grey (:data:`BACKGROUND_RGB`).
"""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image

from datacheck.images.reading import ImageDecodeError

logger = logging.getLogger(__name__)

#: Colour that transparent pixels are composited onto.
BACKGROUND_RGB: tuple[int, int, int] = (128, 128, 128)

_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def _to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    """Convert any supported mode to 8-bit RGB."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _HIGH_BIT_DEPTH_MODES:
        return _high_bit_depth_to_gray(img, notes).convert("RGB")
    if mode == "CMYK":
        return _cmyk_to_rgb(img, notes)
    if mode in _ALPHA_MODES or (mode == "P" and _palette_has_transparency(img)):
        return _composite_on_background(img.convert("RGBA"), notes)
    try:
        return img.convert("RGB")
    except ValueError as err:
        raise ImageDecodeError(f"unsupported image: cannot convert colour mode {mode} to RGB") from err


def _palette_has_transparency(img: Image.Image) -> bool:
    return "transparency" in img.info or (img.palette is not None and img.palette.mode == "RGBA")


def _high_bit_depth_to_gray(img: Image.Image, notes: list[str]) -> Image.Image:
    """Scale 16-bit, 32-bit integer or float pixels to 8 bit by their nominal range (never clip)."""
    values = np.asarray(img).astype(np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if img.mode.startswith("I;16"):
        scaled = values / 257.0
    elif img.mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif low >= 0.0 and high <= 255.0:
        scaled = values
    elif img.mode == "I" and low >= 0.0 and high <= 65535.0:
        scaled = values / 257.0
    else:
        notes.append(f"{img.mode} pixels stretched from their range {low:g}..{high:g} to 0..255")
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def _cmyk_to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    """CMYK → sRGB through the embedded ICC profile when there is one, else Pillow's formula."""
    icc = img.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(
                img, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
            if converted is not None:
                return converted
        except Exception as err:  # a broken profile must not fail the image: fall back to the formula
            logger.debug("CMYK ICC conversion failed (%s); using the plain formula", err)
    notes.append("CMYK image converted to RGB without a colour profile (colours approximate)")
    return img.convert("RGB")


def _composite_on_background(rgba: Image.Image, notes: list[str]) -> Image.Image:
    """Composite onto :data:`BACKGROUND_RGB` (a plain ``convert("RGB")`` shows whatever hid underneath)."""
    alpha = rgba.getchannel("A")
    low, _ = alpha.getextrema()
    if low == 255:
        return rgba.convert("RGB")
    background = Image.new("RGB", rgba.size, BACKGROUND_RGB)
    background.paste(rgba, mask=alpha)
    notes.append(f"transparent pixels composited onto grey {BACKGROUND_RGB}")
    return background
