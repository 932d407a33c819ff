"""Datasets kept in container files: WebDataset tar shards, Parquet, Hugging Face datasets saved to disk.

Each reader turns its format into the same frozen :class:`~datacheck.dataset.Dataset` the folder walk
produces, so every check, the report, the gate and the cache work unchanged:

* a record's :attr:`~datacheck.dataset.ImageRecord.path` is a stable key — ``<shard>/<member>`` for a tar
  member, ``<file>#<row>`` for a table row — and its :class:`~datacheck.dataset.Blob` says where the bytes
  are; :func:`read_record` reads them (one function for every consumer: embedding, thumbnails, training);
* the cache stays content-addressed: the same JPEG in a folder and in a shard has the same key, so a
  dataset converted between formats is not embedded again;
* ``apply`` cannot move a member out of a container: it writes the decisions as a list instead.

Containers may be local paths or fsspec URIs (``s3://…``, ``gs://…``, ``memory://…``); the libraries that
read them (``pyarrow``, ``fsspec``) are the optional extra ``datacheck[formats]``. Tar shards need only the
standard library when local.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from datacheck.dataset import CONTAINER_LAYOUTS, DatasetError, FileIssue, ImageRecord
from datacheck.images import MAX_FILE_BYTES, read_file
from datacheck.sources.fs import dataset_root, is_uri, isdir, isfile, listdir

logger = logging.getLogger(__name__)

#: Values of ``--format-in``.
FORMATS: tuple[str, ...] = ("auto", "folder", "manifest", "webdataset", "parquet", "hf")

_SUFFIX_FORMATS = {".tar": "webdataset", ".parquet": "parquet", ".csv": "manifest"}
_HF_MARKERS = ("dataset_dict.json", "state.json")


def detect_format(root: Path | str, manifest: Path | None = None) -> str:
    """The format of ``root`` from its name and contents.

    A ``.tar`` / ``.parquet`` / ``.csv`` file is a WebDataset shard / Parquet table / manifest; a folder
    with ``dataset_dict.json`` or ``state.json`` is a Hugging Face dataset saved with ``save_to_disk``; a
    folder whose only data files (at any depth, hidden ones ignored) are ``.tar`` or ``.parquet`` is that
    format; anything else is an image folder.
    """
    if manifest is not None:
        return "manifest"
    text = str(root)
    suffix = Path(text.rstrip("/")).suffix.lower()
    if suffix in _SUFFIX_FORMATS and isfile(text):
        return _SUFFIX_FORMATS[suffix]
    if not isdir(text):
        return "folder"  # the folder walk words the error (missing path, not a folder)
    names = listdir(text)
    if any(Path(n).name in _HF_MARKERS for n in names):
        return "hf"
    data = _data_suffixes(text)
    if data and data <= {".tar"}:
        return "webdataset"
    if data and data <= {".parquet"}:
        return "parquet"
    return "folder"


def _data_suffixes(root: str, depth: int = 3) -> set[str]:
    """Suffixes of the files under ``root`` (a few levels deep), hidden files and sidecars ignored.

    Stops at the first file that is neither a shard nor a table: an image folder is recognised after
    listing a folder or two, not the whole tree.
    """
    suffixes: set[str] = set()
    pending = [(root, 0)]
    while pending:
        folder, level = pending.pop()
        for name in listdir(folder):
            base = Path(name).name
            if base.startswith(".") or base.lower() in _SIDECARS:
                continue
            if isdir(name):
                if level < depth:
                    pending.append((name, level + 1))
                continue
            suffixes.add(Path(base).suffix.lower())
            if not suffixes <= _CONTAINER_SUFFIXES:
                return suffixes
    return suffixes


_CONTAINER_SUFFIXES = frozenset({".tar", ".parquet"})


#: Files beside shards or tables that describe them rather than hold data.
_SIDECARS = frozenset({"classes.txt", "readme.md", "license", "license.txt", "dataset_info.json"})


def container_root(root: Path | str) -> Path | str:
    """What :attr:`Dataset.root` holds for a container dataset: the absolute local path, or the URI."""
    return dataset_root(_text(root))


def _text(root: Path | str) -> str:
    return str(root) if is_uri(str(root)) else str(Path(root).absolute())


def container_items(root: Path | str, kind: str) -> Iterator[ImageRecord | FileIssue]:
    """Every labelled image of a container dataset of format ``kind`` and every member left out, as read."""
    if kind not in CONTAINER_LAYOUTS:
        raise ValueError(f"not a container format: {kind!r}")
    text = _text(root)
    if not (isfile(text) or isdir(text)):
        raise DatasetError(f"{text} does not exist: pass a {kind} file or folder")
    if kind == "webdataset":
        from datacheck.sources.webdataset import webdataset_items

        return webdataset_items(text)
    from datacheck.sources.tables import hf_items, parquet_items

    return parquet_items(text) if kind == "parquet" else hf_items(text)


def no_records_message(kind: str, root: str, issues: Sequence[FileIssue]) -> str:
    """What to do when a container dataset holds no labelled image."""
    if kind == "webdataset":
        from datacheck.sources.webdataset import no_records_message as webdataset_message

        return webdataset_message(root, issues)
    reasons = "; ".join(sorted({i.reason for i in issues})[:3])
    return f"no labelled images in {root}: {reasons or 'the tables are empty'}"


def read_record(record: ImageRecord, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The encoded bytes of one image, wherever it lives.

    Raises:
        ImageDecodeError: The bytes cannot be read; the reason is one line (``"cannot read …"``).
    """
    if record.blob is None:
        return read_file(record.abs_path, max_bytes=max_bytes)
    from datacheck.sources.blobs import read_blob

    return read_blob(record.blob, max_bytes=max_bytes)


_SPLIT_PREFIX = re.compile(r"^(train|val|valid|validation|dev|test)(?=$|[-_.\d])", re.IGNORECASE)


def split_from_name(*names: str) -> str | None:
    """The split named by a file or folder name (``train-0001.tar``, ``test/``), first match wins."""
    for name in names:
        match = _SPLIT_PREFIX.match(Path(name).name)
        if match:
            return match.group(1).lower()
    return None
