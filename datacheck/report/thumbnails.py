"""Small JPEG thumbnails for the HTML report, named by the file's content hash.

``report/thumbs/<sha256>.jpg``: at most :data:`THUMB_SIZE` pixels on the long side, EXIF orientation
applied, transparency composited onto grey. Identical files share one thumbnail, and a thumbnail that
already exists is not written again, so rewriting a report only adds what is new. A file that cannot be
opened gets no thumbnail (the page shows a placeholder) and never stops the report from being written.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from datacheck.dataset import ImageRecord
from datacheck.images import open_image
from datacheck.sources import read_record

logger = logging.getLogger(__name__)

#: Long side of a thumbnail in pixels (the page shows them at up to this size).
THUMB_SIZE = 64
#: JPEG quality of the thumbnails (64 px CIFAR images come out at about 2 KB).
JPEG_QUALITY = 70
#: Sub-folder of the report folder holding the thumbnails.
THUMBS_DIR = "thumbs"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GREY = (128, 128, 128)


@dataclass(frozen=True)
class ThumbnailStats:
    """What :func:`write_thumbnails` did.

    Attributes:
        written: Thumbnails created now.
        existing: Thumbnails already present (same content hash).
        failed: Files that could not be turned into a thumbnail.
        missing: Content hashes that have no thumbnail (the page shows a placeholder without asking for one).
    """

    written: int
    existing: int
    failed: int
    missing: tuple[str, ...] = ()


def thumb_name(sha256: str) -> str:
    """File name of the thumbnail of a file with this content hash."""
    if not _SHA256.match(sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    return f"{sha256}.jpg"


def write_thumbnails(
    root: Path,
    files: Iterable[tuple[str, str | None]],
    out_dir: Path,
    *,
    size: int = THUMB_SIZE,
    workers: int | None = None,
    containers: Mapping[str, ImageRecord] | None = None,
) -> ThumbnailStats:
    """Write a thumbnail for each ``(dataset-relative path, sha256)`` into ``out_dir``.

    Args:
        root: Dataset root the paths are relative to.
        files: Pairs of path and content hash; entries without a hash are skipped.
        containers: Records of images inside container files by key (read with
            :func:`~datacheck.sources.read_record`); other paths are files under ``root``.
        out_dir: The thumbnails folder (created).
        size: Long side in pixels.
        workers: Threads (Pillow decodes and resizes without the GIL); default: CPU count, at most 8.

    Returns:
        How many were written, already present, or failed.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    todo: dict[str, Path | ImageRecord] = {}
    containers = containers or {}
    existing = 0
    for path, sha in files:
        if not sha or not _SHA256.match(sha) or sha in todo:
            continue
        if (out_dir / thumb_name(sha)).exists():
            existing += 1
            continue
        todo[sha] = containers.get(path) or Path(root) / path
    threads = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        outcomes = list(
            pool.map(lambda item: _one(item[1], out_dir / thumb_name(item[0]), size), todo.items())
        )
    missing = tuple(sorted(sha for sha, ok in zip(todo, outcomes, strict=True) if not ok))
    if missing:
        logger.info(
            "%d of %d thumbnails could not be made (the report shows placeholders)", len(missing), len(todo)
        )
    return ThumbnailStats(
        written=len(outcomes) - len(missing), existing=existing, failed=len(missing), missing=missing
    )


def _one(src: Path | ImageRecord, dst: Path, size: int) -> bool:
    try:
        make_thumbnail(src if isinstance(src, Path) else io.BytesIO(read_record(src)), dst, size)
    except Exception as err:  # a broken or vanished file only loses its thumbnail
        logger.debug("no thumbnail for %s: %s", src, err)
        return False
    return True


def make_thumbnail(src: Path | BinaryIO, dst: Path, size: int = THUMB_SIZE) -> None:
    """Write one thumbnail atomically (temporary file, then rename).

    Raises:
        OSError: The file cannot be read or the thumbnail cannot be written.
        PIL.UnidentifiedImageError: Not an image.
        ImageDecodeError: Over the audit's pixel limit, or a decompression bomb.
    """
    with open_image(src) as img:  # the audit's pixel limit and bomb rule, not Pillow's 89 MP default
        if img.format in ("JPEG", "MPO"):
            img.draft("RGB", (size * 2, size * 2))
        img.load()
        small = _to_rgb(ImageOps.exif_transpose(img))
    small.thumbnail((size, size), Image.Resampling.LANCZOS)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    small.save(tmp, "JPEG", quality=JPEG_QUALITY, optimize=True)
    tmp.replace(dst)


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB with transparency composited onto grey (so transparent black is not shown as black)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        base = Image.new("RGB", rgba.size, _GREY)
        base.paste(rgba, mask=rgba.getchannel("A"))
        return base
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(img, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")
