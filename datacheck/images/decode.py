"""Safe, single-pass image decoding: encoded bytes → model input + :class:`ImageStats`.

One decode serves everything: the ``size×size×3`` uint8 RGB model input (the whole image, aspect squashed,
like TF retrain.py) and cheap per-image statistics used by the checks. Decoding is defensive:

* A pixel limit (``max_pixels``, default :data:`datacheck.params.MAX_IMAGE_PIXELS`, 250 MP — above
  Pillow's own 89 MP, so 100 MP photographs are audited) refuses decompression bombs with ``"image too
  large: …"``; so does a file above Pillow's limit with fewer than one byte per
  :data:`BOMB_PIXELS_PER_BYTE` pixels (no real photograph compresses that far; a bomb does). Large JPEGs
  decode in draft mode (below), so a 100 MP JPEG needs a few tens of MB.
* EXIF orientation is applied; 16-bit images are scaled (not clipped) to 8 bit; CMYK is converted (with its
  ICC profile when it has one); transparency is composited onto neutral grey; animations use frame one.
* Large JPEGs are decoded with ``Image.draft`` (DCT scaling) to the smallest power-of-two reduction whose
  short side is still at least :data:`DRAFT_MIN_SIDE`, so a 24 MP photo decodes several times faster. The
  reduction depends only on the file, never on the model input size, so cached stats stay valid for every
  input size up to :data:`DRAFT_MIN_SIDE`.

Every failure is an :class:`ImageDecodeError` whose one-line reason starts with a stable head
(``"truncated file: …"``) that reports group by. Reading bytes is the caller's job; :func:`read_file` words
OS errors the same way.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError

from datacheck.images.colour import _GRAY_MODES, _to_rgb
from datacheck.images.jpeg_quality import estimate_jpeg_quality
from datacheck.images.reading import ImageDecodeError
from datacheck.images.stats import ImageStats, _analysis_image, _pixel_hash, _pixel_stats, _thumbnail
from datacheck.params import MAX_IMAGE_PIXELS

logger = logging.getLogger(__name__)

#: Pillow format plugins datacheck lets open a file (others, e.g. EPS, are never tried). JPEG also yields
#: ``"MPO"`` images (multi-picture JPEGs written by many cameras).
SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")

#: Large JPEGs are DCT-downscaled while decoding, keeping at least this short side.
DRAFT_MIN_SIDE = 640

#: Above Pillow's default pixel limit, an image must have at least one byte of file per this many pixels.
#: deflate's best ratio is about 1032:1, so only flat synthetic content comes near it; bombs are built there.
BOMB_PIXELS_PER_BYTE = 1000

#: Pillow's own default decompression-bomb limit (``Image.MAX_IMAGE_PIXELS`` as shipped).
_PILLOW_LIMIT = 89_478_485

#: Images with a side shorter than this get a "tiny image" note (they still decode).
TINY_SIDE = 8

#: EXIF orientation → the transpose that displays the image upright (as in ``ImageOps.exif_transpose``).
_ORIENTATION_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION, _EXIF_MAKE, _EXIF_MODEL = 0x0112, 0x010F, 0x0110

_EXTENSION_FORMATS: dict[str, frozenset[str]] = {
    ".jpg": frozenset({"JPEG", "MPO"}),
    ".jpeg": frozenset({"JPEG", "MPO"}),
    ".png": frozenset({"PNG"}),
    ".bmp": frozenset({"BMP"}),
    ".gif": frozenset({"GIF"}),
    ".webp": frozenset({"WEBP"}),
    ".tif": frozenset({"TIFF"}),
    ".tiff": frozenset({"TIFF"}),
}

#: File signatures, to tell a damaged image from something that is not an image at all.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)

# Pillow's warning filters and ``warnings.catch_warnings`` are process-wide: serialise our short sections.
_PILLOW_WARNINGS_LOCK = threading.Lock()


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """The result of :func:`decode_image`.

    Attributes:
        pixels: ``uint8[size, size, 3]`` RGB model input (whole image, aspect squashed).
        stats: Statistics of the image.
        notes: Non-fatal remarks, e.g. ``"animated GIF: first frame used (3 frames)"``.
    """

    pixels: np.ndarray
    stats: ImageStats
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Header:
    """What is known right after opening, before pixels are decoded."""

    format: str
    mode: str
    size: tuple[int, int]
    frames: int


# --------------------------------------------------------------------------------------------- decoding


def decode_image(
    data: bytes, size: int, *, name: str = "", max_pixels: int = MAX_IMAGE_PIXELS
) -> DecodedImage:
    """Decode an encoded image once into the model input and its statistics.

    Args:
        data: The file's bytes (see :func:`read_file`).
        size: Side of the square model input in pixels.
        name: File name, for log messages and the extension-mismatch note.
        max_pixels: Largest image accepted (width × height); see the module docstring for bombs.

    Returns:
        The ``size×size×3`` uint8 RGB model input, :class:`ImageStats` and notes.

    Raises:
        ImageDecodeError: The bytes are not a decodable image; the reason is one line.
        ValueError: ``size`` is not positive.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if not data:
        raise ImageDecodeError("empty file: 0 bytes")
    notes: list[str] = []
    try:
        rgb, header, meta = _decode_rgb(data, notes, max_pixels)
    except ImageDecodeError:
        raise
    except Exception as err:  # Pillow raises many types on damaged input; each becomes a reason
        reason = _failure_reason(err, data, max_pixels)
        logger.debug("cannot decode %s: %s", name or "<bytes>", reason)
        raise ImageDecodeError(reason) from err
    width, height = _oriented_size(header.size, meta.orientation)
    notes.extend(_header_notes(header, width, height, name))
    analysis = _analysis_image(rgb)
    stats = ImageStats(
        width=width,
        height=height,
        mode=header.mode,
        format=header.format,
        file_size=len(data),
        frames=header.frames,
        **_pixel_stats(analysis, gray_mode=header.mode in _GRAY_MODES),
        jpeg_quality=meta.jpeg_quality,
        camera=meta.camera,
        pixel_hash=_pixel_hash(rgb),
        thumb=_thumbnail(analysis),
    )
    return DecodedImage(_model_input(rgb, size), stats, tuple(notes))


@dataclass(frozen=True, slots=True)
class _Metadata:
    orientation: int
    camera: str | None
    jpeg_quality: int | None


def _decode_rgb(data: bytes, notes: list[str], max_pixels: int) -> tuple[Image.Image, _Header, _Metadata]:
    """Open, decode (with draft for large JPEGs), orient and convert to RGB."""
    with _pillow_warnings(notes, max_pixels):
        img = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
        _check_pixel_limit(img.size, len(data), max_pixels)
        header = _Header(img.format or "unknown", img.mode, img.size, _frame_count(img))
    _draft_large_jpeg(img)
    img.load()
    with _pillow_warnings(notes):
        meta = _metadata(img)
    if meta.orientation in _ORIENTATION_TRANSPOSE:
        img = img.transpose(_ORIENTATION_TRANSPOSE[meta.orientation])
    return _to_rgb(img, notes), header, meta


def open_image(source: Path | IO[bytes], *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image lazily under the same pixel limit and bomb rule as :func:`decode_image`.

    For consumers that decode images the audit already accepted (thumbnails): a 100 MP photograph opens, a
    decompression bomb does not.

    Raises:
        ImageDecodeError: Over the limit, or a bomb by the pixels-per-byte rule.
        OSError: Not an image (Pillow's own errors).
    """
    notes: list[str] = []
    with _pillow_warnings(notes, max_pixels):
        img = Image.open(source)
        size = source.stat().st_size if isinstance(source, Path) else _stream_size(source)
        _check_pixel_limit(img.size, size, max_pixels)
    return img


def _stream_size(stream: IO[bytes]) -> int:
    position = stream.tell()
    size = stream.seek(0, io.SEEK_END)
    stream.seek(position)
    return size


@contextmanager
def _pillow_warnings(notes: list[str], max_pixels: int | None = None) -> Iterator[None]:
    """Turn DecompressionBombWarning into an error and Pillow's other warnings into notes, locally.

    ``warnings.catch_warnings`` and Pillow's ``MAX_IMAGE_PIXELS`` are process-wide state, so sections are
    serialised with a lock and kept short (opening headers, reading metadata; never pixel decoding).
    Warnings other threads raise meanwhile are re-issued unchanged afterwards. With ``max_pixels``, Pillow's
    limit is that for the section (datacheck checks the size itself, :func:`_check_pixel_limit`).
    """
    recorded: list[warnings.WarningMessage] = []
    try:
        with _PILLOW_WARNINGS_LOCK, warnings.catch_warnings(record=True) as recorded:
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            saved = Image.MAX_IMAGE_PIXELS
            if max_pixels is not None:
                Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                yield
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    finally:
        for caught in recorded:
            if _is_pillow_warning(caught):
                notes.append(f"decoder warning: {_one_line(str(caught.message))}")
            else:
                warnings.warn_explicit(caught.message, caught.category, caught.filename, caught.lineno)


def _is_pillow_warning(caught: warnings.WarningMessage) -> bool:
    return os.path.dirname(os.path.abspath(caught.filename)) == _pil_dir() or caught.filename == __file__


@functools.cache
def _pil_dir() -> str:
    return os.path.dirname(os.path.abspath(Image.__file__))


def _check_pixel_limit(size: tuple[int, int], file_bytes: int, max_pixels: int) -> None:
    pixels = size[0] * size[1]
    if pixels > max_pixels:
        raise ImageDecodeError(_too_large_reason(pixels, max_pixels))
    if pixels > _PILLOW_LIMIT and file_bytes * BOMB_PIXELS_PER_BYTE < pixels:
        raise ImageDecodeError(
            f"image too large: {pixels} pixels in a {file_bytes}-byte file looks like a decompression bomb "
            f"(under 1 byte per {BOMB_PIXELS_PER_BYTE} pixels)"
        )


def _too_large_reason(pixels: int | None, max_pixels: int) -> str:
    if pixels is None:
        return f"image too large: it exceeds the safety limit of {max_pixels} pixels (max_image_pixels)"
    return f"image too large: {pixels} pixels exceeds the safety limit of {max_pixels} (max_image_pixels)"


def _frame_count(img: Image.Image) -> int:
    frames = int(getattr(img, "n_frames", 1) or 1)
    if frames > 1:
        img.seek(0)
    return frames


def _draft_large_jpeg(img: Image.Image) -> None:
    """Ask libjpeg for a DCT-scaled decode when the JPEG is at least twice :data:`DRAFT_MIN_SIDE`."""
    if img.format not in ("JPEG", "MPO"):
        return
    width, height = img.size
    short = min(width, height)
    if short < 2 * DRAFT_MIN_SIDE:
        return
    request = (math.ceil(width * DRAFT_MIN_SIDE / short), math.ceil(height * DRAFT_MIN_SIDE / short))
    img.draft(None, request)
    logger.debug("JPEG %dx%d draft-decoded at %dx%d", width, height, *img.size)


def _metadata(img: Image.Image) -> _Metadata:
    exif = img.getexif()
    try:
        orientation = int(exif.get(_EXIF_ORIENTATION, 1))
    except (TypeError, ValueError):
        orientation = 1
    qtables = getattr(img, "quantization", None)
    return _Metadata(
        orientation=orientation,
        camera=_camera(exif.get(_EXIF_MAKE), exif.get(_EXIF_MODEL)),
        jpeg_quality=estimate_jpeg_quality(qtables) if qtables else None,
    )


def _oriented_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def _header_notes(header: _Header, width: int, height: int, name: str) -> list[str]:
    notes: list[str] = []
    if header.frames > 1 and header.format != "MPO":  # MPO's extra images are previews/depth maps
        notes.append(_frames_note(header.format, header.frames))
    if min(width, height) < TINY_SIDE:
        notes.append(f"tiny image: {width}x{height} px")
    expected = _EXTENSION_FORMATS.get(os.path.splitext(name)[1].lower())
    if expected is not None and header.format not in expected:
        notes.append(f"content is {header.format} but the name ends in {os.path.splitext(name)[1]}")
    return notes


def _frames_note(fmt: str, frames: int) -> str:
    if fmt == "TIFF":
        return f"multi-page TIFF: first page used ({frames} pages)"
    return f"animated {fmt}: first frame used ({frames} frames)"


def _camera(make: object, model: object) -> str | None:
    make_text, model_text = _exif_text(make), _exif_text(model)
    if make_text and model_text and model_text.lower().startswith(make_text.lower()):
        make_text = ""
    camera = " ".join(part for part in (make_text, model_text) if part)
    return camera[:64] or None


def _exif_text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return ""
    return " ".join("".join(ch for ch in value if ch.isprintable()).split())


def _failure_reason(err: Exception, data: bytes, max_pixels: int) -> str:
    """One-line reason for a decoding exception, with a stable head."""
    message = _one_line(str(err))
    if isinstance(err, Image.DecompressionBombError | Image.DecompressionBombWarning):
        match = re.search(r"\((\d+) pixels\)", message)
        return _too_large_reason(int(match.group(1)) if match else None, max_pixels)
    sniffed = _sniff_format(data)
    if isinstance(err, UnidentifiedImageError):
        if sniffed:
            return f"truncated or corrupt file: starts like a {sniffed} but its header cannot be read"
        accepted = ", ".join(SUPPORTED_FORMATS)
        return f"not an image: content is none of {accepted} (it starts with {data[:12]!r})"
    if isinstance(err, EOFError) or "truncated" in message.lower():
        return f"truncated file: image data ends early ({message or type(err).__name__})"
    if isinstance(err, MemoryError):
        return "corrupt image: out of memory while decoding"
    return (
        f"corrupt image: {type(err).__name__}: {message}"
        if message
        else f"corrupt image: {type(err).__name__}"
    )


def _sniff_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _SIGNATURES if data.startswith(magic)), None)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _model_input(rgb: Image.Image, size: int) -> np.ndarray:
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.array(rgb, dtype=np.uint8)
