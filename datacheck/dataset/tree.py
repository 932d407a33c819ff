"""Folder-tree discovery: the ``classes`` and ``splits`` layouts, and unlabelled image folders.

The tree is walked following symbolic links, without loops and preferring real paths over linked ones;
every file met is either a record or a :class:`~datacheck.dataset.records.FileIssue`.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from datacheck.dataset.records import (
    IMAGE_EXTENSIONS,
    SPLIT_ROLES,
    Dataset,
    DatasetError,
    FileIssue,
    ImageRecord,
    Layout,
    _is_image_name,
    _join_display,
    _not_an_image_reason,
    _sorted_issues,
    display_name,
)
from datacheck.dataset.streamed import SortedSpool, identity_key
from datacheck.fileio import stat_fingerprint
from datacheck.outputs import is_marked

logger = logging.getLogger(__name__)

#: Top-level folder names that make a tree a ``splits`` layout (compared lower-cased).
SPLIT_NAMES: frozenset[str] = frozenset(SPLIT_ROLES)

#: Folders skipped like hidden ones (macOS resource forks in zip archives).
_IGNORED_FOLDERS = frozenset({"__MACOSX"})


class _Found(NamedTuple):
    """A regular file met while walking, before dedup and classification (a tuple: spooled cheaply)."""

    parts: tuple[str, ...]  # path components relative to the root (file-system str, may hold surrogates)
    path: str  # the display form of ``parts``
    abs_path: str  # made a Path only for the records kept (a Path per file costs ~10 µs)
    identity: tuple[int, int]  # (st_dev, st_ino)
    via_symlink: bool
    fingerprint: str  # stat_fingerprint(): hashing trusts a remembered hash by it


@dataclass
class _Walk:
    """Everything one walk of a tree found: files in ``files`` (by identity), issues here."""

    files: SortedSpool = field(default_factory=lambda: SortedSpool(None, "found"))
    issues: list[FileIssue] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _PendingDir:
    """A folder waiting to be listed."""

    parts: tuple[str, ...]
    abs_path: Path
    identity: tuple[int, int]  # (st_dev, st_ino) of the folder (of its target for a link)
    via_symlink: bool  # some folder on the way here was a symbolic link
    is_link: bool  # this folder itself is a symbolic link


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name in _IGNORED_FOLDERS


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
        try:
            st = os.stat(entry.path)
        except OSError as err:
            walk.issues.append(_unstattable(parts, entry, err))
            continue
        is_link = entry.is_symlink()
        identity = (st.st_dev, st.st_ino)
        if stat.S_ISDIR(st.st_mode):
            abs_path = pending.abs_path / entry.name
            if is_marked(abs_path):
                logger.info(
                    "skipped %s: a folder datacheck wrote (report, cache, model, quarantine)", abs_path
                )
                continue
            subdirs.append(_PendingDir(parts, abs_path, identity, pending.via_symlink or is_link, is_link))
        elif stat.S_ISREG(st.st_mode):
            linked = pending.via_symlink or is_link
            found = _Found(parts, _join_display(parts), entry.path, identity, linked, stat_fingerprint(st))
            # de-duplication reads the files grouped by identity, real paths first, then by path
            walk.files.add(identity_key(identity, int(linked), found.path), found)
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


def _walk_tree(root: Path, files: SortedSpool | None = None) -> _Walk:
    """Walk ``root`` following symlinks, without loops and preferring real paths over linked ones.

    The real tree is walked first (depth first, sorted); folders reached through a symbolic link are
    deferred and walked afterwards in path order, so a folder linked from elsewhere is listed under its
    real path and the link is reported as ``duplicate_path``.
    """
    walk = _Walk() if files is None else _Walk(files)
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


def _deduplicated(files: SortedSpool) -> Iterator[_Found | FileIssue]:
    """One path per physical file: real paths before linked ones, then the first in path order.

    ``files`` yields them grouped by identity, each group in that order (the walk's keys).
    """
    for _, group in itertools.groupby(files.in_order(), key=lambda f: f.identity):
        first, *others = group
        yield first
        for other in others:
            yield FileIssue(
                other.path,
                "duplicate_path",
                f"same file reached twice: identical to {first.path!r} (symbolic or hard link); counted once",
            )


def _classify(found: _Found, layout: Layout) -> ImageRecord | FileIssue:
    """Turn a walked file into a record (label from its folders) or the issue that keeps it out."""
    name = found.parts[-1]
    if not _is_image_name(name):
        return FileIssue(found.path, "not_an_image", _not_an_image_reason(name))
    if layout == "splits":
        if len(found.parts) < 3:
            return _no_class_folder_in_split(found)
        label, split = display_name(found.parts[1]), found.parts[0].lower()
        return ImageRecord(found.path, Path(found.abs_path), label, split, fingerprint=found.fingerprint)
    if len(found.parts) < 2:
        return FileIssue(
            found.path,
            "no_label",
            "no class folder: this image is directly in the dataset root; "
            "move it into a folder named after its class (<class>/<image>)",
        )
    label = display_name(found.parts[0])
    return ImageRecord(found.path, Path(found.abs_path), label, None, fingerprint=found.fingerprint)


def _no_class_folder_in_split(found: _Found) -> FileIssue:
    where = "dataset root" if len(found.parts) == 1 else f"split folder {display_name(found.parts[0])!r}"
    return FileIssue(
        found.path,
        "no_label",
        f"no class folder: this image is directly in the {where}; "
        "move it into a class folder (<split>/<class>/<image>)",
    )


def tree_layout(root: Path) -> Layout:
    """The layout of the folder tree at ``root`` (``splits`` or ``classes``); DatasetError if unusable."""
    _check_root(root)
    return _detect_layout(_top_level_folders(root))


def tree_items(root: Path, layout: Layout, files: SortedSpool) -> Iterator[ImageRecord | FileIssue]:
    """Every labelled image under ``root`` and every file left out, in no particular order.

    ``files`` holds the walked files until they are de-duplicated (in memory, or on disk for
    :func:`~datacheck.dataset.streamed.spool_dataset`).
    """
    walk = _walk_tree(root, files)
    if not len(walk.files) and not walk.issues:
        raise DatasetError(
            f"dataset folder {root} is empty: put images in one sub-folder per class "
            "(root/<class>/<image>, or root/<split>/<class>/<image>)"
        )
    yield from walk.issues
    for item in _deduplicated(walk.files):
        yield item if isinstance(item, FileIssue) else _classify(item, layout)


def discover_unlabelled(root: Path) -> Dataset:
    """Every image under ``root`` regardless of folders, e.g. samples of what the application will see.

    Labels are the top-level folder name when there is one (``""`` for images directly in ``root``); the
    representativeness check compares such a set with the training data and does not use the labels.
    """
    _check_root(root)
    walk = _walk_tree(root)
    issues = list(walk.issues)
    records: list[ImageRecord] = []
    for found in _deduplicated(walk.files):
        if isinstance(found, FileIssue):
            issues.append(found)
        elif not _is_image_name(found.parts[-1]):
            issues.append(FileIssue(found.path, "not_an_image", _not_an_image_reason(found.parts[-1])))
        else:
            label = display_name(found.parts[0]) if len(found.parts) > 1 else ""
            record = ImageRecord(found.path, Path(found.abs_path), label, None, fingerprint=found.fingerprint)
            records.append(record)
    if not records:
        raise DatasetError(f"no images found under the reference folder {root}")
    return Dataset(root, "classes", tuple(sorted(records, key=lambda r: r.path)), _sorted_issues(issues))


def no_images_message(root: Path, issues: Sequence[FileIssue]) -> str:
    """What to do when a folder tree holds no labelled image."""
    kinds = Counter(issue.kind for issue in issues)
    found = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    return (
        f"no labelled images found under {root} ({found}): put images in one sub-folder per class "
        f"(root/<class>/<image>); accepted extensions: {', '.join(sorted(IMAGE_EXTENSIONS))}"
    )
