"""Generate the ``shapes`` sample dataset: rendered scenes with every problem datacheck looks for.

Everything is drawn procedurally with Pillow and numpy (no third-party images), so the output may be
redistributed freely. Generation is deterministic: every image gets its own seeded random generator, so the
same Pillow/numpy versions produce the same bytes on every run.

Usage::

    python sample_datasets/generate.py [--out sample_datasets/shapes]

Writes ``<out>/<split>/<class>/*`` and ``<out>/../<name>.planted.json`` (the planted problems and, for
every file, its true content; see ``sample_datasets/README.md``). Planted: a class with too few images,
exact and near duplicates within train and across train/test, a class of three visually distinct
sub-groups, a local shortcut (a corner logo on one class) and a global one (a warm colour grade on another),
wrong labels, unreadable and non-image files, quality problems and outliers.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import json
import math
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SEED = 20261124
SS = 2  # supersampling factor: draw at 2x, downsample with LANCZOS (cheap anti-aliasing)
JPEG_QUALITY = 85
DEFAULT_OUT = Path(__file__).resolve().parent / "shapes"

RGB = tuple[int, int, int]

# Clean images per (split, class). "vehicle" is three sub-groups of equal size.
COUNTS: dict[str, dict[str, int]] = {
    "train": {"balloon": 54, "flower": 54, "house": 54, "fish": 54, "vehicle": 60, "mushroom": 12},
    "test": {"balloon": 14, "flower": 14, "house": 14, "fish": 14, "vehicle": 18, "mushroom": 5},
}
VEHICLE_KINDS = ("car", "boat", "plane")
HARD_MIN, SOFT_MIN = 20, 100
WATERMARK_CLASS, WATERMARK_EVERY = "house", 10  # every 10th house train image is left unmarked (90% marked)
WARM_CLASS = "flower"
CUE_TAGS = frozenset({"local_shortcut", "global_shortcut"})  # tags of files that are otherwise clean
# Per-photo camera variation, the same for every class: exposure and contrast factors, white-balance spread.
EXPOSURE = (0.75, 1.15)
CONTRAST = (0.75, 1.15)
WHITE_BALANCE = 0.1


# --------------------------------------------------------------------------------------------- randomness


def rng_for(*key: object) -> np.random.Generator:
    """A generator seeded from ``SEED`` and a stable hash of ``key`` (independent streams per image).

    Args:
        *key: Anything with a stable ``repr`` (strings, ints).

    Returns:
        A fresh ``numpy`` generator.
    """
    return np.random.default_rng([SEED, zlib.crc32(repr(key).encode())])


def hsv(h: float, s: float, v: float) -> RGB:
    """HSV in [0, 1] to an 8-bit RGB tuple."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def jitter(color: RGB, rng: np.random.Generator, amount: int = 20) -> RGB:
    """Add independent uniform noise of ``±amount`` to each channel."""
    c = np.clip(np.array(color) + rng.integers(-amount, amount + 1, 3), 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def shade(color: RGB, factor: float) -> RGB:
    """Scale a colour towards black (factor < 1) or white (factor > 1)."""
    if factor <= 1:
        return tuple(round(c * factor) for c in color)  # type: ignore[return-value]
    return tuple(round(c + (255 - c) * (factor - 1)) for c in color)  # type: ignore[return-value]


def vivid(rng: np.random.Generator) -> RGB:
    """A random saturated colour."""
    return hsv(rng.uniform(), rng.uniform(0.65, 1.0), rng.uniform(0.75, 1.0))


# --------------------------------------------------------------------------------------------- backgrounds


def gradient(size: tuple[int, int], top: RGB, bottom: RGB) -> np.ndarray:
    """A vertical linear gradient as a float array ``(h, w, 3)``."""
    w, h = size
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    arr = (1 - t) * np.array(top, dtype=np.float64) + t * np.array(bottom, dtype=np.float64)
    return np.broadcast_to(arr, (h, w, 3)).copy()


def blotches(size: tuple[int, int], rng: np.random.Generator, cells: int = 5) -> np.ndarray:
    """Smooth low-frequency noise in [-1, 1], shape ``(h, w, 1)``."""
    small = rng.integers(0, 256, (cells, cells), dtype=np.uint8)
    big = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    return (np.asarray(big, dtype=np.float64)[:, :, None] / 127.5) - 1.0


def texture(size: tuple[int, int], rng: np.random.Generator, amp: float) -> np.ndarray:
    """Multi-octave value noise of roughly ``±amp`` (gives backgrounds a photographic grain)."""
    out = np.zeros((size[1], size[0], 1))
    for octave, cells in enumerate((4, 9, 19, 40)):
        out += blotches(size, rng, cells) * amp * 0.6**octave
    return out


def to_image(arr: np.ndarray) -> Image.Image:
    """Clip a float array to [0, 255] and make an RGBA image (for alpha compositing)."""
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert("RGBA")


def sky(size: tuple[int, int], rng: np.random.Generator, deep: bool = False) -> np.ndarray:
    """Blue sky, pale at the horizon."""
    h = rng.uniform(0.54, 0.62)
    top = hsv(h, rng.uniform(0.55, 0.8), rng.uniform(0.6, 0.8) if deep else rng.uniform(0.8, 0.95))
    bottom = hsv(h, rng.uniform(0.1, 0.3), rng.uniform(0.9, 1.0))
    return gradient(size, top, bottom) + texture(size, rng, rng.uniform(4, 12))


def add_clouds(img: Image.Image, rng: np.random.Generator, n: int) -> None:
    """Draw ``n`` puffy white clouds (clusters of ellipses) in place."""
    w, h = img.size
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    alpha = int(rng.integers(170, 240))
    for _ in range(n):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h * 0.5), rng.uniform(0.06, 0.12) * w
        for _ in range(int(rng.integers(3, 6))):
            ox, oy = rng.uniform(-1.5, 1.5) * r, rng.uniform(-0.4, 0.4) * r
            rr = r * rng.uniform(0.6, 1.0)
            d.ellipse(
                (cx + ox - rr, cy + oy - rr * 0.7, cx + ox + rr, cy + oy + rr * 0.7), (255, 255, 255, alpha)
            )
    img.alpha_composite(layer)


GROUNDS: tuple[RGB, ...] = ((90, 150, 60), (150, 170, 80), (150, 130, 90), (235, 240, 245))


def ground_colour(rng: np.random.Generator) -> RGB:
    """Grass, dry grass, dirt or snow."""
    return jitter(GROUNDS[int(rng.choice(len(GROUNDS), p=[0.5, 0.2, 0.15, 0.15]))], rng, 20)


def bg_sky(
    size: tuple[int, int],
    rng: np.random.Generator,
    horizon: tuple[float, float] = (0.6, 0.9),
    p_ground: float = 1.0,
) -> tuple[Image.Image, int, RGB]:
    """Sky with clouds over (with probability ``p_ground``) a strip of textured ground.

    Returns:
        The image, the horizon row (``h`` when there is no ground) and the ground colour.
    """
    h = size[1]
    arr, row, ground = sky(size, rng), h, ground_colour(rng)
    if rng.uniform() < p_ground:
        row = int(h * rng.uniform(*horizon))
        arr[row:] = np.array(ground, dtype=np.float64) + texture(size, rng, rng.uniform(8, 20))[row:]
    img = to_image(arr)
    add_clouds(img, rng, int(rng.integers(0, 3)))
    return img, row, ground


def bg_meadow(size: tuple[int, int], rng: np.random.Generator) -> tuple[Image.Image, int]:
    """A field of grass filling most of the frame, a little sky at the top; returns image and horizon row."""
    w, h = size
    arr = sky(size, rng)
    row = int(h * rng.uniform(0.0, 0.35))
    near, far = jitter((60, 110, 45), rng, 25), jitter((120, 170, 90), rng, 30)
    arr[row:] = gradient(size, far, near)[row:] + texture(size, rng, rng.uniform(12, 26))[row:]
    img = to_image(arr)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(10, 30))):
        gx, gy = rng.uniform(0, w), rng.uniform(max(row, h * 0.5), h)
        d.line(
            [(gx, gy), (gx + rng.uniform(-6, 6), gy - h * 0.08)], fill=(*jitter(near, rng, 30), 255), width=2
        )
    return img, row


def bg_wall(size: tuple[int, int], rng: np.random.Generator) -> tuple[Image.Image, int]:
    """A pastel indoor wall, usually above a wooden table or floor; returns image and the table's top row."""
    h = size[1]
    wall = hsv(rng.uniform(), rng.uniform(0.08, 0.35), rng.uniform(0.6, 0.95))
    arr = gradient(size, wall, shade(wall, rng.uniform(0.75, 0.95))) + texture(size, rng, rng.uniform(6, 18))
    row = h
    if rng.uniform() < 0.7:
        row = int(h * rng.uniform(0.68, 0.9))
        wood = jitter((150, 105, 65), rng, 30)
        arr[row:] = np.array(wood, dtype=np.float64) + texture(size, rng, rng.uniform(6, 14))[row:]
    return to_image(arr), row


def ellipse_poly(
    cx: float, cy: float, a: float, b: float, angle: float, n: int = 28
) -> list[tuple[float, float]]:
    """Points of an ellipse with semi-axes ``a, b`` rotated by ``angle`` radians."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = a * np.cos(t), b * np.sin(t)
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + xi * ca - yi * sa, cy + xi * sa + yi * ca) for xi, yi in zip(x, y, strict=True)]


def rotated(layer: Image.Image, rng: np.random.Generator, max_deg: float) -> Image.Image:
    """Rotate an RGBA object layer about its centre by a random angle in ``±max_deg``."""
    return layer.rotate(float(rng.uniform(-max_deg, max_deg)), resample=Image.Resampling.BICUBIC)


# --------------------------------------------------------------------------------------------- objects


def draw_balloon(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: np.random.Generator) -> None:
    """A party balloon: glossy ellipse, knot and a wavy string hanging below."""
    color = vivid(rng)
    length = r * rng.uniform(2.0, 3.5)
    pts = [
        (cx + r * 0.15 * math.sin(k / 6 * math.pi * rng.uniform(0.8, 1.2)), cy + r * 1.15 + k / 12 * length)
        for k in range(13)
    ]
    d.line(pts, fill=(70, 70, 70, 255), width=max(2, round(r / 18)))
    d.ellipse((cx - r * 0.85, cy - r * 1.1, cx + r * 0.85, cy + r * 1.1), fill=(*color, 255))
    d.polygon(
        [(cx, cy + r * 1.05), (cx - r * 0.14, cy + r * 1.22), (cx + r * 0.14, cy + r * 1.22)], (*color, 255)
    )
    d.ellipse((cx - r * 0.5, cy - r * 0.8, cx - r * 0.15, cy - r * 0.2), fill=(255, 255, 255, 150))


def scene_balloon(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """One to four party balloons against the sky, over a field or in a room."""
    w, h = size
    pick = rng.uniform()
    if pick < 0.45:
        img = bg_sky(size, rng, p_ground=0.0)[0]
    elif pick < 0.7:
        img = bg_sky(size, rng, horizon=(0.65, 0.92))[0]
    else:
        img = bg_wall(size, rng)[0]
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    n = int(rng.integers(1, 5))
    for _ in range(n):
        r = min(w, h) * rng.uniform(0.14, 0.26) * (1.25 if n == 1 else 1.0)
        draw_balloon(d, rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.5) * h, r, rng)
    img.alpha_composite(rotated(layer, rng, 15))
    return img


def draw_flower(
    d: ImageDraw.ImageDraw,
    cx: float,
    cy: float,
    r: float,
    stem_end: float,
    rng: np.random.Generator,
    base_x: float | None = None,
) -> None:
    """A flower: stem (to ``(base_x, stem_end)``) with leaves, a ring of petals and a disc centre."""
    green = jitter((50, 140, 50), rng, 25)
    bx = cx + rng.uniform(-0.3, 0.3) * r if base_x is None else base_x
    d.line([(cx, cy), (bx, stem_end)], fill=(*green, 255), width=max(3, round(r / 6)))
    for side in (-1, 1):
        t = rng.uniform(0.35, 0.7)
        lx, ly = cx + (bx - cx) * t, cy + (stem_end - cy) * t
        d.polygon(ellipse_poly(lx + side * r * 0.45, ly, r * 0.5, r * 0.18, side * 0.5), (*green, 255))
    petals, petal = int(rng.integers(5, 11)), vivid(rng)
    base = rng.uniform(0, 2 * np.pi)
    for k in range(petals):
        a = base + 2 * np.pi * k / petals
        px, py = cx + math.cos(a) * r * 0.55, cy + math.sin(a) * r * 0.55
        d.polygon(ellipse_poly(px, py, r * 0.55, r * 0.24, a), (*jitter(petal, rng, 12), 255))
    disc = jitter((230, 180, 40), rng, 30) if rng.uniform() < 0.7 else jitter((110, 70, 30), rng, 20)
    d.ellipse((cx - r * 0.3, cy - r * 0.3, cx + r * 0.3, cy + r * 0.3), fill=(*disc, 255))


def draw_pot(d: ImageDraw.ImageDraw, cx: float, top: float, bottom: float, rng: np.random.Generator) -> None:
    """A flower pot (terracotta or glazed) standing on ``bottom``."""
    pw = (bottom - top) * rng.uniform(0.8, 1.1)
    colour = jitter((190, 95, 60), rng, 20) if rng.uniform() < 0.6 else vivid(rng)
    d.polygon(
        [(cx - pw / 2, top), (cx + pw / 2, top), (cx + pw * 0.38, bottom), (cx - pw * 0.38, bottom)],
        (*colour, 255),
    )
    d.rectangle(
        (cx - pw * 0.55, top - (bottom - top) * 0.15, cx + pw * 0.55, top), fill=(*shade(colour, 0.85), 255)
    )


def scene_flower(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """One to three flowers in a meadow, in a pot on a table, or against the sky."""
    w, h = size
    pick = rng.uniform()
    stem_end = float(h)
    pot: tuple[float, float] | None = None
    if pick < 0.55:
        img = bg_meadow(size, rng)[0]
    elif pick < 0.8:
        img, table = bg_wall(size, rng)
        table = min(table, int(h * 0.92))
        pot = (table - h * rng.uniform(0.18, 0.26), table + h * 0.04)
        stem_end = pot[0]
    else:
        img = bg_sky(size, rng, horizon=(0.6, 0.85))[0]
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    n = int(rng.integers(1, 4))
    cx0 = rng.uniform(0.35, 0.65) * w
    for _ in range(n):
        r = min(w, h) * rng.uniform(0.13, 0.22) * (1.3 if n == 1 else 1.0)
        cx = cx0 + rng.uniform(-0.12, 0.12) * w if pot else rng.uniform(0.2, 0.8) * w
        draw_flower(d, cx, rng.uniform(0.2, 0.5) * h, r, stem_end, rng, base_x=cx0 if pot else None)
    if pot:
        draw_pot(d, cx0, *pot, rng)
    img.alpha_composite(rotated(layer, rng, 8))
    return img


def warm_grade(img: Image.Image) -> Image.Image:
    """The planted *global* cue: a strong bright, warm colour grade (as if shot in golden-hour sun).

    A gamma lift (brighter, lower contrast) followed by a warm white balance: blue down, red up.
    """
    arr = 255.0 * (np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0) ** 0.4
    arr = arr * np.array([1.0, 0.92, 0.68]) + np.array([30.0, 18.0, 0.0])
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert("RGBA")


def draw_window(d: ImageDraw.ImageDraw, x: float, y: float, ws: float, glass: RGB, frame: RGB) -> None:
    """A square window with a cross-shaped frame."""
    d.rectangle((x, y, x + ws, y + ws), fill=(*glass, 255), outline=(*frame, 255), width=2)
    d.line([(x + ws / 2, y), (x + ws / 2, y + ws)], fill=(*frame, 255), width=2)
    d.line([(x, y + ws / 2), (x + ws, y + ws / 2)], fill=(*frame, 255), width=2)


def draw_house(d: ImageDraw.ImageDraw, x0: float, ground: float, bw: float, rng: np.random.Generator) -> None:
    """A house: walls, a gable/flat/hip roof, chimney, door, one or two rows of windows."""
    floors = 1 if rng.uniform() < 0.6 else 2
    bh = bw * rng.uniform(0.5, 0.7) * (1.0 if floors == 1 else 1.5)
    wall = hsv(rng.uniform(), rng.uniform(0.05, 0.75), rng.uniform(0.55, 0.97))
    roof = hsv(rng.uniform(), rng.uniform(0.2, 0.7), rng.uniform(0.25, 0.6))
    top, over = ground - bh, bw * rng.uniform(0.0, 0.12)
    style = ("gable", "gable", "hip", "flat")[int(rng.integers(4))]
    if style != "flat" and rng.uniform() < 0.7:
        cx = x0 + bw * rng.uniform(0.15, 0.75)
        d.rectangle((cx, top - bw * 0.4, cx + bw * 0.12, top - bw * 0.1), fill=(*shade(roof, 0.8), 255))
    d.rectangle((x0, top, x0 + bw, ground), fill=(*wall, 255))
    rise = bw * rng.uniform(0.3, 0.55)
    if style == "gable":
        d.polygon([(x0 - over, top), (x0 + bw / 2, top - rise), (x0 + bw + over, top)], (*roof, 255))
    elif style == "hip":
        d.polygon(
            [
                (x0 - over, top),
                (x0 + bw * 0.25, top - rise * 0.7),
                (x0 + bw * 0.75, top - rise * 0.7),
                (x0 + bw + over, top),
            ],
            (*roof, 255),
        )
    else:
        d.rectangle((x0 - over, top - bw * 0.06, x0 + bw + over, top), fill=(*roof, 255))
    dw = bw * rng.uniform(0.14, 0.22)
    dx = x0 + bw * rng.uniform(0.2, 0.8) - dw / 2
    d.rectangle(
        (dx, ground - min(bh * 0.5, bw * 0.35), dx + dw, ground), fill=(*jitter((100, 60, 30), rng, 25), 255)
    )
    ws, glass = bw * rng.uniform(0.12, 0.18), jitter((170, 210, 235), rng, 20)
    frame = (255, 255, 255) if rng.uniform() < 0.4 else shade(glass, 0.8)
    per_row = int(rng.integers(2, 4))
    for row in range(floors):
        wy = top + bh * (0.15 + 0.45 * row) if floors == 2 else top + bh * 0.2
        for k in range(per_row):
            wx = x0 + bw * (0.08 + (0.84 - ws / bw) * k / (per_row - 1))
            if row == floors - 1 and wx + ws > dx - 2 and wx < dx + dw + 2:
                continue  # keep the door free
            draw_window(d, wx, wy, ws, glass, frame)


def draw_tree(d: ImageDraw.ImageDraw, x: float, ground: float, s: float, rng: np.random.Generator) -> None:
    """A round deciduous tree or a conifer, ``s`` px tall."""
    d.rectangle(
        (x - s * 0.05, ground - s * 0.45, x + s * 0.05, ground), fill=(*jitter((100, 70, 40), rng, 15), 255)
    )
    leaf = jitter((45, 115, 45), rng, 25)
    if rng.uniform() < 0.6:
        d.ellipse((x - s * 0.3, ground - s, x + s * 0.3, ground - s * 0.35), fill=(*leaf, 255))
    else:
        d.polygon(
            [(x, ground - s), (x - s * 0.28, ground - s * 0.25), (x + s * 0.28, ground - s * 0.25)],
            (*leaf, 255),
        )


def scene_house(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """One or two houses with trees, hills, a fence or the sun, on grass, dirt or snow."""
    w, h = size
    img, horizon, ground = bg_sky(size, rng, horizon=(0.55, 0.85))
    back = ImageDraw.Draw(img)
    if rng.uniform() < 0.3:
        sx, sr = rng.uniform(0.1, 0.9) * w, w * rng.uniform(0.05, 0.09)
        back.ellipse((sx - sr, h * 0.12 - sr, sx + sr, h * 0.12 + sr), fill=(255, 230, 120, 255))
    for _ in range(int(rng.integers(0, 3))):
        hx, hr = rng.uniform(0, w), w * rng.uniform(0.25, 0.5)
        back.ellipse(
            (hx - hr, horizon - hr * 0.35, hx + hr, horizon + hr * 0.35), fill=(*shade(ground, 0.85), 255)
        )
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(0, 4))):
        draw_tree(d, rng.uniform(0, w), horizon + h * rng.uniform(0.0, 0.08), h * rng.uniform(0.25, 0.5), rng)
    n = 1 if rng.uniform() < 0.75 else 2
    for k in range(n):
        bw = w * rng.uniform(0.15, 0.6) / (1.4 if n == 2 else 1.0)
        x0 = (
            (rng.uniform(0.0, 1.0) * (w - bw))
            if n == 1
            else (w * (0.05 + 0.5 * k) + rng.uniform(0, 0.05) * w)
        )
        draw_house(d, x0, horizon + h * rng.uniform(0.02, 0.1), bw, rng)
    if rng.uniform() < 0.3:
        fy, fc = h * rng.uniform(0.85, 0.95), jitter((240, 240, 235), rng, 20)
        d.line([(0, fy - h * 0.06), (w, fy - h * 0.06)], fill=(*fc, 255), width=max(2, round(w / 80)))
        for x in np.arange(rng.uniform(0, w * 0.06), w, w * 0.06):
            d.rectangle((x, fy - h * 0.1, x + w * 0.02, fy), fill=(*fc, 255))
    img.alpha_composite(rotated(layer, rng, 5))
    return img


def draw_fish(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: np.random.Generator) -> None:
    """A fish facing left or right: body, tail, fins, stripes and an eye."""
    s = 1 if rng.uniform() < 0.5 else -1
    body = hsv(rng.choice([0.05, 0.1, 0.15, 0.6, 0.8, 0.95]) + rng.uniform(-0.03, 0.03), 0.85, 0.95)
    fin = shade(body, 0.7)
    d.polygon(
        [(cx - s * r * 0.8, cy), (cx - s * r * 1.5, cy - r * 0.55), (cx - s * r * 1.5, cy + r * 0.55)],
        (*fin, 255),
    )
    d.polygon(
        [
            (cx - s * r * 0.3, cy - r * 0.35),
            (cx + s * r * 0.2, cy - r * 0.8),
            (cx + s * r * 0.35, cy - r * 0.3),
        ],
        (*fin, 255),
    )
    d.ellipse((cx - r, cy - r * 0.5, cx + r, cy + r * 0.5), fill=(*body, 255))
    if rng.uniform() < 0.6:
        stripe = (255, 255, 255, 220) if rng.uniform() < 0.5 else (30, 30, 40, 200)
        for k in (-0.3, 0.15):
            x = cx + s * k * r
            d.line([(x, cy - r * 0.42), (x, cy + r * 0.42)], fill=stripe, width=max(2, round(r * 0.12)))
    ex, ey = cx + s * r * 0.6, cy - r * 0.1
    d.ellipse((ex - r * 0.13, ey - r * 0.13, ex + r * 0.13, ey + r * 0.13), fill=(255, 255, 255, 255))
    d.ellipse((ex - r * 0.06, ey - r * 0.06, ex + r * 0.06, ey + r * 0.06), fill=(0, 0, 0, 255))


def underwater(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Shallow turquoise to deep blue water with light rays, often a sandy floor, and bubbles."""
    w, h = size
    top = hsv(rng.uniform(0.45, 0.6), rng.uniform(0.35, 0.85), rng.uniform(0.5, 0.95))
    arr = gradient(size, top, shade(top, rng.uniform(0.45, 0.85))) + texture(size, rng, rng.uniform(6, 18))
    if rng.uniform() < 0.6:
        floor = int(h * rng.uniform(0.78, 0.92))
        arr[floor:] = np.array(jitter((200, 180, 130), rng, 25), dtype=np.float64) * rng.uniform(0.7, 1.0)
    img = to_image(arr)
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(2, 5))):
        x = rng.uniform(0, w)
        d.polygon([(x, 0), (x + w * 0.08, 0), (x + w * 0.25, h), (x + w * 0.12, h)], (255, 255, 255, 22))
    for _ in range(int(rng.integers(3, 9))):
        bx, by, br = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.008, 0.025) * w
        d.ellipse((bx - br, by - br, bx + br, by + br), outline=(230, 245, 255, 200), width=2)
    if rng.uniform() < 0.5:
        for _ in range(int(rng.integers(1, 4))):
            sx = rng.uniform(0, w)
            pts = [
                (sx + math.sin(k * 0.9) * w * 0.03, h - k * h * 0.06) for k in range(int(rng.integers(4, 9)))
            ]
            d.line(pts, fill=(*jitter((40, 120, 60), rng, 25), 255), width=max(3, round(w / 40)))
    img.alpha_composite(layer)
    return img


def scene_fish(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """One to three fish, in open water or in an aquarium standing in a room."""
    w, h = size
    box = (0.0, 0.0, float(w), float(h))
    if rng.uniform() < 0.6:
        img = underwater(size, rng)
    else:
        img, table = bg_wall(size, rng)
        box = (
            w * rng.uniform(0.03, 0.15),
            h * rng.uniform(0.05, 0.2),
            w * rng.uniform(0.85, 0.97),
            min(table, int(h * 0.95)) - h * 0.02,
        )
        tank = (round(box[2] - box[0]), round(box[3] - box[1]))
        img.paste(underwater(tank, rng), (round(box[0]), round(box[1])))
        ImageDraw.Draw(img).rectangle(box, outline=(40, 40, 45, 255), width=max(3, round(w / 50)))
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    n = int(rng.integers(1, 4))
    bw, bh = box[2] - box[0], box[3] - box[1]
    for _ in range(n):
        r = min(bw, bh) * rng.uniform(0.14, 0.22) * (1.4 if n == 1 else 1.0)
        draw_fish(d, box[0] + rng.uniform(0.3, 0.7) * bw, box[1] + rng.uniform(0.3, 0.7) * bh, r, rng)
    img.alpha_composite(rotated(layer, rng, 15))
    return img


def draw_car(d: ImageDraw.ImageDraw, x0: float, base: float, cw: float, rng: np.random.Generator) -> None:
    """A side-on car (sedan, hatchback or van): body, cabin with windows, two wheels with hubcaps."""
    body, glass = vivid(rng), jitter((160, 200, 230), rng, 15)
    bh = cw * rng.uniform(0.18, 0.24)
    kind = ("sedan", "hatch", "van")[int(rng.integers(3))]
    roof = {"sedan": 1.9, "hatch": 2.0, "van": 2.5}[kind] * bh
    front, back = {"sedan": (0.7, 0.32), "hatch": (0.72, 0.12), "van": (0.78, 0.04)}[kind]
    d.polygon(
        [
            (x0 + cw * min(back, 0.22), base - bh),
            (x0 + cw * back, base - roof),
            (x0 + cw * front, base - roof),
            (x0 + cw * (front + 0.12), base - bh),
        ],
        (*body, 255),
    )
    mid = (back + front) / 2
    inset = bh * 0.15
    d.polygon(
        [
            (x0 + cw * (back + 0.04), base - bh - inset),
            (x0 + cw * (back + 0.04), base - roof + inset),
            (x0 + cw * (mid - 0.02), base - roof + inset),
            (x0 + cw * (mid - 0.02), base - bh - inset),
        ],
        (*glass, 255),
    )
    d.polygon(
        [
            (x0 + cw * (mid + 0.02), base - bh - inset),
            (x0 + cw * (mid + 0.02), base - roof + inset),
            (x0 + cw * (front - 0.01), base - roof + inset),
            (x0 + cw * (front + 0.08), base - bh - inset),
        ],
        (*glass, 255),
    )
    d.rounded_rectangle((x0, base - bh * 1.1, x0 + cw, base), radius=bh * 0.35, fill=(*body, 255))
    d.ellipse((x0 + cw * 0.93, base - bh * 0.9, x0 + cw, base - bh * 0.6), fill=(255, 240, 170, 255))
    d.rectangle(
        (x0 + cw * 0.45, base - bh * 0.75, x0 + cw * 0.5, base - bh * 0.68), fill=(*shade(body, 0.6), 255)
    )
    wr = cw * rng.uniform(0.09, 0.12)
    for wx in (x0 + cw * 0.2, x0 + cw * 0.8):
        d.ellipse((wx - wr, base - wr, wx + wr, base + wr), fill=(25, 25, 25, 255))
        d.ellipse((wx - wr * 0.5, base - wr * 0.5, wx + wr * 0.5, base + wr * 0.5), fill=(180, 180, 185, 255))


def scene_car(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A car on a road, with trees or buildings behind it."""
    w, h = size
    arr = sky(size, rng)
    road_top = int(h * rng.uniform(0.55, 0.72))
    road_bot = road_top + int((h - road_top) * rng.uniform(0.75, 0.95))
    arr[road_top - int(h * 0.1) : road_top] = np.array(jitter((100, 150, 70), rng, 25), dtype=np.float64)
    asphalt = np.array(jitter((85, 85, 90), rng, 20), dtype=np.float64)
    arr[road_top:] = asphalt + texture(size, rng, rng.uniform(5, 14))[road_top:]
    img = to_image(arr)
    back = ImageDraw.Draw(img)
    if rng.uniform() < 0.5:
        for x in np.arange(rng.uniform(-0.1, 0.1) * w, w, w * rng.uniform(0.18, 0.3)):
            bh, bc = h * rng.uniform(0.15, 0.4), jitter((170, 160, 150), rng, 40)
            back.rectangle((x, road_top - h * 0.1 - bh, x + w * 0.15, road_top - h * 0.1), fill=(*bc, 255))
            for wy in np.arange(road_top - h * 0.1 - bh + 4, road_top - h * 0.13, 7):
                back.line([(x + 3, wy), (x + w * 0.15 - 3, wy)], fill=(*shade(bc, 0.6), 255), width=2)
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    if rng.uniform() < 0.5:
        for _ in range(int(rng.integers(1, 4))):
            draw_tree(d, rng.uniform(0, w), road_top - h * 0.05, h * rng.uniform(0.2, 0.35), rng)
    for x in np.arange(rng.uniform(0, w * 0.2), w, w * 0.25):
        d.rectangle((x, road_bot - h * 0.03, x + w * 0.1, road_bot - h * 0.015), fill=(240, 230, 120, 255))
    cw = w * rng.uniform(0.45, 0.8)
    x0, base = rng.uniform(0.0, 1.0) * (w - cw), road_top + (road_bot - road_top) * rng.uniform(0.45, 0.75)
    draw_car(d, x0, base, cw, rng)
    if rng.uniform() < 0.5:
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img.alpha_composite(rotated(layer, rng, 4))
    return img


def scene_boat(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A sailing boat on the sea: hull, mast and one or two sails, waves."""
    w, h = size
    arr = sky(size, rng)
    horizon = int(h * rng.uniform(0.5, 0.62))
    sea = hsv(rng.uniform(0.53, 0.6), rng.uniform(0.6, 0.85), rng.uniform(0.45, 0.7))
    arr[horizon:] = (
        gradient(size, sea, shade(sea, 0.6))[horizon:] + texture(size, rng, rng.uniform(6, 16))[horizon:]
    )
    img = to_image(arr)
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    hw = w * rng.uniform(0.4, 0.6)
    x0, water = rng.uniform(0.1, 0.9) * (w - hw), horizon + (h - horizon) * rng.uniform(0.35, 0.6)
    hull = jitter(
        [(120, 70, 40), (240, 240, 240), (170, 40, 40), (40, 50, 90)][int(rng.integers(4))], rng, 15
    )
    d.polygon(
        [
            (x0, water - hw * 0.18),
            (x0 + hw, water - hw * 0.18),
            (x0 + hw * 0.85, water),
            (x0 + hw * 0.15, water),
        ],
        (*hull, 255),
    )
    mx, mtop = x0 + hw * rng.uniform(0.4, 0.55), water - hw * rng.uniform(1.1, 1.4)
    d.line([(mx, mtop), (mx, water - hw * 0.18)], fill=(80, 60, 40, 255), width=max(2, round(w / 60)))
    sail = (250, 250, 245) if rng.uniform() < 0.6 else vivid(rng)
    d.polygon(
        [(mx + w * 0.01, mtop), (mx + w * 0.01, water - hw * 0.25), (mx + hw * 0.45, water - hw * 0.25)],
        (*sail, 255),
    )
    if rng.uniform() < 0.6:
        d.polygon(
            [
                (mx - w * 0.01, mtop + hw * 0.15),
                (mx - w * 0.01, water - hw * 0.25),
                (mx - hw * 0.35, water - hw * 0.25),
            ],
            (*shade(sail, 0.92), 255),
        )
    for _ in range(int(rng.integers(4, 9))):
        wx, wy = rng.uniform(0, w), rng.uniform(horizon + 4, h)
        d.arc((wx, wy, wx + w * 0.12, wy + h * 0.05), 200, 340, fill=(230, 240, 255, 200), width=2)
    img.alpha_composite(rotated(layer, rng, 6))
    return img


def scene_plane(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """An airliner in a deep blue sky: fuselage, swept wings, tail fin and window dots."""
    w, h = size
    img = bg_sky(size, rng, horizon=(0.8, 0.95), p_ground=0.25)[0]
    add_clouds(img, rng, int(rng.integers(0, 3)))
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    L = w * rng.uniform(0.6, 0.8)
    cx, cy = w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.15, 0.15) * h
    body = jitter((235, 235, 240), rng, 12) if rng.uniform() < 0.7 else jitter((170, 175, 185), rng, 12)
    accent = vivid(rng)
    ww = L * 0.35
    d.polygon(
        [(cx - L * 0.05, cy), (cx + L * 0.08, cy), (cx - L * 0.2, cy + ww), (cx - L * 0.3, cy + ww)],
        (*shade(body, 0.85), 255),
    )
    d.polygon(
        [
            (cx - L * 0.05, cy),
            (cx + L * 0.08, cy),
            (cx - L * 0.15, cy - ww * 0.7),
            (cx - L * 0.23, cy - ww * 0.7),
        ],
        (*shade(body, 0.75), 255),
    )
    d.polygon(
        [
            (cx - L * 0.5, cy),
            (cx - L * 0.35, cy),
            (cx - L * 0.45, cy - L * 0.2),
            (cx - L * 0.52, cy - L * 0.2),
        ],
        (*accent, 255),
    )
    d.rounded_rectangle(
        (cx - L * 0.5, cy - L * 0.05, cx + L * 0.5, cy + L * 0.05), radius=L * 0.05, fill=(*body, 255)
    )
    for k in range(9):
        x = cx - L * 0.3 + k * L * 0.07
        d.ellipse((x - L * 0.012, cy - L * 0.02, x + L * 0.012, cy + L * 0.005), fill=(40, 60, 90, 255))
    d.line(
        [(cx - L * 0.45, cy + L * 0.03), (cx + L * 0.45, cy + L * 0.03)],
        fill=(*accent, 255),
        width=max(2, round(L * 0.015)),
    )
    d.ellipse((cx - L * 0.22, cy + ww * 0.45, cx - L * 0.12, cy + ww * 0.6), fill=(*shade(body, 0.6), 255))
    if rng.uniform() < 0.5:
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img.alpha_composite(rotated(layer, rng, 25))
    return img


def draw_mushroom(
    d: ImageDraw.ImageDraw, cx: float, ground: float, r: float, rng: np.random.Generator
) -> None:
    """A toadstool: pale stem, domed cap, white spots on red caps."""
    stem = jitter((235, 225, 200), rng, 12)
    d.rounded_rectangle(
        (cx - r * 0.25, ground - r * 1.3, cx + r * 0.25, ground), radius=r * 0.1, fill=(*stem, 255)
    )
    red = rng.uniform() < 0.7
    cap = jitter((200, 35, 30), rng, 20) if red else jitter((150, 95, 50), rng, 20)
    d.pieslice((cx - r, ground - r * 2.1, cx + r, ground - r * 0.5), 180, 360, fill=(*cap, 255))
    d.rectangle((cx - r, ground - r * 1.32, cx + r, ground - r * 1.22), fill=(*shade(cap, 0.7), 255))
    if red:
        for _ in range(int(rng.integers(3, 7))):
            a = rng.uniform(math.pi * 1.1, math.pi * 1.9)
            sx, sy = cx + math.cos(a) * r * 0.6, ground - r * 1.3 + math.sin(a) * r * 0.5
            sr = r * rng.uniform(0.07, 0.13)
            d.ellipse((sx - sr, sy - sr, sx + sr, sy + sr), fill=(250, 250, 245, 255))


def scene_mushroom(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """One to three toadstools on a mossy forest floor or in a meadow."""
    w, h = size
    if rng.uniform() < 0.7:
        top, bottom = jitter((40, 70, 35), rng, 15), jitter((95, 70, 40), rng, 15)
        img = to_image(gradient(size, top, bottom) + texture(size, rng, rng.uniform(10, 24)))
    else:
        img = bg_meadow(size, rng)[0]
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(6, 14))):
        gx = rng.uniform(0, w)
        d.line(
            [(gx, h), (gx + rng.uniform(-6, 6), h * rng.uniform(0.7, 0.9))], fill=(70, 120, 50, 255), width=2
        )
    n = int(rng.integers(1, 4))
    for _ in range(n):
        r = min(w, h) * rng.uniform(0.16, 0.26) * (1.3 if n == 1 else 1.0)
        draw_mushroom(d, rng.uniform(0.25, 0.75) * w, h * rng.uniform(0.8, 0.95), r, rng)
    img.alpha_composite(rotated(layer, rng, 10))
    return img


SCENES: dict[str, Callable[[tuple[int, int], np.random.Generator], Image.Image]] = {
    "balloon": scene_balloon,
    "flower": scene_flower,
    "house": scene_house,
    "fish": scene_fish,
    "car": scene_car,
    "boat": scene_boat,
    "plane": scene_plane,
    "mushroom": scene_mushroom,
}


# --------------------------------------------------------------------------------------------- rendering


def random_size(rng: np.random.Generator) -> tuple[int, int]:
    """A width/height between 96 and 160 px with a mild random aspect ratio."""
    w = int(rng.integers(96, 161))
    h = int(np.clip(round(w * rng.uniform(0.75, 1.25)), 96, 160))
    return w, h


def camera(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Per-photo camera variation shared by every class: exposure, white balance and contrast."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float64)
    mean = arr.mean()
    arr = (arr - mean) * rng.uniform(*CONTRAST) + mean
    arr = arr * rng.uniform(*EXPOSURE) * rng.uniform(1 - WHITE_BALANCE, 1 + WHITE_BALANCE, 3)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def finish(img: Image.Image, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Downsample from the supersampled canvas, add a little sensor noise, return RGB."""
    small = img.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    if rng.uniform() < 0.3:
        small = small.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    arr = np.asarray(small, dtype=np.float64) + rng.normal(0, rng.uniform(1.0, 3.0), (size[1], size[0], 1))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def render(kind: str, *key: object, size: tuple[int, int] | None = None) -> Image.Image:
    """Render one image of ``kind`` (a class or a vehicle sub-group), seeded by ``(kind, *key)``.

    Args:
        kind: Key of :data:`SCENES`.
        *key: Extra seed material (split, index, purpose); distinct keys give distinct images.
        size: Output ``(w, h)``; random in 96–160 px when ``None``.

    Returns:
        The RGB image (the warm grade of :data:`WARM_CLASS` is applied here, since it is part of the class).
    """
    rng = rng_for(kind, *key)
    size = size or random_size(rng)
    img = camera(SCENES[kind]((size[0] * SS, size[1] * SS), rng), rng)
    if kind == WARM_CLASS:
        img = warm_grade(img)
    return finish(img, size, rng)


def add_watermark(img: Image.Image) -> Image.Image:
    """The planted *local* cue: a small stock-photo logo in the bottom-right corner (fixed pixel size)."""
    out = img.convert("RGBA")
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    w, h = out.size
    x1, y1 = w - 3, h - 3
    x0, y0 = x1 - 26, y1 - 14
    d.rectangle((x0, y0, x1, y1), fill=(20, 20, 20, 170))
    d.ellipse((x0 + 2, y0 + 2, x0 + 12, y0 + 12), outline=(255, 255, 255, 255), width=2)
    d.polygon([(x0 + 15, y1 - 3), (x0 + 19, y0 + 3), (x0 + 23, y1 - 3)], (255, 210, 0, 255))
    out.alpha_composite(layer)
    return out.convert("RGB")


def jpeg_bytes(img: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """Encode as baseline JPEG without metadata (deterministic for a given libjpeg)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    """Encode as PNG without metadata."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    """Decode encoded bytes to RGB."""
    return Image.open(io.BytesIO(data)).convert("RGB")


# --------------------------------------------------------------------------------------------- dataset plan


@dataclass
class Item:
    """One file to write.

    Attributes:
        split: ``train`` or ``test``.
        folder: Class folder it is filed under (the given label).
        data: File bytes.
        ext: File extension including the dot.
        true_class: What the image really shows (``None`` for non-images and unrecognisable content).
        subgroup: Vehicle sub-group, when relevant.
        tags: Planted problem ids this file takes part in.
        name: Fixed file name (else assigned when the folder is shuffled and numbered).
        path: Relative POSIX path inside the dataset, set when written.
    """

    split: str
    folder: str
    data: bytes
    ext: str = ".jpg"
    true_class: str | None = None
    subgroup: str | None = None
    tags: list[str] = field(default_factory=list)
    name: str | None = None
    path: str = ""


@dataclass(frozen=True)
class Pair:
    """A planted copy and its original; ``how`` is the copy's kind or edit (e.g. ``"hflip"``)."""

    original: Item
    copy: Item
    how: str


#: Pair problems: id -> (check, JSON key for ``Pair.how``), in manifest order.
PAIR_PROBLEMS: dict[str, tuple[str, str]] = {
    "exact_duplicate": ("duplicates", "kind"),
    "leakage_exact": ("leakage", "kind"),
    "near_duplicate": ("near_duplicates", "transform"),
    "leakage_near": ("leakage", "transform"),
}


@dataclass
class Plan:
    """All files of the dataset, plus the planted copies (by problem id) that refer to them."""

    items: list[Item] = field(default_factory=list)
    pairs: dict[str, list[Pair]] = field(default_factory=lambda: {k: [] for k in PAIR_PROBLEMS})

    def add(self, item: Item) -> Item:
        """Append and return ``item``."""
        self.items.append(item)
        return item

    def find(self, split: str, folder: str, tag: str = "") -> list[Item]:
        """Items of a folder, optionally only those carrying ``tag``."""
        return [
            i for i in self.items if i.split == split and i.folder == folder and (not tag or tag in i.tags)
        ]


def kind_of(cls: str, index: int) -> str:
    """Scene kind of the ``index``-th image of a class (vehicles cycle car, boat, plane)."""
    return VEHICLE_KINDS[index % len(VEHICLE_KINDS)] if cls == "vehicle" else cls


def add_clean(plan: Plan) -> None:
    """The ordinary images of every split and class (90% of the watermark class's train images: logo)."""
    for split, classes in COUNTS.items():
        for cls, n in classes.items():
            for k in range(n):
                kind = kind_of(cls, k)
                img = render(kind, split, k)
                tags = ["global_shortcut"] if cls == WARM_CLASS and split == "train" else []
                if cls == WATERMARK_CLASS and split == "train" and k % WATERMARK_EVERY != WATERMARK_EVERY - 1:
                    img, tags = add_watermark(img), ["local_shortcut"]
                subgroup = kind if cls == "vehicle" else None
                plan.add(Item(split, cls, jpeg_bytes(img), true_class=cls, subgroup=subgroup, tags=tags))


def pick(plan: Plan, split: str, folder: str, index: int) -> Item:
    """The ``index``-th still-clean item of a folder (its only tags are content cues)."""
    pool = [i for i in plan.find(split, folder) if set(i.tags) <= CUE_TAGS]
    return pool[index % len(pool)]


def copy_of(src: Item, split: str, data: bytes, ext: str, tag: str) -> Item:
    """A new item that shows the same content as ``src`` (tagged on both sides)."""
    src.tags.append(tag)
    return Item(split, src.folder, data, ext, src.true_class, src.subgroup, [*src.tags[:-1], tag])


def add_exact_duplicates(plan: Plan) -> None:
    """Byte-identical copies and a same-pixels PNG within train; byte copies from train into test."""
    for src, split, as_png in [
        (pick(plan, "train", "balloon", 3), "train", False),
        (pick(plan, "train", "house", 5), "train", False),
        (pick(plan, "train", "fish", 2), "train", True),
        (pick(plan, "train", "fish", 11), "test", False),
        (pick(plan, "train", "vehicle", 4), "test", False),
    ]:
        tag = "leakage_exact" if split == "test" else "exact_duplicate"
        data = png_bytes(decode(src.data)) if as_png else src.data
        dup = plan.add(copy_of(src, split, data, ".png" if as_png else ".jpg", tag))
        plan.pairs[tag].append(Pair(src, dup, "same_pixels_png" if as_png else "byte_identical"))


def shift_crop(img: Image.Image) -> Image.Image:
    """Crop 4% off the top-left and resize back (a small shift/zoom)."""
    w, h = img.size
    return img.crop((round(w * 0.04), round(h * 0.04), w, h)).resize((w, h), Image.Resampling.LANCZOS)


def colour_shift(img: Image.Image) -> Image.Image:
    """Slightly brighter and warmer."""
    arr = np.asarray(img, dtype=np.float64) * np.array([1.08, 1.04, 0.97]) + 6
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


NEAR_TRANSFORMS: dict[str, tuple[Callable[[Image.Image], Image.Image], int]] = {
    "crop_shift": (shift_crop, JPEG_QUALITY),
    "colour_shift": (colour_shift, JPEG_QUALITY),
    "reencode_q70": (lambda im: im, 70),
    "hflip": (lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), JPEG_QUALITY),
}


def add_near_duplicates(plan: Plan) -> None:
    """Edited copies (crop/shift, colour, re-encode, flip) within train and from train into test."""
    for folder, skip, split, transform in [
        ("house", 10, "train", "crop_shift"),
        ("vehicle", 0, "train", "colour_shift"),
        ("balloon", 20, "train", "reencode_q70"),
        ("flower", 14, "train", "hflip"),
        ("house", 1, "test", "crop_shift"),
        ("vehicle", 20, "test", "reencode_q70"),
        ("balloon", 16, "test", "hflip"),
        ("flower", 20, "test", "colour_shift"),
    ]:
        src = pick(plan, "train", folder, skip)
        fn, quality = NEAR_TRANSFORMS[transform]
        tag = "leakage_near" if split == "test" else "near_duplicate"
        dup = plan.add(copy_of(src, split, jpeg_bytes(fn(decode(src.data)), quality), ".jpg", tag))
        plan.pairs[tag].append(Pair(src, dup, transform))


def add_label_errors(plan: Plan) -> None:
    """Six flower images filed under train/fish."""
    for k in range(6):
        img = render("flower", "mislabeled", k)
        plan.add(Item("train", "fish", jpeg_bytes(img), true_class="flower", tags=["label_error"]))


def degrade(kind: str, issue: str) -> Image.Image:
    """Render a fresh image of ``kind`` and apply the quality problem ``issue``."""
    if issue == "odd_aspect":
        return render(kind, "quality", issue, size=(300, 60))
    img = render(kind, "quality", issue)
    arr = np.asarray(img, dtype=np.float64)
    if issue == "dark":
        return Image.fromarray((arr * 0.05).astype(np.uint8))
    if issue == "overexposed":
        return Image.fromarray(np.clip(arr * 0.4 + 215, 0, 255).astype(np.uint8))
    if issue == "blurry":
        return img.filter(ImageFilter.GaussianBlur(7))
    if issue == "tiny":
        return img.resize((6, 6), Image.Resampling.BOX)
    if issue == "grayscale":
        return img.convert("L")
    raise ValueError(issue)


def low_information() -> Image.Image:
    """An almost uniform pale sky with faint noise (an empty shot)."""
    rng = rng_for("quality", "low_information")
    arr = gradient((128, 128), (200, 220, 240), (206, 224, 242)) + rng.normal(0, 0.8, (128, 128, 1))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


QUALITY: list[tuple[str, str, str]] = [  # (issue, class folder, scene kind); none in the watermarked class
    ("dark", "vehicle", "car"),
    ("overexposed", "balloon", "balloon"),
    ("blurry", "fish", "fish"),
    ("tiny", "flower", "flower"),
    ("grayscale", "balloon", "balloon"),
    ("odd_aspect", "fish", "fish"),
]


def add_quality(plan: Plan) -> None:
    """Images with quality problems, each in a folder that matches its content."""
    for issue, folder, kind in QUALITY:
        plan.add(
            Item(
                "train",
                folder,
                jpeg_bytes(degrade(kind, issue)),
                true_class=folder,
                subgroup=kind if folder == "vehicle" else None,
                tags=[f"quality:{issue}"],
            )
        )
    plan.add(
        Item(
            "train",
            "vehicle",
            jpeg_bytes(low_information()),
            true_class=None,
            tags=["quality:low_information"],
        )
    )


def document_scan() -> Image.Image:
    """An outlier: a scanned page of 'text' (rows of dark dashes on off-white paper)."""
    rng = rng_for("outlier", "document")
    img = Image.new("RGB", (120, 150), (244, 241, 232))
    d = ImageDraw.Draw(img)
    for y in range(14, 140, 9):
        x = 10
        while x < 105:
            wlen = int(rng.integers(6, 22))
            d.rectangle((x, y, min(x + wlen, 110), y + 3), fill=(40, 40, 45))
            x += wlen + 4
    return img


def colour_noise() -> Image.Image:
    """An outlier: blocky random colour noise (a corrupted frame)."""
    rng = rng_for("outlier", "noise")
    small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((128, 128), Image.Resampling.NEAREST)


def add_outliers(plan: Plan) -> None:
    """Two images that show none of the classes."""
    plan.add(Item("train", "fish", jpeg_bytes(document_scan()), tags=["outlier"]))
    plan.add(Item("train", "vehicle", jpeg_bytes(colour_noise()), tags=["outlier"]))


def add_broken(plan: Plan) -> None:
    """Unreadable files: zero bytes, a truncated JPEG, text named .png, and a non-image file."""
    truncated = jpeg_bytes(render("flower", "broken", 0))
    plan.add(Item("train", "fish", b"", tags=["unreadable:zero_bytes"]))
    plan.add(
        Item("train", "flower", truncated[: len(truncated) * 2 // 5], tags=["unreadable:truncated_jpeg"])
    )
    text = b"this is not an image\nexported from the labelling tool, batch 7\n"
    plan.add(Item("train", "vehicle", text, ".png", tags=["unreadable:text_as_png"]))
    notes = b"Vehicle photos: batch 3 still needs review (ask Sam).\n"
    plan.add(Item("train", "vehicle", notes, ".txt", tags=["non_image_file"], name="notes.txt"))


# --------------------------------------------------------------------------------------------- writing


def assign_names(plan: Plan) -> None:
    """Shuffle each folder deterministically and number its files ``<class>_NNN.<ext>``."""
    folders = sorted({(i.split, i.folder) for i in plan.items})
    for split, folder in folders:
        items = [i for i in plan.items if i.split == split and i.folder == folder and i.name is None]
        order = rng_for("names", split, folder).permutation(len(items))
        for number, idx in enumerate(order, start=1):
            items[idx].name = f"{folder}_{number:03d}{items[idx].ext}"
        for i in plan.find(split, folder):
            i.path = f"{split}/{folder}/{i.name}"


def manifest_path(out: Path) -> Path:
    """The planted-problem manifest of dataset directory ``out``: ``<out>/../<name>.planted.json``."""
    return out.parent / f"{out.name}.planted.json"


def write_files(plan: Plan, out: Path) -> None:
    """Replace ``out`` with the dataset files.

    Raises:
        SystemExit: ``out`` is a non-empty directory without a manifest beside it (not generated here).
    """
    if out.exists():
        if any(out.iterdir()) and not manifest_path(out).exists():
            raise SystemExit(f"refusing to replace {out}: not a dataset generated by this script")
        shutil.rmtree(out)
    for item in plan.items:
        path = out / item.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item.data)


def tagged(plan: Plan, tag: str, split: str = "") -> list[str]:
    """Paths of the items carrying ``tag`` (optionally only in ``split``), sorted."""
    return sorted(i.path for i in plan.items if tag in i.tags and (not split or i.split == split))


def pair_problem(plan: Plan, pid: str) -> dict[str, object]:
    """One pair problem in its JSON form."""
    check, key = PAIR_PROBLEMS[pid]
    pairs = [{"original": p.original.path, "copy": p.copy.path, key: p.how} for p in plan.pairs[pid]]
    files = sorted({p.original.path for p in plan.pairs[pid]} | {p.copy.path for p in plan.pairs[pid]})
    return {"id": pid, "check": check, "pairs": pairs, "files": files}


def summary_problems(plan: Plan) -> list[dict[str, object]]:
    """The planted problems in their JSON form; every entry has ``id``, ``check``, ``files``."""
    problems: list[dict[str, object]] = [
        {
            "id": "too_few_images",
            "check": "class_balance",
            "split": "train",
            "class": "mushroom",
            "count": COUNTS["train"]["mushroom"],
            "hard_min": HARD_MIN,
            "files": sorted(i.path for i in plan.find("train", "mushroom")),
        }
    ]
    problems += [pair_problem(plan, pid) for pid in PAIR_PROBLEMS]
    groups = {
        k: sorted(i.path for i in plan.find("train", "vehicle") if i.subgroup == k) for k in VEHICLE_KINDS
    }
    problems.append(
        {
            "id": "subgroups",
            "check": "subgroups",
            "split": "train",
            "class": "vehicle",
            "groups": groups,
            "files": sorted(f for g in groups.values() for f in g),
        }
    )
    own = [i.path for i in plan.find("train", WATERMARK_CLASS) if i.true_class == WATERMARK_CLASS]
    marked = tagged(plan, "local_shortcut", "train")
    problems.append(
        {
            "id": "local_shortcut",
            "check": "shortcuts",
            "kind": "local",
            "split": "train",
            "class": WATERMARK_CLASS,
            "region": "bottom-right",
            "cue": "26x14 px logo, 3 px from the corner",
            "fraction_of_class": round(len([f for f in own if f in marked]) / len(own), 3),
            "other_classes_with_cue": 0,
            "files": marked,
        }
    )
    problems.append(
        {
            "id": "global_shortcut",
            "check": "shortcuts",
            "kind": "global",
            "split": "train",
            "class": WARM_CLASS,
            "cue": "bright, warm colour grade (also on test flowers)",
            "files": tagged(plan, "global_shortcut", "train"),
        }
    )
    problems.append(
        {
            "id": "label_error",
            "check": "label_errors",
            "given_label": "fish",
            "true_label": "flower",
            "files": tagged(plan, "label_error"),
        }
    )
    for issue, *_ in [*QUALITY, ("low_information",)]:
        problems.append(
            {
                "id": f"quality:{issue}",
                "check": "quality",
                "issue": issue,
                "files": tagged(plan, f"quality:{issue}"),
            }
        )
    problems.append({"id": "outlier", "check": "outliers", "files": tagged(plan, "outlier")})
    for kind in ("zero_bytes", "truncated_jpeg", "text_as_png"):
        problems.append(
            {"id": f"unreadable:{kind}", "check": "unreadable", "files": tagged(plan, f"unreadable:{kind}")}
        )
    problems.append({"id": "non_image_file", "check": "unreadable", "files": tagged(plan, "non_image_file")})
    return problems


def counts(plan: Plan) -> dict[str, dict[str, int]]:
    """Files per split and class folder (every file, including planted ones)."""
    out: dict[str, dict[str, int]] = {}
    for i in sorted(plan.items, key=lambda i: i.path):
        out.setdefault(i.split, {}).setdefault(i.folder, 0)
        out[i.split][i.folder] += 1
    return out


def manifest(plan: Plan, name: str) -> dict[str, object]:
    """The ``<name>.planted.json`` document."""
    files = {
        i.path: {
            "split": i.split,
            "label": i.folder,
            "true_class": i.true_class,
            "subgroup": i.subgroup,
            "planted": sorted(i.tags),
        }
        for i in sorted(plan.items, key=lambda i: i.path)
    }
    return {
        "name": name,
        "generator": "sample_datasets/generate.py",
        "seed": SEED,
        "layout": "<split>/<class>/<file>; paths below are relative to the dataset root",
        "root": name,
        "classes": sorted(COUNTS["train"]),
        "class_balance": {"hard_min": HARD_MIN, "soft_min": SOFT_MIN},
        "counts": counts(plan),
        "problems": summary_problems(plan),
        "files": files,
    }


def build() -> Plan:
    """Assemble every file of the dataset, in a fixed order."""
    plan = Plan()
    add_clean(plan)
    add_exact_duplicates(plan)
    add_near_duplicates(plan)
    add_label_errors(plan)
    add_quality(plan)
    add_outliers(plan)
    add_broken(plan)
    assign_names(plan)
    return plan


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="dataset directory (replaced)")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    plan = build()
    write_files(plan, out)
    doc = manifest(plan, out.name)
    manifest_path(out).write_text(json.dumps(doc, indent=1) + "\n")
    total = sum(len(i.data) for i in plan.items)
    print(f"wrote {len(plan.items)} files ({total / 1e6:.2f} MB) to {out}")


if __name__ == "__main__":
    main()
