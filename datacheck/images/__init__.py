"""Safe, single-pass image decoding: encoded bytes → model input + :class:`ImageStats`.

The package is split along its seams; every public name is re-exported here, so
``from datacheck.images import decode_image`` keeps working:

* :mod:`datacheck.images.reading`: :func:`read_file` and :class:`ImageDecodeError`, the one error type.
* :mod:`datacheck.images.decode`: :func:`decode_image` (pixel limit and decompression bombs, EXIF
  orientation, draft decoding of large JPEGs, failure reasons) and :func:`open_image`.
* :mod:`datacheck.images.colour`: any Pillow colour mode → 8-bit RGB.
* :mod:`datacheck.images.stats`: :class:`ImageStats`, its serialisation and the pixel statistics.
* :mod:`datacheck.images.stats_table`: :class:`StatsTable`, many images' statistics by column.
* :mod:`datacheck.images.jpeg_quality`: :func:`estimate_jpeg_quality` from quantisation tables.
"""

from __future__ import annotations

from datacheck.images.colour import BACKGROUND_RGB
from datacheck.images.decode import (
    BOMB_PIXELS_PER_BYTE,
    DRAFT_MIN_SIDE,
    SUPPORTED_FORMATS,
    TINY_SIDE,
    DecodedImage,
    decode_image,
    open_image,
)
from datacheck.images.jpeg_quality import estimate_jpeg_quality
from datacheck.images.reading import MAX_FILE_BYTES, ImageDecodeError, read_file
from datacheck.images.stats import (
    ANALYSIS_MAX_LONG_SIDE,
    ANALYSIS_SIDE,
    BORDER_FRACTION,
    GRAYSCALE_CHROMA_TOLERANCE,
    STATS_VERSION,
    THUMB_SIDE,
    ImageStats,
    StatsFormatError,
)
from datacheck.images.stats_table import (
    THUMB_BYTES,
    StatsTable,
    is_stats_blob,
    is_stats_head,
    stats_head,
    thumbnails,
)

__all__ = [
    "ANALYSIS_MAX_LONG_SIDE",
    "ANALYSIS_SIDE",
    "BACKGROUND_RGB",
    "BOMB_PIXELS_PER_BYTE",
    "BORDER_FRACTION",
    "DRAFT_MIN_SIDE",
    "GRAYSCALE_CHROMA_TOLERANCE",
    "MAX_FILE_BYTES",
    "STATS_VERSION",
    "SUPPORTED_FORMATS",
    "THUMB_BYTES",
    "THUMB_SIDE",
    "TINY_SIDE",
    "DecodedImage",
    "ImageDecodeError",
    "ImageStats",
    "StatsFormatError",
    "StatsTable",
    "decode_image",
    "estimate_jpeg_quality",
    "is_stats_blob",
    "is_stats_head",
    "open_image",
    "read_file",
    "stats_head",
    "thumbnails",
]
