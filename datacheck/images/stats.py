"""Per-image statistics: :class:`ImageStats`, its compact serialisation, and the pixel statistics.

Pixel statistics are computed on the oriented RGB image resized to a short side of :data:`ANALYSIS_SIDE` px
(so they compare across image sizes); :func:`datacheck.images.decode.decode_image` computes them in the same
pass as the model input. Serialised stats are versioned by :data:`STATS_VERSION`.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from datacheck.jit import compiled

#: Version of :meth:`ImageStats.to_bytes`'s format and of the statistics' definitions. Bump it whenever
#: either changes: cached stats of another version are never read.
STATS_VERSION = 1

#: Short side of the image the statistics are computed on (so they compare across image sizes).
ANALYSIS_SIDE = 128

#: Long-side cap of the analysis image (extreme panoramas are squashed to it).
ANALYSIS_MAX_LONG_SIDE = 1024

#: Side of :attr:`ImageStats.thumb`.
THUMB_SIDE = 32

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


class StatsFormatError(ValueError):
    """A serialised :class:`ImageStats` blob is damaged or has another :data:`STATS_VERSION`."""


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
        return {name: getattr(self, name) for name in _row_fields()}

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


# ------------------------------------------------------------------------------------- pixel statistics


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


def _analysis_image(rgb: Image.Image) -> Image.Image:
    """The RGB image resized to a short side of :data:`ANALYSIS_SIDE` px (the statistics' input)."""
    target = _analysis_size(*rgb.size)
    return rgb if rgb.size == target else rgb.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _thumbnail(analysis: Image.Image) -> bytes:
    return analysis.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX).tobytes()


def _pixel_stats(analysis: Image.Image, *, gray_mode: bool) -> dict[str, Any]:
    """Every pixel statistic of the analysis image, keyed by :class:`ImageStats` field.

    A few compiled passes over the pixels (:func:`_fused_pixel_stats`): the same statistics as numpy
    reductions gave, at 0.18 instead of 0.45 ms an image (~25 numpy calls of ~20 µs each on a 128-px image).
    """
    pixels = np.asarray(analysis, dtype=np.uint8)
    height, width = pixels.shape[:2]
    ring = max(1, round(BORDER_FRACTION * min(height, width)))
    if 2 * ring >= min(height, width):
        ring = 0  # the ring would cover the image: the border is every pixel
    values, histogram, coloured = _kernel()(pixels, ring, GRAYSCALE_CHROMA_TOLERANCE)
    named = dict(zip(_KERNEL_OUTPUTS, (float(v) for v in values), strict=True))
    return {
        **named,
        "entropy": _histogram_entropy(histogram),
        "grayscale": gray_mode or int(coloured) <= 0.01 * height * width,
    }


def _histogram_entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


#: What :func:`_fused_pixel_stats` returns in its first array, in order (entropy comes from its histogram).
_KERNEL_OUTPUTS = tuple(name for name in _FLOAT_FIELDS if name != "entropy")


@functools.cache
def _kernel() -> Any:
    """:func:`_fused_pixel_stats` compiled by numba on first use (not at import), kept on disk for later runs.

    ``fastmath`` lets the compiler reorder the float64 sums (far below the float32 roundings of the inputs);
    ``nogil`` lets decoder threads measure images in parallel.
    """
    return compiled(_fused_pixel_stats, nogil=True, fastmath=True)


def _fused_pixel_stats(pixels: np.ndarray, ring: int, tolerance: float) -> tuple[np.ndarray, np.ndarray, int]:
    """The pixel statistics of ``uint8[H, W, 3]`` RGB in a few passes (compiled by :func:`_kernel`).

    Luma is ``0.299 R + 0.587 G + 0.114 B`` in float32; sums run in float64. Standard deviations and
    variances are population ones, in two passes (mean, then squared differences).

    Args:
        pixels: The analysis image.
        ring: Width of the border ring in pixels; 0 = every pixel is border.
        tolerance: A pixel is coloured when ``max(R, G, B) - min(R, G, B)`` exceeds it.

    Returns:
        The statistics named by :data:`_KERNEL_OUTPUTS`, the 256-bin histogram of luma rounded to
        integers, and the number of coloured pixels.
    """
    height, width = pixels.shape[0], pixels.shape[1]
    n = height * width
    luma = np.empty((height, width), np.float32)
    histogram = np.zeros(256, np.int64)
    sums = np.zeros(3)
    luma_sum = saturation_sum = 0.0
    coloured = 0
    w_r, w_g, w_b = np.float32(0.299), np.float32(0.587), np.float32(0.114)
    for y in range(height):
        for x in range(width):
            r, g, b = np.float32(pixels[y, x, 0]), np.float32(pixels[y, x, 1]), np.float32(pixels[y, x, 2])
            value = r * w_r + g * w_g + b * w_b
            luma[y, x] = value
            luma_sum += value
            sums[0] += r
            sums[1] += g
            sums[2] += b
            high, low = max(r, g, b), min(r, g, b)
            if high > 0:
                saturation_sum += (high - low) / high
            if high - low > tolerance:
                coloured += 1
            histogram[min(255, max(0, int(np.rint(value))))] += 1
    luma_mean = luma_sum / n
    luma_squares = 0.0
    for y in range(height):
        for x in range(width):
            luma_squares += (luma[y, x] - luma_mean) ** 2
    sharpness = 0.0
    if height >= 3 and width >= 3:  # variance of the 4-neighbour Laplacian over the interior
        inner = (height - 2) * (width - 2)
        laplacian = np.empty((height - 2, width - 2), np.float32)
        total = 0.0
        for y in range(1, height - 1):
            for x in range(1, width - 1):
                lap = luma[y - 1, x] + luma[y + 1, x] + luma[y, x - 1] + luma[y, x + 1] - 4 * luma[y, x]
                laplacian[y - 1, x - 1] = lap
                total += lap
        mean = total / inner
        for y in range(height - 2):
            for x in range(width - 2):
                sharpness += (laplacian[y, x] - mean) ** 2
        sharpness /= inner
    # the border ring as four rectangles (rows y0:y1, columns x0:x1), or the whole image when ring is 0
    if ring == 0:
        rects = np.array([[0, height, 0, width]])
    else:
        rects = np.array(
            [
                [0, ring, 0, width],
                [height - ring, height, 0, width],
                [ring, height - ring, 0, ring],
                [ring, height - ring, width - ring, width],
            ]
        )
    border_sums = np.zeros(3)
    border_n = 0
    for y0, y1, x0, x1 in rects:
        border_n += (y1 - y0) * (x1 - x0)
        for y in range(y0, y1):
            for x in range(x0, x1):
                for channel in range(3):
                    border_sums[channel] += pixels[y, x, channel]
    border_means = border_sums / border_n
    border_squares = np.zeros(3)
    for y0, y1, x0, x1 in rects:
        for y in range(y0, y1):
            for x in range(x0, x1):
                for channel in range(3):
                    border_squares[channel] += (pixels[y, x, channel] - border_means[channel]) ** 2
    values = np.array(
        [
            luma_mean,
            np.sqrt(luma_squares / n),
            saturation_sum / n,
            sums[0] / n,
            sums[1] / n,
            sums[2] / n,
            sharpness,
            border_means[0],
            border_means[1],
            border_means[2],
            np.sqrt(border_squares / border_n).mean(),
        ]
    )
    return values, histogram, coloured


@functools.cache
def _row_fields() -> tuple[str, ...]:
    """:class:`ImageStats`'s scalar field names in order (``fields()`` per row cost 0.4 s at 60k)."""
    return tuple(f.name for f in fields(ImageStats) if f.name != "thumb")
