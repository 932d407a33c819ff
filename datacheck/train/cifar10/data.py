"""CIFAR-10 data: a split folder tree or the python batches → uint8 arrays (cached as .npy) → tf.data.

Sources (see docs/cifar10.md):

* a folder with ``train/<class>/`` and ``test/<class>/`` (what ``datacheck audit`` reads and ``apply``
  produces; ``cifar10-jpeg.tar.gz`` unpacks to it), discovered with :func:`datacheck.dataset.discover`;
* the original ``cifar-10-batches-py`` folder (pickled batches, read with a restricted unpickler);
* :func:`download_batches`: Keras' downloader, which needs internet.

Images are decoded once into ``uint8[N, 32, 32, 3]`` arrays and cached as ``.npy`` files under
``<cache>/cifar10/<key>/`` next to the bottleneck cache; the key hashes every selected file's path, label,
size and modification time, so an edited dataset (e.g. after ``datacheck apply``) is decoded again.

The input pipeline only gathers uint8 batches on the host and prefetches them; :func:`augment` (random
crop with 4 px reflect padding, horizontal flip) runs inside the replica step, on the accelerator.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import logging
import os
import pickle
import shutil
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

from datacheck.dataset import Dataset, ImageRecord, discover
from datacheck.errors import DatasetUnreadableError, UsageError
from datacheck.images import ImageDecodeError, read_file

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

#: Side of a CIFAR-10 image; other sizes are resized to it.
IMAGE_SIZE = 32
#: Class names in the order of the original batches (also alphabetical).
CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
#: Bump when the cached arrays' format or the decoding changes.
CACHE_VERSION = 1
#: Where Keras' ``cifar10.load_data`` downloads from; ``$DATACHECK_CIFAR10_URL`` names a mirror.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
#: SHA-256 of that archive (the hash Keras verifies).
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
#: Seconds a download may stall before it fails.
DOWNLOAD_TIMEOUT_S = 30.0
#: Pixels of padding around each image before the random crop.
CROP_PAD = 4

_BATCH_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class Cifar10Arrays:
    """A CIFAR-10-shaped dataset in memory.

    Attributes:
        x_train: ``uint8[N, 32, 32, 3]`` training images.
        y_train: ``int32[N]`` class indices into ``classes``.
        x_test: ``uint8[M, 32, 32, 3]`` test images.
        y_test: ``int32[M]``.
        classes: Class names.
        test_paths: One per test image, dataset-relative like the paths in report.json
            (``test/<class>/<file>``; for the batches, the batch's file name under its class).
        source: What was read, for the record.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    test_paths: tuple[str, ...]
    source: str


def load_cifar10(
    data: Path | None,
    *,
    download: bool = False,
    limit: int | None = None,
    cache_dir: Path,
    progress: Progress | None = None,
) -> Cifar10Arrays:
    """Read CIFAR-10 (or any 32×32-ish split folder tree) into uint8 arrays, through the .npy cache.

    Args:
        data: A split folder tree or a ``cifar-10-batches-py`` folder (or its parent).
        download: Ignore ``data`` and fetch the python batches (see :func:`download_batches`).
        limit: At most this many images per split, evenly over the classes (first by path).
        cache_dir: The datacheck cache folder; arrays go to ``cache_dir/cifar10/<key>/``.
        progress: ``progress("decode", done, total)`` while images are decoded.

    Returns:
        The arrays.

    Raises:
        DatasetUnreadableError: Missing folder, no train/test split, no images, failed download.
    """
    if download:
        data = download_batches(cache_dir)
    assert data is not None
    batches = find_batches_dir(Path(data))
    if batches is not None:
        return _load_batches(batches, limit=limit, cache_dir=cache_dir)
    return _load_folder(Path(data), limit=limit, cache_dir=cache_dir, progress=progress)


# ------------------------------------------------------------------------------------------ download


def download_batches(cache_dir: Path, url: str | None = None) -> Path:
    """Fetch and unpack ``cifar-10-python.tar.gz`` with ``keras.utils.get_file`` (SHA-256 verified).

    Args:
        cache_dir: The datacheck cache; the archive goes to ``cache_dir/cifar10/download/``.
        url: Source URL; default ``$DATACHECK_CIFAR10_URL`` or :data:`CIFAR10_URL`.

    Returns:
        The ``cifar-10-batches-py`` folder.

    Raises:
        DatasetUnreadableError: The download failed (offline, blocked, wrong hash); the message says how to
            get the data without internet.
    """
    import keras

    origin = url or os.environ.get("DATACHECK_CIFAR10_URL") or CIFAR10_URL
    target = cache_dir / "cifar10" / "download"
    target.mkdir(parents=True, exist_ok=True)
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            path = keras.utils.get_file(
                fname="cifar-10-batches-py-target",
                origin=origin,
                extract=True,
                file_hash=CIFAR10_SHA256,
                cache_dir=str(target),
                cache_subdir="",
            )
    except Exception as err:  # get_file raises bare Exception for network errors
        raise DatasetUnreadableError(
            f"could not download CIFAR-10 from {origin} ({_one_line(err)}). --download needs internet; "
            "offline, fetch cifar-10-python.tar.gz elsewhere, unpack it and pass --data "
            "<folder>/cifar-10-batches-py (or a train/<class>/, test/<class>/ image folder)"
        ) from None
    found = find_batches_dir(Path(path))
    if found is None:
        raise DatasetUnreadableError(f"the download in {path} holds no cifar-10-batches-py folder")
    return found


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]


# ------------------------------------------------------------------------------------------ batches


def find_batches_dir(path: Path) -> Path | None:
    """``path`` itself or ``path/cifar-10-batches-py`` when it holds the five data batches and test_batch."""
    for candidate in (path, path / "cifar-10-batches-py"):
        if all((candidate / name).is_file() for name in (*_BATCH_FILES, "test_batch")):
            return candidate
    return None


def _load_batches(folder: Path, *, limit: int | None, cache_dir: Path) -> Cifar10Arrays:
    files = [folder / name for name in (*_BATCH_FILES, "test_batch", "batches.meta")]
    key = _key("batches", limit, [(f.name, *_stat_key(f)) for f in files if f.exists()])
    cached = _read_cache(cache_dir, key)
    if cached is not None:
        return cached
    classes = _batch_class_names(folder / "batches.meta")
    x_train, y_train, _ = _read_batch_files([folder / name for name in _BATCH_FILES])
    x_test, y_test, names = _read_batch_files([folder / "test_batch"])
    train_pick = balanced_subset(y_train, limit)
    test_pick = balanced_subset(y_test, limit)
    arrays = Cifar10Arrays(
        x_train=x_train[train_pick],
        y_train=y_train[train_pick],
        x_test=x_test[test_pick],
        y_test=y_test[test_pick],
        classes=classes,
        test_paths=tuple(f"test/{classes[y_test[i]]}/{names[i]}" for i in test_pick),
        source=f"cifar-10-batches-py at {folder}",
    )
    _write_cache(cache_dir, key, arrays)
    return arrays


def _batch_class_names(meta: Path) -> tuple[str, ...]:
    if not meta.is_file():
        return CLASSES
    names = _unpickle(meta).get(b"label_names")
    if not isinstance(names, list) or not names:
        raise DatasetUnreadableError(f"{meta} has no label_names list")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def _read_batch_files(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    images, labels, names = [], [], []
    for path in paths:
        batch = _unpickle(path)
        data = np.asarray(batch.get(b"data"))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE:
            raise DatasetUnreadableError(f"{path}: 'data' is not a uint8 array of N × 3072 pixels")
        images.append(data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch.get(b"labels"), dtype=np.int32))
        raw_names = batch.get(b"filenames") or [f"{len(names) + i:05d}.png" for i in range(len(data))]
        names += [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in raw_names]
        if len(labels[-1]) != len(data):
            raise DatasetUnreadableError(f"{path}: {len(data)} images but {len(labels[-1])} labels")
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), names


def _numpy_global(module: str, name: str) -> Any:
    """``numpy.core.*`` names of pickles written by numpy 1 resolve to ``numpy._core.*`` in numpy 2."""
    for candidate in (
        module.replace("numpy.core", "numpy._core"),
        module.replace("numpy._core", "numpy.core"),
    ):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"cannot resolve {module}.{name}")


_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _BatchUnpickler(pickle.Unpickler):
    """Only what a CIFAR batch needs (dicts, lists, bytes, numpy arrays): a batch file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load: the pickle references {module}.{name}")
        if module == "_codecs":
            import codecs

            return codecs.encode
        return _numpy_global(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            obj = _BatchUnpickler(handle, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise DatasetUnreadableError(f"cannot read CIFAR batch {path}: {_one_line(err)}") from None
    if not isinstance(obj, dict):
        raise DatasetUnreadableError(f"{path} is not a CIFAR batch (expected a pickled dict)")
    return obj


# ------------------------------------------------------------------------------------------ folders


def _load_folder(
    root: Path, *, limit: int | None, cache_dir: Path, progress: Progress | None
) -> Cifar10Arrays:
    dataset = discover(root)
    train, test, classes = _split_records(dataset)
    train = [train[i] for i in balanced_subset(_labels(train, classes), limit)]
    test = [test[i] for i in balanced_subset(_labels(test, classes), limit)]
    rows = [(r.path, r.label, r.split, *_stat_key(r.abs_path)) for r in (*train, *test)]
    key = _key("folder", limit, rows)
    cached = _read_cache(cache_dir, key)
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
    _write_cache(cache_dir, key, arrays)
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


def balanced_subset(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of at most ``limit`` items taken round-robin over the classes, in their original order.

    Args:
        labels: Class index per item.
        limit: ``None`` keeps everything.

    Returns:
        Sorted indices.
    """
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rank = np.zeros(len(labels), dtype=np.int64)
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        rank[members] = np.arange(len(members))
    order = np.lexsort((labels, rank))  # first of every class, then second of every class, …
    return np.sort(order[:limit])


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
        raise ImageDecodeError(f"cannot decode image: {_one_line(err)}") from err
    if rgb.size != (IMAGE_SIZE, IMAGE_SIZE):
        rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(rgb, dtype=np.uint8)


# ------------------------------------------------------------------------------------------ .npy cache


def _stat_key(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def _key(kind: str, limit: int | None, rows: Sequence[tuple]) -> str:
    digest = hashlib.sha256(f"{CACHE_VERSION}|{kind}|{limit}".encode())
    for row in rows:
        digest.update(("\x1f".join(map(str, row)) + "\x1e").encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:24]


def cache_folder(cache_dir: Path, key: str) -> Path:
    """Where the arrays of one dataset version live."""
    return cache_dir / "cifar10" / key


def _read_cache(cache_dir: Path, key: str) -> Cifar10Arrays | None:
    folder = cache_folder(cache_dir, key)
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in _ARRAYS}
    except (OSError, ValueError):
        return None
    logger.info("decoded arrays read from %s", folder)
    return Cifar10Arrays(
        **arrays, classes=tuple(meta["classes"]), test_paths=tuple(meta["test_paths"]), source=meta["source"]
    )


def _write_cache(cache_dir: Path, key: str, arrays: Cifar10Arrays) -> None:
    """Best effort: a read-only or full cache only costs the decoding next time."""
    folder = cache_folder(cache_dir, key)
    staging = folder.with_name(f"{key}.tmp-{os.getpid()}")
    try:
        staging.mkdir(parents=True, exist_ok=True)
        for name in _ARRAYS:
            np.save(staging / f"{name}.npy", getattr(arrays, name), allow_pickle=False)
        meta = {
            "classes": list(arrays.classes),
            "test_paths": list(arrays.test_paths),
            "source": arrays.source,
        }
        (staging / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        os.replace(staging, folder)
        logger.info("decoded arrays cached in %s", folder)
    except OSError as err:
        logger.warning("could not cache the decoded arrays in %s: %s", folder, err)
        shutil.rmtree(staging, ignore_errors=True)


# ------------------------------------------------------------------------------------------ leaks


@dataclass(frozen=True)
class Leaks:
    """Test images that ``datacheck audit`` found duplicated in another split.

    Attributes:
        test_paths: Dataset-relative paths of the leaked test images.
        pairs_listed: Cross-split pairs listed as findings.
        pairs_total: Cross-split pairs found (more than listed when the check's ``max_findings`` cut).
        report_root: The dataset root the report was made on.
    """

    test_paths: frozenset[str]
    pairs_listed: int
    pairs_total: int
    report_root: str | None


def read_leaks(report: Path, test_split: str = "test") -> Leaks:
    """The test images named by the ``leak`` findings of a report.json's ``leakage`` check.

    Args:
        report: A report.json (see docs/report-schema.md).
        test_split: The split whose images are dropped from the leak-free test set.

    Returns:
        The leaked test paths and how complete the list is.

    Raises:
        UsageError: Not a report, or the report has no leakage results.
    """
    try:
        doc = json.loads(Path(report).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read report {report}: {_one_line(err)}") from None
    checks = (
        {c.get("id"): c for c in doc.get("checks", []) if isinstance(c, dict)}
        if isinstance(doc, dict)
        else {}
    )
    leakage = checks.get("leakage")
    if leakage is None or leakage.get("status") in ("error", "skipped"):
        raise UsageError(
            f"{report} has no leakage results; run `datacheck audit` on the dataset with the leakage check"
        )
    findings = [f for f in leakage.get("findings", []) if f.get("kind") == "leak"]
    paths = {path for f in findings for path in _test_files(f, test_split)}
    total = int(leakage.get("metrics", {}).get("pairs", len(findings)))
    return Leaks(
        frozenset(paths), len(findings), max(total, len(findings)), doc.get("dataset", {}).get("root")
    )


def _test_files(finding: dict, test_split: str) -> list[str]:
    files = [str(f) for f in finding.get("files", [])]
    splits = finding.get("splits")
    if isinstance(splits, list) and len(splits) == len(files):
        return [f for f, s in zip(files, splits, strict=True) if s == test_split]
    return [f for f in files if f.split("/", 1)[0].lower() == test_split]


def leak_free_mask(test_paths: Sequence[str], leaks: Leaks, data_root: Path | None) -> np.ndarray:
    """``True`` for the test images not named by ``leaks``.

    Paths of a report made on a parent folder of ``data_root`` are re-rooted first.

    Args:
        test_paths: :attr:`Cifar10Arrays.test_paths`.
        leaks: From :func:`read_leaks`.
        data_root: The folder training reads, to re-root the report's paths.

    Returns:
        Boolean mask over the test images.
    """
    leaked = _rerooted(leaks, data_root)
    mask = np.array([p not in leaked for p in test_paths], dtype=bool)
    matched = int((~mask).sum())
    if leaks.pairs_total > leaks.pairs_listed:
        logger.warning(
            "the report lists %d of %d leaking pairs (the leakage check's max_findings): only the listed "
            "ones are excluded; audit again with a higher max_findings for a complete leak-free test set",
            leaks.pairs_listed,
            leaks.pairs_total,
        )
    logger.info("%d of %d leaked test images named by the report are in this test set", matched, len(leaked))
    return mask


def _rerooted(leaks: Leaks, data_root: Path | None) -> frozenset[str]:
    if not leaks.report_root or data_root is None:
        return leaks.test_paths
    try:
        prefix = Path(os.path.abspath(data_root)).relative_to(Path(leaks.report_root)).as_posix()
    except ValueError:
        return leaks.test_paths
    if prefix in ("", "."):
        return leaks.test_paths
    head = prefix + "/"
    return frozenset(p[len(head) :] for p in leaks.test_paths if p.startswith(head))


# ------------------------------------------------------------------------------------------ tf.data


def epoch_order(n: int, *, epoch: int, seed: int) -> np.ndarray:
    """The shuffled order of the training images in one epoch; the same on every worker and on resume."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def replica_batches(
    order: np.ndarray, *, global_batch: int, replicas: int, first: int, count: int
) -> np.ndarray:
    """Split an epoch into steps of ``global_batch`` and keep the slices of replicas ``first…first+count-1``.

    Args:
        order: :func:`epoch_order`; the last incomplete global batch is dropped.
        global_batch: Images per step over all replicas.
        replicas: Replicas in sync (all workers).
        first: Global index of this input pipeline's first replica.
        count: Replicas this pipeline feeds.

    Returns:
        ``int64[steps × count, global_batch / replicas]``: per step, one row per local replica, in
        replica order (the order in which a distributed dataset hands batches to its devices).
    """
    per_replica = global_batch // replicas
    steps = len(order) // global_batch
    grid = order[: steps * global_batch].reshape(steps, replicas, per_replica)
    return grid[:, first : first + count].reshape(steps * count, per_replica)


def train_dataset(x: tf.Tensor, y: tf.Tensor, index_batches: np.ndarray) -> tf.data.Dataset:
    """uint8 image batches and int32 labels gathered on the host from index rows, prefetched."""
    rows = tf.data.Dataset.from_tensor_slices(index_batches)
    batches = rows.map(
        lambda idx: (tf.gather(x, idx), tf.gather(y, idx)), num_parallel_calls=tf.data.AUTOTUNE
    )
    return batches.prefetch(tf.data.AUTOTUNE)


def test_dataset(x: np.ndarray, batch: int) -> tf.data.Dataset:
    """The test images in order, in uint8 batches, prefetched."""
    return tf.data.Dataset.from_tensor_slices(x).batch(batch).prefetch(tf.data.AUTOTUNE)


def augment(images: tf.Tensor, seed: tf.Tensor, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """Random crop (``CROP_PAD`` px reflect padding) and horizontal flip, per image, on the device.

    Args:
        images: ``[B, 32, 32, 3]`` batch (any numeric dtype).
        seed: ``int32[2]`` stateless seed; the same seed gives the same crops and flips.
        dtype: Output dtype.

    Returns:
        The augmented batch, ``dtype``.
    """
    x = tf.cast(images, dtype)
    batch, size = tf.shape(x)[0], x.shape[1]
    padded = tf.pad(x, [[0, 0], [CROP_PAD, CROP_PAD], [CROP_PAD, CROP_PAD], [0, 0]], mode="REFLECT")
    offsets = tf.random.stateless_uniform([batch, 2], seed, 0, 2 * CROP_PAD + 1, dtype=tf.int32)
    rows = offsets[:, :1] + tf.range(size)[None, :]
    cols = offsets[:, 1:] + tf.range(size)[None, :]
    x = tf.gather(padded, rows, axis=1, batch_dims=1)
    x = tf.gather(x, cols, axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform([batch], seed + 1) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
