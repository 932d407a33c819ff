"""Local paths and fsspec URIs behind one small interface (fsspec is imported only for URIs)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str) -> bool:
    """Whether ``path`` names a filesystem by protocol (``s3://…``, ``memory://…``, ``file://…``)."""
    return bool(_URI.match(path))


def _fs(uri: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError as err:  # pragma: no cover - depends on the environment
        from datacheck.dataset import DatasetError

        raise DatasetError(
            f"reading {uri} needs fsspec (and the filesystem's own package, e.g. s3fs): "
            "pip install 'datacheck[formats]'"
        ) from err
    return fsspec.core.url_to_fs(uri)


def isfile(path: str) -> bool:
    """Whether ``path`` is an existing file."""
    if not is_uri(path):
        return os.path.isfile(path)
    fs, inner = _fs(path)
    return bool(fs.isfile(inner))


def isdir(path: str) -> bool:
    """Whether ``path`` is an existing folder."""
    if not is_uri(path):
        return os.path.isdir(path)
    fs, inner = _fs(path)
    return bool(fs.isdir(inner))


def listdir(path: str) -> list[str]:
    """The entries of a folder as full paths (URIs stay URIs), sorted; ``[]`` when it cannot be listed."""
    if not is_uri(path):
        try:
            return sorted(os.path.join(path, name) for name in os.listdir(path))
        except OSError:
            return []
    fs, inner = _fs(path)
    try:
        return sorted(fs.unstrip_protocol(p) for p in fs.ls(inner, detail=False) if p.rstrip("/") != inner)
    except OSError:
        return []


def files_under(folder: str, suffix: str) -> Iterator[str]:
    """Files named ``*<suffix>`` (any case) at any depth under ``folder``; hidden ones are skipped."""
    for entry in listdir(folder):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith("."):
            continue
        if isdir(entry):
            yield from files_under(entry, suffix)
        elif name.lower().endswith(suffix):
            yield entry


def open_binary(path: str) -> IO[bytes]:
    """Open a file for reading bytes, seekable."""
    if not is_uri(path):
        return open(path, "rb")
    fs, inner = _fs(path)
    return fs.open(inner, "rb")


def relative(path: str, root: str) -> str:
    """``path`` relative to ``root`` with ``/`` separators; the base name when ``root`` is the file itself."""
    if path == root:
        return path.rstrip("/").rsplit("/", 1)[-1]
    if not is_uri(path):
        return os.path.relpath(path, root).replace(os.sep, "/")
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


def parent(path: str) -> str:
    """The folder holding ``path``."""
    if not is_uri(path):
        return os.path.dirname(path)
    return path.rstrip("/").rsplit("/", 1)[0]


def dataset_root(root: str) -> Path | str:
    """What :attr:`Dataset.root` holds: the absolute local folder, or the URI itself."""
    return root if is_uri(root) else Path(root)


def local_path(path: str) -> Path:
    """A :class:`Path` for display and identity (a URI keeps its bucket and key)."""
    return Path(path.split("://", 1)[1]) if is_uri(path) else Path(path)
