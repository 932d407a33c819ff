"""Manifest discovery: a CSV file with a header and the columns ``path,label[,split]``.

Relative paths in the manifest are relative to the manifest's folder; output paths are relative to the
dataset root. A path listed twice is kept once and reported as ``duplicate_path``.
"""

from __future__ import annotations

import csv
import itertools
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from datacheck.dataset.records import (
    DatasetError,
    FileIssue,
    ImageRecord,
    _is_image_name,
    _join_display,
    _not_an_image_reason,
    display_name,
)
from datacheck.dataset.streamed import SortedSpool, identity_key


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


def _check_paths(root: Path, manifest: Path) -> None:
    if not manifest.is_file():
        raise DatasetError(
            f"manifest {manifest} does not exist: pass a CSV file with the columns path,label[,split]"
        )
    if not root.is_dir():
        raise DatasetError(
            f"dataset root {root} is not a folder: with a manifest, pass the folder its paths are under"
        )


class _Listed(NamedTuple):
    """A usable manifest row, before rows naming the same file are merged (a tuple: spooled cheaply)."""

    line: int
    written_label: str  # as written in the manifest (quoted in the duplicate's reason)
    path: str
    abs_path: str
    label: str
    split: str | None

    def record(self) -> ImageRecord:
        return ImageRecord(self.path, Path(self.abs_path), self.label, self.split)


def manifest_items(root: Path, manifest: Path, listed: SortedSpool) -> Iterator[ImageRecord | FileIssue]:
    """Every labelled image the manifest lists and every row left out, in no particular order.

    ``listed`` holds the usable rows until rows naming the same file are merged (the first row is kept): in
    memory, or on disk for :func:`~datacheck.dataset.streamed.spool_dataset`.
    """
    _check_paths(root, manifest)
    for row in _read_rows(manifest):
        item = row if isinstance(row, FileIssue) else _manifest_item(row, root, manifest)
        if isinstance(item, FileIssue):
            yield item
        else:
            identity, found = item
            listed.add(identity_key(identity, found.line), (identity, found))
    for _, group in itertools.groupby(listed.in_order(), key=lambda pair: pair[0]):
        (_, first), *others = group
        yield first.record()
        for _, other in others:
            yield FileIssue(
                other.path,
                "duplicate_path",
                f"listed twice: manifest line {other.line} repeats the file of line {first.line} "
                f"(label {display_name(first.written_label)!r}); counted once",
            )


def no_records_message(manifest: Path, issues: Sequence[FileIssue]) -> str:
    """What to do when a manifest lists no usable image."""
    return (
        f"manifest {manifest} lists no usable image ({len(issues)} rows left out); "
        "check that its paths are relative to the manifest's folder or absolute"
    )


def _manifest_item(
    row: _ManifestRow, root: Path, manifest: Path
) -> tuple[tuple[int, int], _Listed] | FileIssue:
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
    listed = _Listed(row.line, row.label, path, abs_path, display_name(row.label), row.split)
    return (st.st_dev, st.st_ino), listed
