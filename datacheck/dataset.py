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

import csv
import errno
import hashlib
import logging
import os
import re
import stat
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from datacheck.errors import DatasetUnreadableError
from datacheck.outputs import is_marked

logger = logging.getLogger(__name__)

Layout = Literal["classes", "splits", "manifest", "webdataset", "parquet", "hf"]

#: Layouts whose images live inside container files: readable, but ``apply`` cannot move them.
CONTAINER_LAYOUTS: frozenset[str] = frozenset({"webdataset", "parquet", "hf"})

#: File extensions treated as images (compared lower-cased).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)

#: Top-level folder names that make a tree a ``splits`` layout (compared lower-cased).
SPLIT_NAMES: frozenset[str] = frozenset({"train", "val", "valid", "validation", "dev", "test"})

#: Every :attr:`FileIssue.kind` datacheck produces, with what it means.
ISSUE_KINDS: dict[str, str] = {
    "not_an_image": "a file (or folder listed in a manifest) that is not an image by its extension",
    "duplicate_path": "the same file or folder reached a second time (symbolic/hard link, repeated row)",
    "unreadable": "a file or folder that could not be read, or an image that could not be decoded",
    "no_label": "an image without a class: directly in the root or a split folder, or an empty label",
    "missing": "a manifest row whose file does not exist",
    "bad_manifest_row": "a manifest row without a path",
}

#: Folders skipped like hidden ones (macOS resource forks in zip archives).
_IGNORED_FOLDERS = frozenset({"__MACOSX"})

#: TF retrain.py's ``MAX_NUM_IMAGES_PER_CLASS``: the modulus of the stable split hash.
_MAX_NUM_IMAGES_PER_CLASS = 2**27 - 1

_NOHASH = re.compile(r"_nohash_.*$", re.DOTALL)


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
    """

    path: str
    abs_path: Path
    label: str
    split: str | None
    blob: Blob | None = None


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


def display_name(name: str) -> str:
    r"""Return a file name as a printable, JSON-safe string.

    Bytes that are not valid UTF-8 (surrogate-escaped by Python) become ``\\xNN``; other non-printable
    characters become ``\\xNN``/``\\uNNNN`` escapes.
    """
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


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
    from datacheck.sources import detect_format, discover_container

    kind = detect_format(root, manifest) if format_in == "auto" else format_in
    if kind in CONTAINER_LAYOUTS:
        dataset = discover_container(root, kind)
        _log_discovered(dataset)
        return dataset
    root = Path(os.path.abspath(root))
    if manifest is None and kind == "manifest":
        root, manifest = root.parent, root
    if manifest is not None:
        dataset = _discover_manifest(root, Path(os.path.abspath(manifest)))
    else:
        dataset = _discover_tree(root)
    _log_discovered(dataset)
    return dataset


def _log_discovered(dataset: Dataset) -> None:
    logger.info(
        "discovered %d images in %d classes under %s (%s layout); %d files left out",
        len(dataset.records),
        len(dataset.classes),
        dataset.root,
        dataset.layout,
        len(dataset.issues),
    )


# ----------------------------------------------------------------------------------------- folder trees


@dataclass(frozen=True, slots=True)
class _Found:
    """A regular file met while walking, before dedup and classification."""

    parts: tuple[str, ...]  # path components relative to the root (file-system str, may hold surrogates)
    path: str  # the display form of ``parts``
    abs_path: Path
    identity: tuple[int, int]  # (st_dev, st_ino)
    via_symlink: bool


@dataclass
class _Walk:
    """Everything one walk of a tree found."""

    files: list[_Found] = field(default_factory=list)
    issues: list[FileIssue] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _PendingDir:
    """A folder waiting to be listed."""

    parts: tuple[str, ...]
    abs_path: Path
    identity: tuple[int, int]  # (st_dev, st_ino) of the folder (of its target for a link)
    via_symlink: bool  # some folder on the way here was a symbolic link
    is_link: bool  # this folder itself is a symbolic link


def _join_display(parts: Iterable[str]) -> str:
    return "/".join(display_name(p) for p in parts)


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name in _IGNORED_FOLDERS


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _not_an_image_reason(name: str) -> str:
    ext = os.path.splitext(name)[1]
    accepted = ", ".join(sorted(IMAGE_EXTENSIONS))
    if not ext:
        return f"not an image file: no file extension (accepted: {accepted})"
    return f"not an image file: extension {display_name(ext)!r} is not one of {accepted}"


def _check_root(root: Path) -> None:
    if not root.exists():
        raise DatasetError(
            f"dataset folder {root} does not exist: pass a folder with one sub-folder per class "
            "(root/<class>/<image>) or a CSV manifest"
        )
    if not root.is_dir():
        raise DatasetError(
            f"{root} is not a folder: pass a dataset folder, or a CSV manifest whose name ends in .csv"
        )


def _top_level_folders(root: Path) -> list[str]:
    try:
        with os.scandir(root) as entries:
            return sorted(
                e.name for e in entries if not _is_ignored(e.name) and _is_dir(e) and not is_marked(e.path)
            )
    except OSError as err:
        raise DatasetError(f"cannot list dataset folder {root}: {err.strerror or err}") from err


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def _detect_layout(folders: list[str]) -> Layout:
    if folders and all(name.lower() in SPLIT_NAMES for name in folders):
        return "splits"
    return "classes"


def _scan_dir(pending: _PendingDir, walk: _Walk) -> list[_PendingDir]:
    """List one folder: record its files in ``walk`` and return its sub-folders (sorted by name)."""
    try:
        with os.scandir(pending.abs_path) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as err:
        walk.issues.append(_unreadable_folder(pending, err))
        return []
    subdirs: list[_PendingDir] = []
    for entry in entries:
        if _is_ignored(entry.name):
            continue
        parts = (*pending.parts, entry.name)
        abs_path = pending.abs_path / entry.name
        try:
            st = os.stat(abs_path)
        except OSError as err:
            walk.issues.append(_unstattable(parts, entry, err))
            continue
        is_link = entry.is_symlink()
        identity = (st.st_dev, st.st_ino)
        if stat.S_ISDIR(st.st_mode):
            if is_marked(abs_path):
                logger.info(
                    "skipped %s: a folder datacheck wrote (report, cache, model, quarantine)", abs_path
                )
                continue
            subdirs.append(_PendingDir(parts, abs_path, identity, pending.via_symlink or is_link, is_link))
        elif stat.S_ISREG(st.st_mode):
            found = _Found(parts, _join_display(parts), abs_path, identity, pending.via_symlink or is_link)
            walk.files.append(found)
        else:
            walk.issues.append(
                FileIssue(_join_display(parts), "not_an_image", "not a regular file: device, pipe or socket")
            )
    return subdirs


def _unreadable_folder(pending: _PendingDir, err: OSError) -> FileIssue:
    path = _join_display(pending.parts) or "."
    if isinstance(err, PermissionError):
        return FileIssue(
            path, "unreadable", "permission denied: cannot list this folder; check its permissions"
        )
    return FileIssue(path, "unreadable", f"cannot list folder: {err.strerror or err}")


def _unstattable(parts: tuple[str, ...], entry: os.DirEntry[str], err: OSError) -> FileIssue:
    path = _join_display(parts)
    if entry.is_symlink() and isinstance(err, FileNotFoundError):
        return FileIssue(path, "unreadable", "broken symbolic link: its target does not exist")
    if isinstance(err, PermissionError):
        return FileIssue(path, "unreadable", "permission denied: cannot inspect this file; check permissions")
    if err.errno == errno.ELOOP:
        return FileIssue(path, "unreadable", "symbolic link loop: the link points back to itself")
    return FileIssue(path, "unreadable", f"cannot inspect file: {err.strerror or err}")


def _walk_tree(root: Path) -> _Walk:
    """Walk ``root`` following symlinks, without loops and preferring real paths over linked ones.

    The real tree is walked first (depth first, sorted); folders reached through a symbolic link are
    deferred and walked afterwards in path order, so a folder linked from elsewhere is listed under its
    real path and the link is reported as ``duplicate_path``.
    """
    walk = _Walk()
    root_stat = os.stat(root)
    root_identity = (root_stat.st_dev, root_stat.st_ino)
    seen: dict[tuple[int, int], str] = {root_identity: "."}
    stack = [_PendingDir((), root, root_identity, via_symlink=False, is_link=False)]
    deferred: list[_PendingDir] = []
    while True:
        while stack:
            for sub in reversed(_scan_dir(stack.pop(), walk)):
                if sub.is_link:
                    deferred.append(sub)
                elif _mark_seen(sub, seen, walk.issues):
                    stack.append(sub)
        if not deferred:
            return walk
        deferred.sort(key=lambda d: d.parts, reverse=True)
        linked = deferred.pop()
        if _mark_seen(linked, seen, walk.issues):
            stack.append(linked)


def _mark_seen(pending: _PendingDir, seen: dict[tuple[int, int], str], issues: list[FileIssue]) -> bool:
    """Record a folder as visited; report it and return False when it was visited before."""
    path = _join_display(pending.parts)
    if pending.identity in seen:
        first = seen[pending.identity]
        where = "the dataset root" if first == "." else f"{first!r}"
        issues.append(
            FileIssue(
                path,
                "duplicate_path",
                f"folder reached twice: same folder as {where} (symbolic link); skipped here",
            )
        )
        return False
    seen[pending.identity] = path
    return True


def _dedupe_files(files: list[_Found]) -> tuple[list[_Found], list[FileIssue]]:
    """Keep one path per physical file: real paths before linked ones, then the first in path order."""
    by_identity: dict[tuple[int, int], list[_Found]] = defaultdict(list)
    for found in files:
        by_identity[found.identity].append(found)
    kept: list[_Found] = []
    issues: list[FileIssue] = []
    for group in by_identity.values():
        group.sort(key=lambda f: (f.via_symlink, f.path))
        kept.append(group[0])
        issues.extend(
            FileIssue(
                other.path,
                "duplicate_path",
                f"same file reached twice: identical to {group[0].path!r} "
                "(symbolic or hard link); counted once",
            )
            for other in group[1:]
        )
    return kept, issues


def _classify(found: _Found, layout: Layout) -> ImageRecord | FileIssue:
    """Turn a walked file into a record (label from its folders) or the issue that keeps it out."""
    name = found.parts[-1]
    if not _is_image_name(name):
        return FileIssue(found.path, "not_an_image", _not_an_image_reason(name))
    if layout == "splits":
        if len(found.parts) < 3:
            return _no_class_folder_in_split(found)
        return ImageRecord(found.path, found.abs_path, display_name(found.parts[1]), found.parts[0].lower())
    if len(found.parts) < 2:
        return FileIssue(
            found.path,
            "no_label",
            "no class folder: this image is directly in the dataset root; "
            "move it into a folder named after its class (<class>/<image>)",
        )
    return ImageRecord(found.path, found.abs_path, display_name(found.parts[0]), None)


def _no_class_folder_in_split(found: _Found) -> FileIssue:
    where = "dataset root" if len(found.parts) == 1 else f"split folder {display_name(found.parts[0])!r}"
    return FileIssue(
        found.path,
        "no_label",
        f"no class folder: this image is directly in the {where}; "
        "move it into a class folder (<split>/<class>/<image>)",
    )


def _discover_tree(root: Path) -> Dataset:
    _check_root(root)
    layout = _detect_layout(_top_level_folders(root))
    walk = _walk_tree(root)
    if not walk.files and not walk.issues:
        raise DatasetError(
            f"dataset folder {root} is empty: put images in one sub-folder per class "
            "(root/<class>/<image>, or root/<split>/<class>/<image>)"
        )
    kept, issues = _dedupe_files(walk.files)
    issues.extend(walk.issues)
    records: list[ImageRecord] = []
    for found in kept:
        item = _classify(found, layout)
        (records if isinstance(item, ImageRecord) else issues).append(item)
    if not records:
        raise DatasetError(_no_images_message(root, issues))
    return Dataset(root, layout, tuple(sorted(records, key=lambda r: r.path)), _sorted_issues(issues))


def discover_unlabelled(root: Path) -> Dataset:
    """Every image under ``root`` regardless of folders, e.g. samples of what the application will see.

    Labels are the top-level folder name when there is one (``""`` for images directly in ``root``); the
    representativeness check compares such a set with the training data and does not use the labels.
    """
    _check_root(root)
    walk = _walk_tree(root)
    kept, issues = _dedupe_files(walk.files)
    issues.extend(walk.issues)
    records: list[ImageRecord] = []
    for found in kept:
        if not _is_image_name(found.parts[-1]):
            issues.append(FileIssue(found.path, "not_an_image", _not_an_image_reason(found.parts[-1])))
            continue
        label = display_name(found.parts[0]) if len(found.parts) > 1 else ""
        records.append(ImageRecord(found.path, found.abs_path, label, None))
    if not records:
        raise DatasetError(f"no images found under the reference folder {root}")
    return Dataset(root, "classes", tuple(sorted(records, key=lambda r: r.path)), _sorted_issues(issues))


def _no_images_message(root: Path, issues: list[FileIssue]) -> str:
    kinds = Counter(issue.kind for issue in issues)
    found = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    return (
        f"no labelled images found under {root} ({found}): put images in one sub-folder per class "
        f"(root/<class>/<image>); accepted extensions: {', '.join(sorted(IMAGE_EXTENSIONS))}"
    )


def _sorted_issues(issues: Iterable[FileIssue]) -> tuple[FileIssue, ...]:
    return tuple(sorted(issues, key=lambda i: (i.path, i.kind, i.reason)))


# -------------------------------------------------------------------------------------------- manifests


@dataclass(frozen=True, slots=True)
class _Columns:
    path: int
    label: int
    split: int | None


@dataclass(frozen=True, slots=True)
class _ManifestRow:
    line: int
    path: str
    label: str
    split: str | None


def _read_rows(manifest: Path) -> Iterator[_ManifestRow | FileIssue]:
    """Parse the manifest; yield rows, or issues for rows without a path."""
    try:
        handle = manifest.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as err:
        raise DatasetError(f"cannot read manifest {manifest}: {err.strerror or err}") from err
    with handle:
        reader = csv.reader(handle)
        columns = _parse_header(manifest, next(reader, None))
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            yield _parse_row(manifest, reader.line_num, row, columns)


def _parse_header(manifest: Path, header: list[str] | None) -> _Columns:
    names = [cell.strip().lower() for cell in header or []]
    if "path" not in names or "label" not in names:
        first = ",".join(header or [])[:80] or "(empty file)"
        raise DatasetError(
            f"manifest {manifest} needs a header row with the columns path,label[,split]; "
            f"its first line is {display_name(first)!r}"
        )
    return _Columns(
        names.index("path"), names.index("label"), names.index("split") if "split" in names else None
    )


def _cell(row: list[str], index: int | None) -> str:
    return row[index].strip() if index is not None and index < len(row) else ""


def _parse_row(manifest: Path, line: int, row: list[str], columns: _Columns) -> _ManifestRow | FileIssue:
    path = _cell(row, columns.path)
    if not path:
        return FileIssue(
            f"{display_name(manifest.name)}:{line}", "bad_manifest_row", "empty path: row has no path"
        )
    split = _cell(row, columns.split).lower() or None
    return _ManifestRow(line, path, _cell(row, columns.label), split)


def _manifest_display_path(abs_path: str, root: Path) -> str:
    rel = os.path.relpath(abs_path, root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return "/" + _join_display(Path(abs_path).parts[1:])
    return _join_display(Path(rel).parts)


def _discover_manifest(root: Path, manifest: Path) -> Dataset:
    if not manifest.is_file():
        raise DatasetError(
            f"manifest {manifest} does not exist: pass a CSV file with the columns path,label[,split]"
        )
    if not root.is_dir():
        raise DatasetError(
            f"dataset root {root} is not a folder: with a manifest, pass the folder its paths are under"
        )
    records: list[ImageRecord] = []
    issues: list[FileIssue] = []
    first_seen: dict[tuple[int, int], _ManifestRow] = {}
    for row in _read_rows(manifest):
        if isinstance(row, FileIssue):
            issues.append(row)
            continue
        item = _manifest_item(row, root, manifest, first_seen)
        (records if isinstance(item, ImageRecord) else issues).append(item)
    if not records:
        raise DatasetError(
            f"manifest {manifest} lists no usable image ({len(issues)} rows left out); "
            "check that its paths are relative to the manifest's folder or absolute"
        )
    return Dataset(root, "manifest", tuple(sorted(records, key=lambda r: r.path)), _sorted_issues(issues))


def _manifest_item(
    row: _ManifestRow, root: Path, manifest: Path, first_seen: dict[tuple[int, int], _ManifestRow]
) -> ImageRecord | FileIssue:
    abs_path = os.path.normpath(os.path.join(manifest.parent, row.path))
    path = _manifest_display_path(abs_path, root)
    where = f"manifest line {row.line}"
    try:
        st = os.stat(abs_path)
    except FileNotFoundError:
        return FileIssue(path, "missing", f"file not found: listed on {where} but does not exist")
    except OSError as err:
        return FileIssue(path, "unreadable", f"cannot inspect file: {err.strerror or err} ({where})")
    if stat.S_ISDIR(st.st_mode):
        return FileIssue(path, "not_an_image", f"is a folder: {where} must name an image file")
    if not _is_image_name(abs_path):
        return FileIssue(path, "not_an_image", _not_an_image_reason(os.path.basename(abs_path)))
    if not row.label:
        return FileIssue(path, "no_label", f"empty label: {where} has no label; fill in the label column")
    identity = (st.st_dev, st.st_ino)
    if identity in first_seen:
        first = first_seen[identity]
        return FileIssue(
            path,
            "duplicate_path",
            f"listed twice: {where} repeats the file of line {first.line} "
            f"(label {display_name(first.label)!r}); counted once",
        )
    first_seen[identity] = row
    return ImageRecord(path, Path(abs_path), display_name(row.label), row.split)
