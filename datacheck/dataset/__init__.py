"""Dataset discovery: a folder tree or a CSV manifest → a frozen :class:`Dataset`.

Three layouts are understood (see docs/datasets.md):

* ``classes``: ``root/<class>/…/<image>``; sub-folders inside a class folder belong to that class.
* ``splits``: ``root/<split>/<class>/…/<image>`` when *every* top-level folder is a split name
  (train, val, valid, validation, dev, test; any case, stored lower-cased).
* ``manifest``: a CSV file with a header and the columns ``path,label[,split]``.

Datasets stored in container files (WebDataset tar shards, Parquet, a Hugging Face dataset saved to disk)
are read by :mod:`datacheck.sources`; their records carry a :class:`Blob` that says where the bytes live.

Every file that is not part of the dataset is reported as a :class:`FileIssue` instead of being dropped
silently. A path is either a record or an issue, never both (the one exception: a manifest that lists the
same path twice). Paths are relative to the dataset root with ``/`` separators, printable and JSON-safe even
when the file name is not valid UTF-8; :attr:`ImageRecord.abs_path` is the path to open.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from datacheck.dataset.manifest import manifest_items
from datacheck.dataset.manifest import no_records_message as manifest_message
from datacheck.dataset.records import (
    CONTAINER_LAYOUTS,
    IMAGE_EXTENSIONS,
    ISSUE_KINDS,
    SPLIT_ROLES,
    TEST,
    TRAIN,
    VAL,
    Blob,
    Dataset,
    DatasetError,
    FileIssue,
    ImageRecord,
    Layout,
    display_name,
    split_role,
    splits_with_role,
    stable_split_percentage,
)

# Private, but imported from here by datacheck.sources (tables, webdataset).
from datacheck.dataset.records import _sorted_issues as _sorted_issues
from datacheck.dataset.streamed import Scratch, SortedSpool
from datacheck.dataset.tree import SPLIT_NAMES, discover_unlabelled, tree_items, tree_layout
from datacheck.dataset.tree import no_images_message as tree_message

logger = logging.getLogger(__name__)

__all__ = [
    "CONTAINER_LAYOUTS",
    "IMAGE_EXTENSIONS",
    "ISSUE_KINDS",
    "SPLIT_NAMES",
    "SPLIT_ROLES",
    "TEST",
    "TRAIN",
    "VAL",
    "Blob",
    "Dataset",
    "DatasetError",
    "FileIssue",
    "ImageRecord",
    "Layout",
    "discover",
    "discover_unlabelled",
    "display_name",
    "split_role",
    "splits_with_role",
    "stable_split_percentage",
]


def discover(root: Path | str, manifest: Path | None = None, *, format_in: str = "auto") -> Dataset:
    """Find every labelled image of a dataset.

    Args:
        root: The dataset folder, a CSV manifest file, or a container dataset (a WebDataset ``.tar`` shard
            or folder of shards, a ``.parquet`` file or folder, a Hugging Face dataset saved to disk; local
            or an fsspec URI such as ``s3://bucket/shards``).
        manifest: A CSV manifest (``path,label[,split]`` header); relative paths in it are relative to the
            manifest's folder. Output paths are relative to ``root``.
        format_in: ``"auto"`` (by the path, see :func:`datacheck.sources.detect_format`), ``"folder"``,
            ``"manifest"``, ``"webdataset"``, ``"parquet"`` or ``"hf"``.

    Returns:
        The dataset, with every file left out reported in :attr:`Dataset.issues`.

    Raises:
        DatasetError: The root does not exist, is empty, holds no labelled image, or the manifest is
            malformed. The message says what to do.
    """
    source = open_source(root, manifest, format_in=format_in)
    records: list[ImageRecord] = []
    issues: list[FileIssue] = []
    for item in source.items:
        (records if isinstance(item, ImageRecord) else issues).append(item)
    if not records:
        raise DatasetError(source.no_records(issues))
    ordered = tuple(sorted(records, key=lambda r: r.path))
    dataset = Dataset(source.root, source.layout, ordered, _sorted_issues(issues))
    _log_discovered(dataset)
    return dataset


@dataclass(frozen=True)
class Source:
    """A dataset being read: where, how labelled, and its records and issues as they are found.

    Attributes:
        root: What :attr:`Dataset.root` holds.
        layout: What :attr:`Dataset.layout` holds.
        items: Every labelled image and every file left out, in no particular order (iterate once).
        no_records: The message to raise when ``items`` held no record, given the issues met.
    """

    root: Path | str
    layout: Layout
    items: Iterator[ImageRecord | FileIssue]
    no_records: Callable[[Sequence[FileIssue]], str]


def open_source(
    root: Path | str, manifest: Path | None = None, *, format_in: str = "auto", scratch: Scratch | None = None
) -> Source:
    """The reader of the dataset at ``root``, shared by :func:`discover` and ``spool_dataset``.

    Args:
        root: As :func:`discover`.
        manifest: As :func:`discover`.
        format_in: As :func:`discover`.
        scratch: Where a folder walk or a manifest keeps its rows while they are de-duplicated past
            ``SPILL_ITEMS`` (``None``: in memory).
    """
    from datacheck.sources import container_items, container_root, detect_format
    from datacheck.sources import no_records_message as container_message

    kind = detect_format(root, manifest) if format_in == "auto" else format_in
    if kind in CONTAINER_LAYOUTS:
        text = container_root(root)
        no_records = functools.partial(container_message, kind, str(text))
        return Source(text, kind, container_items(root, kind), no_records)  # type: ignore[arg-type]
    root = Path(os.path.abspath(root))
    if manifest is None and kind == "manifest":
        root, manifest = root.parent, root
    if manifest is not None:
        manifest = Path(os.path.abspath(manifest))
        listed = manifest_items(root, manifest, SortedSpool(scratch, "listed"))
        return Source(root, "manifest", listed, functools.partial(manifest_message, manifest))
    layout = tree_layout(root)
    found = tree_items(root, layout, SortedSpool(scratch, "found"))
    return Source(root, layout, found, functools.partial(tree_message, root))


def _log_discovered(dataset: Dataset) -> None:
    logger.info(
        "discovered %d images in %d classes under %s (%s layout); %d files left out",
        len(dataset.records),
        len(dataset.classes),
        dataset.root,
        dataset.layout,
        len(dataset.issues),
    )
