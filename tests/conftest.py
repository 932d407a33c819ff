"""Shared fixtures: image files generated on the fly in ``tmp_path`` (no network, no ../shared files).

``image_factory`` writes well-formed and deliberately broken images; ``class_tree`` builds a small
``root/<class>/<image>`` dataset. Add new generators as methods of :class:`ImageFactory`.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

RED = (220, 30, 30)
GREEN = (30, 200, 40)
BLUE = (30, 40, 220)


def encode(img: Image.Image, fmt: str, **save_args: object) -> bytes:
    """Encode a Pillow image in memory."""
    buffer = io.BytesIO()
    img.save(buffer, fmt, **save_args)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring_size(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose header claims ``width×height`` pixels (a cheap decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00"))
        + png_chunk(b"IEND", b"")
    )


def halves(size: tuple[int, int], left: tuple[int, int, int], right: tuple[int, int, int]) -> Image.Image:
    """An RGB image whose left half is ``left`` and right half ``right``."""
    img = Image.new("RGB", size, left)
    img.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return img


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Colourful RGB noise (deterministic)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


class ImageFactory:
    """Writes image files (good and broken) under a folder; generator methods return the written path.

    Tests get an instance from the ``image_factory`` fixture; the helpers are reachable through it too
    (``image_factory.noise(...)``, ``image_factory.RED``), so tests never import this module.
    """

    RED = RED
    GREEN = GREEN
    BLUE = BLUE
    encode = staticmethod(encode)
    noise = staticmethod(noise)
    halves = staticmethod(halves)
    png_declaring_size = staticmethod(png_declaring_size)

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write_bytes(self, name: str | bytes, data: bytes) -> Path:
        """Write raw bytes; a ``bytes`` name may be any (e.g. non-UTF-8) file name."""
        if isinstance(name, bytes):
            raw = os.path.join(os.fsencode(self.folder), name)
            os.makedirs(os.path.dirname(raw), exist_ok=True)
            with open(raw, "wb") as handle:
                handle.write(data)
            return Path(os.fsdecode(raw))
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def save(self, name: str | bytes, img: Image.Image, fmt: str | None = None, **save_args: object) -> Path:
        """Save a Pillow image; the format follows the extension unless given."""
        if fmt is None:
            ext = os.path.splitext(os.fsdecode(name))[1].lower()
            fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF"}.get(ext, ext.lstrip(".").upper())
        return self.write_bytes(name, encode(img, fmt, **save_args))

    def solid(self, name: str | bytes, size: tuple[int, int] = (16, 16), color: object = RED) -> Path:
        return self.save(name, Image.new("RGB", size, color))  # type: ignore[arg-type]

    def zero_byte(self, name: str = "empty.jpg") -> Path:
        return self.write_bytes(name, b"")

    def text_as_jpeg(self, name: str = "notes.jpg") -> Path:
        return self.write_bytes(name, b"This is a text file that only pretends to be a JPEG.\n")

    def truncated_jpeg(self, name: str = "truncated.jpg") -> Path:
        data = encode(noise((64, 48)), "JPEG", quality=90)
        return self.write_bytes(name, data[: len(data) // 2])

    def truncated_png(self, name: str = "truncated.png") -> Path:
        data = encode(noise((64, 48)), "PNG")
        return self.write_bytes(name, data[: len(data) // 2])

    def png_bomb(self, name: str = "bomb.png", side: int = 20_000) -> Path:
        return self.write_bytes(name, png_declaring_size(side, side))

    def png16(self, name: str = "deep.png") -> Path:
        """16-bit grayscale: a horizontal ramp over the full 0..65535 range."""
        ramp = np.linspace(0, 65535, 64).round().astype(np.uint16)
        return self.save(name, Image.fromarray(np.tile(ramp, (16, 1))))

    def cmyk_jpeg(self, name: str = "cmyk.jpg") -> Path:
        return self.save(name, Image.new("CMYK", (32, 32), (0, 255, 255, 0)), quality=95)  # pure red

    def palette_png_transparent(self, name: str = "palette.png") -> Path:
        """Palette PNG: left half transparent black (index 0), right half opaque red (index 1)."""
        img = Image.new("P", (32, 16), 0)
        img.putpalette([0, 0, 0, 220, 30, 30] + [0, 0, 0] * 254)
        img.paste(1, (16, 0, 32, 16))
        return self.save(name, img, transparency=0)

    def la_png(self, name: str = "la.png") -> Path:
        """LA PNG: left half fully transparent black, right half opaque white."""
        img = Image.new("LA", (32, 16), (0, 0))
        img.paste((255, 255), (16, 0, 32, 16))
        return self.save(name, img)

    def rgba_png(self, name: str = "rgba.png") -> Path:
        """RGBA PNG: left half fully transparent black, right half opaque blue."""
        img = Image.new("RGBA", (32, 16), (0, 0, 0, 0))
        img.paste((*BLUE, 255), (16, 0, 32, 16))
        return self.save(name, img)

    def animated_gif(
        self, name: str = "anim.gif", colors: tuple[tuple[int, int, int], ...] = (RED, GREEN, BLUE)
    ) -> Path:
        frames = [Image.new("RGB", (24, 24), c) for c in colors]
        return self.save(name, frames[0], save_all=True, append_images=frames[1:], duration=100, loop=0)

    def exif_rotated_jpeg(self, name: str = "rotated.jpg", orientation: int = 6) -> Path:
        """40×20 stored pixels, left half red and right half blue, with an EXIF orientation tag."""
        exif = Image.Exif()
        exif[0x0112] = orientation
        exif[0x010F] = "Canon"
        exif[0x0110] = "Canon EOS 5D"
        return self.save(name, halves((40, 20), RED, BLUE), exif=exif.tobytes(), quality=95)

    def grayscale_jpeg(self, name: str = "gray.jpg") -> Path:
        return self.save(name, noise((32, 32)).convert("L"))

    def large_jpeg(self, name: str = "large.jpg", size: tuple[int, int] = (6000, 4000)) -> Path:
        """A 24 MP JPEG (legal, under Pillow's pixel limit), cheap to write: a gradient, low quality."""
        img = Image.linear_gradient("L").resize(size).convert("RGB")
        return self.save(name, img, quality=60)


@pytest.fixture
def image_factory(tmp_path: Path) -> ImageFactory:
    """Writes test images under ``tmp_path/images``."""
    return ImageFactory(tmp_path / "images")


@pytest.fixture(scope="session")
def large_jpeg_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 6000×4000 JPEG shared by the session (about 0.2 s to write)."""
    return ImageFactory(tmp_path_factory.mktemp("large")).large_jpeg()


@pytest.fixture
def class_tree(tmp_path: Path) -> Callable[[dict[str, int]], Path]:
    """Build ``root/<class>/<i>.png`` with the given number of distinct images per class; return the root."""

    def build(counts: dict[str, int]) -> Path:
        root = tmp_path / "dataset"
        factory = ImageFactory(root)
        for k, (label, n) in enumerate(sorted(counts.items())):
            for i in range(n):
                factory.save(f"{label}/{i:03d}.png", noise((8, 8), seed=1000 * k + i))
        return root

    return build


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bottleneck cache for every test that runs the real model, so the converted LiteRT model is built
    once per session. Tests that count cache hits must embed images of their own (content-addressed)."""
    return tmp_path_factory.mktemp("model-cache")
