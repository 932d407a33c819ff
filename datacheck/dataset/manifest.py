"""Manifest discovery: a CSV file with a header and the columns ``path,label[,split]``.

Relative paths in the manifest are relative to the manifest's folder; output paths are relative to the
dataset root. A path listed twice is kept once and reported as ``duplicate_path``.
"""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from datacheck.dataset.records import (
    Dataset,
    DatasetError,
    FileIssue,
    ImageRecord,
    _is_image_name,
    _join_display,
    _not_an_image_reason,
    _sorted_issues,
    display_name,
)


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
