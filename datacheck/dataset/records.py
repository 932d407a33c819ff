"""The dataset model: :class:`Dataset`, :class:`ImageRecord`, :class:`FileIssue`, :class:`Blob`.

Also the rules every discovery shares: which file names are images (:data:`IMAGE_EXTENSIONS`), how a file
name is shown (:func:`display_name`), the kinds of issue (:data:`ISSUE_KINDS`) and TF retrain.py's stable
split hash (:func:`stable_split_percentage`).
"""

from __future__ import annotations

import hashlib
import heapq
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from datacheck.errors import DatasetUnreadableError

Layout = Literal["classes", "splits", "manifest", "webdataset", "parquet", "hf"]

#: Layouts whose images live inside container files: readable, but ``apply`` cannot move them.
CONTAINER_LAYOUTS: frozenset[str] = frozenset({"webdataset", "parquet", "hf"})

#: File extensions treated as images (compared lower-cased).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)

#: Every :attr:`FileIssue.kind` datacheck produces, with what it means.
ISSUE_KINDS: dict[str, str] = {
    "not_an_image": "a file (or folder listed in a manifest) that is not an image by its extension",
    "duplicate_path": "the same file or folder reached a second time (symbolic/hard link, repeated row)",
    "unreadable": "a file or folder that could not be read, or an image that could not be decoded",
    "no_label": "an image without a class: directly in the root or a split folder, or an empty label",
    "missing": "a manifest row whose file does not exist",
    "bad_manifest_row": "a manifest row without a path",
}

#: TF retrain.py's ``MAX_NUM_IMAGES_PER_CLASS``: the modulus of the stable split hash.
_MAX_NUM_IMAGES_PER_CLASS = 2**27 - 1

_NOHASH = re.compile(r"_nohash_.*$", re.DOTALL)


#: The roles a split plays. Training learns from ``train``; ``val`` steers training (early stopping);
#: ``test`` measures the result.
TRAIN, VAL, TEST = "train", "val", "test"
#: Split names (compared lower-cased) and the role each plays: the one list discovery, training, the
#: shortcut and representativeness checks read. Order within a role is preference (first found is used).
SPLIT_ROLES: dict[str, str] = {
    "train": TRAIN,
    "training": TRAIN,
    "val": VAL,
    "valid": VAL,
    "validation": VAL,
    "dev": VAL,
    "test": TEST,
    "testing": TEST,
}


def split_role(split: str | None) -> str | None:
    """The role of a split name (``None`` for no split or a name that plays no known role)."""
    return None if split is None else SPLIT_ROLES.get(split.lower())


def splits_with_role(role: str) -> tuple[str, ...]:
    """The split names that play ``role``, in order of preference."""
    return tuple(name for name, has in SPLIT_ROLES.items() if has == role)


class DatasetError(DatasetUnreadableError):
    """The dataset cannot be used at all (missing, empty, no labelled images, malformed manifest)."""


@dataclass(frozen=True, slots=True)
class Blob:
    """Where an image's bytes live inside a container file (see :mod:`datacheck.sources`).

    Attributes:
        kind: ``"tar"`` (a WebDataset shard member), ``"parquet"`` or ``"arrow"`` (a table row).
        container: The container file: a local path or an fsspec URI.
        position: ``tar``: (byte offset of the member's data, its size); ``parquet``: (row group, row in the
            group); ``arrow``: (0, row).
        column: The image column of a table (``""`` for tar).
    """

    kind: Literal["tar", "parquet", "arrow"]
    container: str
    position: tuple[int, int]
    column: str = ""


@dataclass(frozen=True, slots=True)
class ImageRecord:
    r"""One labelled image.

    Attributes:
        path: Relative to the dataset root, ``/``-separated, printable (undecodable bytes shown as ``\\xNN``).
        abs_path: The path to open (keeps the exact bytes of the file name).
        label: Class name (the class folder's name, or the manifest's label).
        split: Lower-cased split name, or ``None`` when the dataset has no splits.
        blob: Set when the image is inside a container file; then ``path`` is a stable key (shard and
            member, or file and row) and ``abs_path`` the container file.
        fingerprint: The file's :func:`~datacheck.fileio.stat_fingerprint` when discovery stat'ed it (a
            folder walk does), so hashing need not stat 60,000 files again; ``None``: stat'ed when needed.
            Not part of the record's identity (equality).
    """

    path: str
    abs_path: Path
    label: str
    split: str | None
    blob: Blob | None = None
    fingerprint: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class FileIssue:
    """A file that is not part of the dataset, and why.

    Attributes:
        path: Same conventions as :attr:`ImageRecord.path`.
        kind: One of :data:`ISSUE_KINDS`.
        reason: One line, ``"<stable head>: <detail>"``, telling the user what is wrong or what to do.
    """

    path: str
    kind: str
    reason: str


@dataclass(frozen=True)
class Dataset:
    """A discovered dataset: its labelled images and the files left out.

    Attributes:
        root: Absolute dataset root (or the fsspec URI of a container dataset); every path is relative to it.
        layout: How labels were found: ``"classes"``, ``"splits"`` or ``"manifest"``.
        records: Labelled images, sorted by path.
        issues: Files that are not part of the dataset, sorted by path.
    """

    root: Path | str
    layout: Layout
    records: tuple[ImageRecord, ...]
    issues: tuple[FileIssue, ...] = ()

    @property
    def movable(self) -> bool:
        """Whether ``apply`` can move the images (they are plain files, not members of containers)."""
        return self.layout not in CONTAINER_LAYOUTS

    def __len__(self) -> int:
        return len(self.records)

    def record_chunks(self, size: int) -> Iterator[tuple[ImageRecord, ...]]:
        """The records, ``size`` at a time (as :class:`~datacheck.dataset.streamed.SpooledDataset` gives)."""
        for first in range(0, len(self.records), size):
            yield self.records[first : first + size]

    def size_sample(self, k: int) -> list[ImageRecord]:
        """:func:`size_sample` of the records."""
        return size_sample(self.records, k)

    @cached_property
    def classes(self) -> tuple[str, ...]:
        """Class names, sorted."""
        return tuple(sorted({r.label for r in self.records}))

    @cached_property
    def splits(self) -> tuple[str, ...]:
        """Split names present, sorted; empty when no record has a split."""
        return tuple(sorted({r.split for r in self.records if r.split is not None}))

    @cached_property
    def class_counts(self) -> dict[str, int]:
        """Images per class, in class order."""
        counts = Counter(r.label for r in self.records)
        return {label: counts[label] for label in self.classes}

    @cached_property
    def split_class_counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class (``{split: {class: n}}``); records without a split are left out."""
        nested: dict[str, Counter[str]] = defaultdict(Counter)
        for record in self.records:
            if record.split is not None:
                nested[record.split][record.label] += 1
        return {split: dict(sorted(nested[split].items())) for split in self.splits}

    def with_issues(self, issues: Iterable[FileIssue]) -> Dataset:
        """Return a copy with ``issues`` added and the records they name removed.

        Used e.g. for decode failures found later (kind ``unreadable``): a file that cannot be used is no
        longer part of the dataset, so counts stay truthful.

        Args:
            issues: New issues; duplicates of existing ones are ignored.

        Returns:
            A new :class:`Dataset`; this one is unchanged.
        """
        new = tuple(issues)
        dropped = {issue.path for issue in new}
        records = tuple(r for r in self.records if r.path not in dropped)
        merged = _sorted_issues(dict.fromkeys(self.issues + new))
        return Dataset(self.root, self.layout, records, merged)


def stable_split_percentage(path: str) -> float:
    """TF retrain.py's stable hash of a file name, as a percentage in ``[0, 100]``.

    Everything from ``_nohash_`` on is ignored, so ``anna_nohash_1.jpg`` and ``anna_nohash_2.jpg`` always
    land in the same split. Only the base name is hashed (retrain.py hashes the path it globbed, which makes
    the split depend on where the dataset lives; TF's speech-commands ``which_set`` uses the base name).

    Args:
        path: A file path or name; directories are ignored.

    Returns:
        ``(int(sha1(name), 16) % (2**27 - 1 + 1)) * 100 / (2**27 - 1)``.
    """
    base = re.split(r"[/\\]", path)[-1]
    hash_name = _NOHASH.sub("", base)
    digest = hashlib.sha1(hash_name.encode("utf-8", "surrogateescape")).hexdigest()
    return (int(digest, 16) % (_MAX_NUM_IMAGES_PER_CLASS + 1)) * (100.0 / _MAX_NUM_IMAGES_PER_CLASS)


def size_sample_key(path: str) -> int:
    """Where a record falls in the sample an automatic input size is decided on (a signed 64-bit int).

    A hash of the record's path: the sample (the records with the smallest keys) is the same whichever order
    the records come in, so a dataset read as a stream (``datacheck embed``) and the same dataset in memory
    (``datacheck audit``) decide the same size, and adding a few images rarely changes it.
    """
    digest = hashlib.blake2b(path.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)  # SQLite integers are signed 64-bit


def size_sample(records: Iterable[ImageRecord], k: int) -> list[ImageRecord]:
    """The ``k`` records with the smallest :func:`size_sample_key` (ties by path), in that order."""
    return heapq.nsmallest(k, records, key=lambda r: (size_sample_key(r.path), r.path))


def display_name(name: str) -> str:
    r"""Return a file name as a printable, JSON-safe string.

    Bytes that are not valid UTF-8 (surrogate-escaped by Python) become ``\\xNN``; other non-printable
    characters become ``\\xNN``/``\\uNNNN`` escapes.
    """
    if name.isascii() and name.isprintable():  # the common case: nothing to escape (no surrogates either)
        return name
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _join_display(parts: Iterable[str]) -> str:
    return "/".join(display_name(p) for p in parts)


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _not_an_image_reason(name: str) -> str:
    ext = os.path.splitext(name)[1]
    accepted = ", ".join(sorted(IMAGE_EXTENSIONS))
    if not ext:
        return f"not an image file: no file extension (accepted: {accepted})"
    return f"not an image file: extension {display_name(ext)!r} is not one of {accepted}"


def _sorted_issues(issues: Iterable[FileIssue]) -> tuple[FileIssue, ...]:
    return tuple(sorted(issues, key=lambda i: (i.path, i.kind, i.reason)))
