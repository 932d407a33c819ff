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
import hashlib
import io
import logging
import math
import os
import re
import struct
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from datacheck.params import MAX_IMAGE_PIXELS

logger = logging.getLogger(__name__)

#: Version of :meth:`ImageStats.to_bytes`'s format and of the statistics' definitions. Bump it whenever
#: either changes: cached stats of another version are never read.
STATS_VERSION = 1

#: Pillow format plugins datacheck lets open a file (others, e.g. EPS, are never tried). JPEG also yields
#: ``"MPO"`` images (multi-picture JPEGs written by many cameras).
SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")

#: Colour that transparent pixels are composited onto.
BACKGROUND_RGB: tuple[int, int, int] = (128, 128, 128)

#: Large JPEGs are DCT-downscaled while decoding, keeping at least this short side.
DRAFT_MIN_SIDE = 640

#: Above Pillow's default pixel limit, an image must have at least one byte of file per this many pixels.
#: deflate's best ratio is about 1032:1, so only flat synthetic content comes near it; bombs are built there.
BOMB_PIXELS_PER_BYTE = 1000

#: Pillow's own default decompression-bomb limit (``Image.MAX_IMAGE_PIXELS`` as shipped).
_PILLOW_LIMIT = 89_478_485

#: Short side of the image the statistics are computed on (so they compare across image sizes).
ANALYSIS_SIDE = 128

#: Long-side cap of the analysis image (extreme panoramas are squashed to it).
ANALYSIS_MAX_LONG_SIDE = 1024

#: Side of :attr:`ImageStats.thumb`.
THUMB_SIDE = 32

#: Images with a side shorter than this get a "tiny image" note (they still decode).
TINY_SIDE = 8

#: Files larger than this are refused by :func:`read_file`.
MAX_FILE_BYTES = 1 << 30

#: Width of the border ring, as a fraction of the short side.
BORDER_FRACTION = 0.06

#: A pixel counts as coloured when max(R,G,B) - min(R,G,B) exceeds this (out of 255).
GRAYSCALE_CHROMA_TOLERANCE = 10.0

#: The float fields of :class:`ImageStats`, in serialisation order.
_FLOAT_FIELDS: tuple[str, ...] = (
    "brightness",
    "contrast",
    "saturation",
    "mean_r",
    "mean_g",
    "mean_b",
    "sharpness",
    "entropy",
    "border_r",
    "border_g",
    "border_b",
    "border_std",
)

_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)

_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})

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

# IJG (JPEG Annex K) base quantisation tables, natural order, as libjpeg scales them for quality 1..100.
_STD_LUMA_QTABLE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_STD_CHROMA_QTABLE = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip

# Pillow's warning filters and ``warnings.catch_warnings`` are process-wide: serialise our short sections.
_PILLOW_WARNINGS_LOCK = threading.Lock()


class ImageDecodeError(Exception):
    """An image could not be read or decoded.

    Attributes:
        reason: One line, ``"<stable head>: <detail>"`` (e.g. ``"truncated file: image data ends early"``).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StatsFormatError(ValueError):
    """A serialised :class:`ImageStats` blob is damaged or has another :data:`STATS_VERSION`."""


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class ImageStats:
    """Cheap per-image statistics, computed in the same pass as the model input.

    Pixel statistics are computed on the oriented RGB image resized to a short side of
    :data:`ANALYSIS_SIDE` px, so they compare across image sizes.

    Attributes:
        width: Width in pixels after EXIF orientation (the file's full size, also for draft-decoded JPEGs).
        height: Height in pixels after EXIF orientation.
        mode: Pillow mode as stored in the file (``"RGB"``, ``"P"``, ``"I;16"``, ``"CMYK"`` …).
        format: Pillow format name (``"JPEG"``, ``"PNG"`` …).
        file_size: Size of the encoded file in bytes.
        frames: Number of frames (animations, multi-page TIFFs); 1 for still images.
        brightness: Mean luma (ITU-R 601), 0..255.
        contrast: Standard deviation of luma.
        saturation: Mean HSV saturation, 0..1.
        mean_r: Mean red, 0..255.
        mean_g: Mean green, 0..255.
        mean_b: Mean blue, 0..255.
        sharpness: Variance of the 4-neighbour Laplacian of luma (higher is sharper).
        entropy: Shannon entropy of the 256-bin luma histogram in bits, 0..8 (low means little information).
        grayscale: The file is single-channel, or all three channels are nearly equal everywhere.
        border_r: Mean red of the outer ring (:data:`BORDER_FRACTION` of the short side wide).
        border_g: Mean green of the outer ring.
        border_b: Mean blue of the outer ring.
        border_std: Mean per-channel standard deviation in the ring (≈0 for a solid frame or letterbox).
        jpeg_quality: IJG quality 1..100 estimated from the quantisation tables; ``None`` if not JPEG.
        camera: EXIF camera make and model (``"Canon EOS 5D"``), or ``None``.
        pixel_hash: Hex SHA-256 of the decoded, oriented RGB pixels and their size: equal for the same
            pixels in any container. Full resolution, except JPEGs over twice :data:`DRAFT_MIN_SIDE`,
            which are hashed at their (deterministic) draft resolution.
        thumb: ``THUMB_SIDE×THUMB_SIDE×3`` uint8 RGB thumbnail of the whole image (aspect squashed).
    """

    width: int
    height: int
    mode: str
    format: str
    file_size: int
    frames: int
    brightness: float
    contrast: float
    saturation: float
    mean_r: float
    mean_g: float
    mean_b: float
    sharpness: float
    entropy: float
    grayscale: bool
    border_r: float
    border_g: float
    border_b: float
    border_std: float
    jpeg_quality: int | None
    camera: str | None
    pixel_hash: str
    thumb: bytes

    _MAGIC: ClassVar[bytes] = b"DCS"
    _HEAD: ClassVar[struct.Struct] = struct.Struct("<3sB")
    _FIXED: ClassVar[struct.Struct] = struct.Struct("<IIQI12d?h32s")
    _TEXT_LEN: ClassVar[struct.Struct] = struct.Struct("<H")
    _NONE_TEXT: ClassVar[int] = 0xFFFF

    @property
    def thumbnail(self) -> np.ndarray:
        """:attr:`thumb` as a read-only ``uint8[THUMB_SIDE, THUMB_SIDE, 3]`` array."""
        return np.frombuffer(self.thumb, dtype=np.uint8).reshape(THUMB_SIDE, THUMB_SIDE, 3)

    def as_row(self) -> dict[str, Any]:
        """Every scalar field by name (everything but :attr:`thumb`), e.g. for a pandas DataFrame row."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "thumb"}

    def to_bytes(self) -> bytes:
        """Serialise compactly (about 3.2 kB, mostly the thumbnail); versioned by :data:`STATS_VERSION`."""
        numbers = self._FIXED.pack(
            self.width,
            self.height,
            self.file_size,
            self.frames,
            *(getattr(self, name) for name in _FLOAT_FIELDS),
            self.grayscale,
            -1 if self.jpeg_quality is None else self.jpeg_quality,
            bytes.fromhex(self.pixel_hash),
        )
        texts = b"".join(self._pack_text(t) for t in (self.mode, self.format, self.camera))
        return self._HEAD.pack(self._MAGIC, STATS_VERSION) + numbers + texts + self.thumb

    @classmethod
    def from_bytes(cls, blob: bytes) -> ImageStats:
        """Inverse of :meth:`to_bytes`.

        Raises:
            StatsFormatError: The blob is damaged or was written by another :data:`STATS_VERSION`.
        """
        try:
            magic, version = cls._HEAD.unpack_from(blob, 0)
        except struct.error as err:
            raise StatsFormatError(f"image stats blob is damaged: {len(blob)} bytes is too short") from err
        if magic != cls._MAGIC:
            raise StatsFormatError("image stats blob is damaged: bad magic bytes")
        if version != STATS_VERSION:
            raise StatsFormatError(
                f"image stats blob has format version {version} but this datacheck reads version "
                f"{STATS_VERSION}: clear the cache (`datacheck cache clear`) or use the matching datacheck"
            )
        try:
            return cls._unpack_body(blob, cls._HEAD.size)
        except (struct.error, UnicodeDecodeError, ValueError) as err:
            raise StatsFormatError(f"image stats blob is damaged: {err}") from err

    @classmethod
    def _unpack_body(cls, blob: bytes, offset: int) -> ImageStats:
        width, height, file_size, frames, *rest = cls._FIXED.unpack_from(blob, offset)
        floats = dict(zip(_FLOAT_FIELDS, rest[: len(_FLOAT_FIELDS)], strict=True))
        grayscale, quality, digest = rest[len(_FLOAT_FIELDS) :]
        offset += cls._FIXED.size
        mode, offset = cls._unpack_text(blob, offset)
        fmt, offset = cls._unpack_text(blob, offset)
        camera, offset = cls._unpack_text(blob, offset)
        thumb = bytes(blob[offset:])
        if len(thumb) != THUMB_SIDE * THUMB_SIDE * 3:
            raise ValueError(f"thumbnail has {len(thumb)} bytes, expected {THUMB_SIDE * THUMB_SIDE * 3}")
        return cls(
            width=width,
            height=height,
            mode=mode or "",
            format=fmt or "",
            file_size=file_size,
            frames=frames,
            grayscale=grayscale,
            jpeg_quality=None if quality < 0 else quality,
            camera=camera,
            pixel_hash=digest.hex(),
            thumb=thumb,
            **floats,
        )

    @classmethod
    def _pack_text(cls, text: str | None) -> bytes:
        if text is None:
            return cls._TEXT_LEN.pack(cls._NONE_TEXT)
        raw = text.encode("utf-8", "backslashreplace")[: cls._NONE_TEXT - 1]
        return cls._TEXT_LEN.pack(len(raw)) + raw

    @classmethod
    def _unpack_text(cls, blob: bytes, offset: int) -> tuple[str | None, int]:
        (length,) = cls._TEXT_LEN.unpack_from(blob, offset)
        offset += cls._TEXT_LEN.size
        if length == cls._NONE_TEXT:
            return None, offset
        if offset + length > len(blob):
            raise ValueError("text field runs past the end")
        return blob[offset : offset + length].decode("utf-8"), offset + length


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


# ---------------------------------------------------------------------------------------------- reading


def read_file(path: Path, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read a whole file, turning OS errors into :class:`ImageDecodeError` with a user-facing reason.

    Args:
        path: File to read.
        max_bytes: Larger files are refused without being read.

    Returns:
        The file's bytes.

    Raises:
        ImageDecodeError: ``"permission denied: …"``, ``"file not found: …"``, ``"is a folder: …"``,
            ``"file too large: …"`` or ``"cannot read file: …"``.
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                raise ImageDecodeError(f"file too large: {size} bytes exceeds the limit of {max_bytes}")
            return handle.read()
    except PermissionError as err:
        raise ImageDecodeError(
            "permission denied: this user may not read the file; check its permissions"
        ) from err
    except FileNotFoundError as err:
        raise ImageDecodeError(
            "file not found: it was moved or deleted after the dataset was scanned"
        ) from err
    except IsADirectoryError as err:
        raise ImageDecodeError("is a folder: expected an image file") from err
    except OSError as err:
        raise ImageDecodeError(f"cannot read file: {err.strerror or err}") from err


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
    analysis = _analysis_array(rgb)
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


# ------------------------------------------------------------------------------------------ colour modes


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


# ----------------------------------------------------------------------------------- outputs and stats


def _model_input(rgb: Image.Image, size: int) -> np.ndarray:
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.array(rgb, dtype=np.uint8)


def _pixel_hash(rgb: Image.Image) -> str:
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def _analysis_size(width: int, height: int) -> tuple[int, int]:
    scale = ANALYSIS_SIDE / min(width, height)
    return (
        min(ANALYSIS_MAX_LONG_SIDE, max(ANALYSIS_SIDE, round(width * scale))),
        min(ANALYSIS_MAX_LONG_SIDE, max(ANALYSIS_SIDE, round(height * scale))),
    )


def _analysis_array(rgb: Image.Image) -> np.ndarray:
    """Resize to a short side of :data:`ANALYSIS_SIDE` px; return ``float32[H, W, 3]``."""
    target = _analysis_size(*rgb.size)
    small = rgb if rgb.size == target else rgb.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(small, dtype=np.float32)


def _thumbnail(analysis: np.ndarray) -> bytes:
    img = Image.fromarray(np.clip(np.rint(analysis), 0, 255).astype(np.uint8), "RGB")
    return img.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX).tobytes()


def _pixel_stats(rgb: np.ndarray, *, gray_mode: bool) -> dict[str, Any]:
    """Every pixel statistic of a ``float32[H, W, 3]`` array, keyed by :class:`ImageStats` field."""
    # Channel-first copy: numpy reduces a contiguous plane ~20x faster than the length-3 last axis.
    planes = np.ascontiguousarray(np.moveaxis(rgb, 2, 0))
    luma = rgb @ _LUMA_WEIGHTS
    high = np.maximum(np.maximum(planes[0], planes[1]), planes[2])
    low = np.minimum(np.minimum(planes[0], planes[1]), planes[2])
    chroma = high - low
    saturation = np.divide(chroma, high, out=np.zeros_like(chroma), where=high > 0)
    mean_r, mean_g, mean_b = (float(v) for v in planes.reshape(3, -1).mean(axis=1))
    border = _border_pixels(planes)
    border_r, border_g, border_b = (float(v) for v in border.mean(axis=1))
    return {
        "brightness": float(luma.mean()),
        "contrast": float(luma.std()),
        "saturation": float(saturation.mean()),
        "mean_r": mean_r,
        "mean_g": mean_g,
        "mean_b": mean_b,
        "sharpness": _laplacian_variance(luma),
        "entropy": _histogram_entropy(luma),
        "grayscale": gray_mode or _nearly_all_gray(chroma),
        "border_r": border_r,
        "border_g": border_g,
        "border_b": border_b,
        "border_std": float(border.std(axis=1).mean()),
    }


def _nearly_all_gray(chroma: np.ndarray) -> bool:
    """At most 1 % of pixels have more colour than :data:`GRAYSCALE_CHROMA_TOLERANCE`.

    A 99th-percentile test done by counting: a tenth of the cost of ``np.percentile``.
    """
    return int(np.count_nonzero(chroma > GRAYSCALE_CHROMA_TOLERANCE)) <= 0.01 * chroma.size


def _laplacian_variance(luma: np.ndarray) -> float:
    if min(luma.shape) < 3:
        return 0.0
    centre = luma[1:-1, 1:-1]
    laplacian = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4.0 * centre
    return float(laplacian.var())


def _histogram_entropy(luma: np.ndarray) -> float:
    levels = np.clip(np.rint(luma), 0, 255).astype(np.uint8)
    counts = np.bincount(levels.ravel(), minlength=256)
    p = counts[counts > 0] / levels.size
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def _border_pixels(planes: np.ndarray) -> np.ndarray:
    """Pixels of the outer ring of channel-first ``float32[3, H, W]`` planes, as ``float32[3, N]``."""
    height, width = planes.shape[1:]
    ring = max(1, round(BORDER_FRACTION * min(height, width)))
    if 2 * ring >= min(height, width):
        return planes.reshape(3, -1)
    parts = (
        planes[:, :ring],
        planes[:, -ring:],
        planes[:, ring:-ring, :ring],
        planes[:, ring:-ring, -ring:],
    )
    return np.concatenate([p.reshape(3, -1) for p in parts], axis=1)


# ----------------------------------------------------------------------------------------- JPEG quality


@functools.cache
def _ijg_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    luma = np.clip((np.array(_STD_LUMA_QTABLE) * scale + 50) // 100, 1, 255)
    chroma = np.clip((np.array(_STD_CHROMA_QTABLE) * scale + 50) // 100, 1, 255)
    return luma, chroma


def estimate_jpeg_quality(qtables: Mapping[int, Sequence[int]]) -> int | None:
    """Estimate the IJG quality (1..100) a JPEG was saved with, from its quantisation tables.

    Args:
        qtables: Pillow's ``img.quantization`` (table id → 64 values in natural order).

    Returns:
        The quality whose scaled standard tables are closest to the file's, or ``None`` without a luma table.
    """
    luma = qtables.get(0)
    if luma is None or len(luma) != 64:
        return None
    chroma = qtables.get(1)
    chroma_key = tuple(chroma) if chroma is not None and len(chroma) == 64 else None
    return _closest_quality(tuple(luma), chroma_key)


@functools.lru_cache(maxsize=256)
def _closest_quality(luma: tuple[int, ...], chroma: tuple[int, ...] | None) -> int:
    """Closest IJG quality for one pair of tables (memoised: a dataset has few distinct tables)."""
    std_luma, std_chroma = _all_ijg_tables()
    total = np.abs(std_luma - np.asarray(luma, dtype=np.int64)).sum(axis=1)
    if chroma is not None:
        total += np.abs(std_chroma - np.asarray(chroma, dtype=np.int64)).sum(axis=1)
    # Smallest distance; on ties the highest quality (qualities are 1..100 in row order).
    best = np.flatnonzero(total == total.min())
    return int(best[-1]) + 1


@functools.cache
def _all_ijg_tables() -> tuple[np.ndarray, np.ndarray]:
    """Scaled standard tables for qualities 1..100 as ``int64[100, 64]`` arrays (luma, chroma)."""
    tables = [_ijg_tables(q) for q in range(1, 101)]
    return np.stack([t[0] for t in tables]).astype(np.int64), np.stack([t[1] for t in tables]).astype(
        np.int64
    )
