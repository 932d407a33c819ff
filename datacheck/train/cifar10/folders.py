"""A split folder tree (``train/<class>/``, ``test/<class>/``) → uint8 arrays.

The tree is discovered with :func:`datacheck.dataset.discover`. This is what ``datacheck audit`` reads
and ``apply`` produces; ``cifar10-jpeg.tar.gz`` unpacks to it.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from datacheck.dataset import Dataset, ImageRecord, discover
from datacheck.errors import DatasetUnreadableError
from datacheck.images import ImageDecodeError, read_file
from datacheck.train.cifar10.arraycache import cache_key, read_cache, stat_key, write_cache
from datacheck.train.cifar10.arrays import IMAGE_SIZE, Cifar10Arrays, Progress, balanced_subset, one_line

logger = logging.getLogger(__name__)


def load_folder(
    root: Path, *, limit: int | None, cache_dir: Path, progress: Progress | None
) -> Cifar10Arrays:
    """The arrays of a split folder tree (through the .npy cache)."""
    dataset = discover(root)
    train, test, classes = _split_records(dataset)
    train = [train[i] for i in balanced_subset(_labels(train, classes), limit)]
    test = [test[i] for i in balanced_subset(_labels(test, classes), limit)]
    rows = [(r.path, r.label, r.split, *stat_key(r.abs_path)) for r in (*train, *test)]
    key = cache_key("folder", limit, rows)
    cached = read_cache(cache_dir, key)
    if cached is not None:
        return cached
    x_train, y_train, _ = _decode_records(train, classes, progress, offset=0, total=len(rows))
    x_test, y_test, test_kept = _decode_records(test, classes, progress, offset=len(train), total=len(rows))
    arrays = Cifar10Arrays(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        classes=classes,
        test_paths=tuple(r.path for r in test_kept),
        source=f"image folder {dataset.root}",
    )
    write_cache(cache_dir, key, arrays)
    return arrays


def _split_records(dataset: Dataset) -> tuple[list[ImageRecord], list[ImageRecord], tuple[str, ...]]:
    train = [r for r in dataset.records if r.split == "train"]
    test = [r for r in dataset.records if r.split == "test"]
    if not train or not test:
        raise DatasetUnreadableError(
            f"{dataset.root} needs train/<class>/ and test/<class>/ folders with images "
            f"(found splits: {', '.join(dataset.splits) or 'none'}), or a cifar-10-batches-py folder"
        )
    missing = sorted({r.label for r in test} - {r.label for r in train})
    if missing:
        logger.warning("test classes without training images: %s", ", ".join(missing))
    return train, test, tuple(sorted({r.label for r in (*train, *test)}))


def _labels(records: Sequence[ImageRecord], classes: Sequence[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[r.label] for r in records], dtype=np.int32)


def _decode_records(
    records: Sequence[ImageRecord],
    classes: Sequence[str],
    progress: Progress | None,
    *,
    offset: int,
    total: int,
) -> tuple[np.ndarray, np.ndarray, list[ImageRecord]]:
    images = np.empty((len(records), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    kept: list[ImageRecord] = []
    failures = 0
    for record in records:
        try:
            images[len(kept)] = decode_32(read_file(record.abs_path))
            kept.append(record)
        except ImageDecodeError as err:
            failures += 1
            logger.warning("skipping %s: %s", record.path, err)
        done = offset + len(kept) + failures
        if progress is not None and (done % 500 == 0 or done == total):
            progress("decode", done, total)
    if failures:
        logger.warning("%d images could not be decoded and were left out", failures)
    return images[: len(kept)], _labels(kept, classes), kept


def decode_32(data: bytes) -> np.ndarray:
    """Encoded image bytes → ``uint8[32, 32, 3]`` RGB (EXIF orientation applied, other sizes resized).

    Raises:
        ImageDecodeError: The bytes are not a readable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))
            rgb = ImageOps.exif_transpose(img).convert("RGB")
    except Exception as err:  # Pillow raises many types for broken files
        raise ImageDecodeError(f"cannot decode image: {one_line(err)}") from err
    if rgb.size != (IMAGE_SIZE, IMAGE_SIZE):
        rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(rgb, dtype=np.uint8)
