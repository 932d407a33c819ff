"""Table datasets: Parquet files (plain, or as the Hugging Face Hub stores them) and ``save_to_disk`` folders.

One row is one image. Columns are found by type and name:

* image: a Hugging Face ``Image`` struct (``{bytes, path}``), else the first binary column, else a text
  column named like a path (:data:`PATH_COLUMNS`) whose values are files relative to the table's folder;
* label: the first of :data:`LABEL_COLUMNS`; integer labels are named by the Hugging Face ``ClassLabel``
  feature stored in the table's metadata (or ``dataset_info.json``) when there is one;
* split: a ``split`` column, else a split-named folder or file (``train-00000-of-00001.parquet``,
  ``test/``), as ``save_to_disk`` and the Hub lay them out.

Image bytes are not read here: only the label and split columns are, so discovery costs a fraction of a
pass over the data.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from datacheck.dataset import Blob, DatasetError, FileIssue, ImageRecord
from datacheck.sources import fs, split_from_name

logger = logging.getLogger(__name__)

#: Label column names tried in order.
LABEL_COLUMNS: tuple[str, ...] = (
    "label",
    "labels",
    "class",
    "class_name",
    "category",
    "target",
    "fine_label",
)

#: Text columns taken as image paths, tried in order.
PATH_COLUMNS: tuple[str, ...] = (
    "image_path",
    "path",
    "file",
    "filepath",
    "file_path",
    "file_name",
    "filename",
)


@dataclass(frozen=True)
class _Columns:
    """Which columns of a table hold what."""

    image: str
    image_is_path: bool
    label: str
    names: Sequence[str] | None  # ClassLabel names for integer labels
    split: str | None


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as err:
        raise DatasetError(
            "reading Parquet or Arrow datasets needs pyarrow: pip install 'datacheck[formats]'"
        ) from err
    return pyarrow


# ------------------------------------------------------------------------------------------------ Parquet


def parquet_items(root: str) -> Iterator[ImageRecord | FileIssue]:
    """Every labelled row of every ``.parquet`` file under ``root`` (a file or a folder, at any depth)."""
    _pyarrow()
    files = [root] if fs.isfile(root) else sorted(fs.files_under(root, ".parquet"))
    if not files:
        raise DatasetError(f"no .parquet files under {root}")
    for file in files:
        yield from _parquet_rows(file, fs.relative(file, root))


def _parquet_rows(file: str, rel: str) -> Iterator[ImageRecord | FileIssue]:
    import pyarrow.parquet as pq

    try:
        with fs.open_binary(file) as handle:
            table_file = pq.ParquetFile(handle)
            columns = _find_columns(
                table_file.schema_arrow, _hf_features(table_file.schema_arrow.metadata), rel
            )
            wanted = [c for c in (columns.label, columns.split) if c] + (
                [columns.image] if columns.image_is_path else []
            )
            width = len(str(max(0, table_file.metadata.num_rows - 1)))
            row = 0
            for group in range(table_file.num_row_groups):
                table = table_file.read_row_group(group, columns=wanted)
                for offset, values in enumerate(table.to_pylist()):
                    key = f"{rel}#{row:0{width}d}"
                    yield _record(values, columns, file, key, None, ("parquet", group, offset))
                    row += 1
    except DatasetError as err:
        yield FileIssue(rel, "unreadable", str(err))
    except Exception as err:
        yield FileIssue(rel, "unreadable", f"cannot read Parquet file: {err}")


# ------------------------------------------------------------------------------------- save_to_disk folders


def hf_items(root: str) -> Iterator[ImageRecord | FileIssue]:
    """Every labelled row of a Hugging Face ``Dataset`` or ``DatasetDict`` saved with ``save_to_disk``."""
    _pyarrow()
    for split, folder in _hf_splits(root):
        yield from _hf_folder_rows(folder, fs.relative(folder, root) if folder != root else "", split)


def _hf_splits(root: str) -> list[tuple[str | None, str]]:
    """``(split, folder)`` pairs: one per split of a DatasetDict, or the folder itself."""
    manifest = _join(root, "dataset_dict.json")
    if not fs.isfile(manifest):
        return [(None, root)]
    splits = _read_json(manifest).get("splits", [])
    return [(str(name).lower(), _join(root, str(name))) for name in splits]


def _hf_folder_rows(folder: str, rel: str, split: str | None) -> Iterator[ImageRecord | FileIssue]:
    state = _read_json(_join(folder, "state.json"))
    info = _read_json(_join(folder, "dataset_info.json"))
    features = info.get("features") or {}
    for entry in state.get("_data_files", []):
        file = _join(folder, entry["filename"])
        file_rel = f"{rel}/{entry['filename']}" if rel else entry["filename"]
        yield from _arrow_rows(file, file_rel, features, split)


def _arrow_rows(
    file: str, rel: str, features: dict[str, Any], split: str | None
) -> Iterator[ImageRecord | FileIssue]:
    from datacheck.sources.blobs import read_arrow_table

    _pyarrow()
    try:
        table = read_arrow_table(file)
        columns = _find_columns(table.schema, features, rel)
        wanted = [c for c in (columns.label, columns.split) if c] + (
            [columns.image] if columns.image_is_path else []
        )
        width = len(str(max(0, table.num_rows - 1)))
        for row, values in enumerate(table.select(wanted).to_pylist()):
            yield _record(values, columns, file, f"{rel}#{row:0{width}d}", split, ("arrow", 0, row))
    except DatasetError as err:
        yield FileIssue(rel, "unreadable", str(err))
    except Exception as err:
        yield FileIssue(rel, "unreadable", f"cannot read Arrow file: {err}")


# ------------------------------------------------------------------------------------------------ shared


def _find_columns(schema: Any, features: dict[str, Any], rel: str) -> _Columns:
    pa = _pyarrow()
    names = list(schema.names)
    image, is_path = _image_column(schema, pa)
    if image is None:
        raise DatasetError(
            f"no image column in {rel}: expected a Hugging Face Image column, a binary column, or a path "
            f"column named one of {', '.join(PATH_COLUMNS)} (columns: {', '.join(names)})"
        )
    label = next((c for c in LABEL_COLUMNS if c in names), None)
    if label is None:
        raise DatasetError(
            f"no label column in {rel}: name it one of {', '.join(LABEL_COLUMNS)} "
            f"(columns: {', '.join(names)})"
        )
    feature = features.get(label) or {}
    class_names = feature.get("names") if feature.get("_type") == "ClassLabel" else None
    return _Columns(image, is_path, label, class_names, "split" if "split" in names else None)


def _image_column(schema: Any, pa: Any) -> tuple[str | None, bool]:
    for field in schema:
        if pa.types.is_struct(field.type) and field.type.get_field_index("bytes") >= 0:
            return field.name, False
    for field in schema:
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            return field.name, False
    for name in PATH_COLUMNS:
        index = schema.get_field_index(name)
        if index >= 0 and pa.types.is_string(schema.field(index).type):
            return name, True
    return None, False


def _hf_features(metadata: dict[bytes, bytes] | None) -> dict[str, Any]:
    """The ``features`` the Hugging Face libraries store in a Parquet file's metadata (``{}`` if none)."""
    raw = (metadata or {}).get(b"huggingface")
    if not raw:
        return {}
    try:
        return json.loads(raw).get("info", {}).get("features", {}) or {}
    except (ValueError, AttributeError):
        return {}


def _record(
    values: dict[str, Any],
    columns: _Columns,
    file: str,
    key: str,
    split: str | None,
    where: tuple[str, int, int],
) -> ImageRecord | FileIssue:
    """One row as a record (``key`` = ``<file>#<row>``), or the reason it is left out."""
    label = _label_text(values.get(columns.label), columns.names)
    if not label:
        return FileIssue(key, "no_label", f"no label: the {columns.label!r} cell of this row is empty")
    if columns.split and values.get(columns.split):
        split = _shared(str(values[columns.split]).lower())
    elif split is None:
        split = _split_of_file(key.rsplit("#", 1)[0])
    if columns.image_is_path:
        target = values.get(columns.image)
        if not target:
            return FileIssue(key, "unreadable", f"no image: the {columns.image!r} cell of this row is empty")
        path = target if fs.is_uri(target) or target.startswith("/") else _join(fs.parent(file), target)
        return ImageRecord(key, fs.local_path(path), label, split)
    kind, group, offset = where
    blob = Blob(kind, file, (group, offset), columns.image)  # type: ignore[arg-type]
    return ImageRecord(key, _file_path(file), _shared(label), split, blob)


# A million rows of a few files and classes: one object per distinct file path, label and split, shared by
# the rows (each row had its own copies: ~650 bytes of its ~1 kB record).
_shared = sys.intern


@functools.lru_cache(maxsize=4096)
def _file_path(file: str) -> Path:
    return fs.local_path(file)


@functools.lru_cache(maxsize=4096)
def _split_of_file(rel: str) -> str | None:
    return split_from_name(*reversed(PurePosixPath(rel).parts))


def _label_text(value: Any, names: Sequence[str] | None) -> str:
    if value is None:
        return ""
    if names is not None and isinstance(value, int) and 0 <= value < len(names):
        return str(names[value])
    return str(value).strip()


def _join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name


def _read_json(path: str) -> dict[str, Any]:
    if not fs.isfile(path):
        return {}
    with fs.open_binary(path) as handle:
        try:
            data = json.loads(handle.read())
        except ValueError as err:
            raise DatasetError(f"{path} is not valid JSON: {err}") from err
    return data if isinstance(data, dict) else {}
