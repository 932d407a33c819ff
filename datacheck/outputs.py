"""Folders datacheck writes, recognised by a marker file so that no audit ever reads them as data.

A report folder, the bottleneck cache, a retrained model's folder and the quarantine all get a small
``.datacheck-output`` file when datacheck creates or reuses them. Dataset discovery skips every folder
that holds one (see :mod:`datacheck.dataset`), so ``cd images && datacheck audit .`` twice gives the same
dataset, classes and split layout both times, even though ``./report`` now sits inside it. The marker,
not the folder's name, decides: a user's own class folder called ``report`` is still audited.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

#: File name of the marker (a leading dot: hidden in listings, and never taken for an image).
MARKER = ".datacheck-output"

OutputKind = Literal["report", "cache", "model", "quarantine"]


def mark(folder: Path, kind: OutputKind) -> None:
    """Create ``folder`` if needed and mark it as datacheck output (no-op when it is marked already).

    A folder that cannot be marked (read-only file system) is only logged: marking protects a later
    audit, it must never stop this one.
    """
    marker = folder / MARKER
    if marker.is_file():
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"tool": "datacheck", "kind": kind}) + "\n", encoding="utf-8")
    except OSError as err:
        logger.debug("could not mark %s as datacheck output: %s", folder, err)


def is_marked(folder: Path | str) -> bool:
    """Whether ``folder`` holds the marker: datacheck wrote it, so it is not part of any dataset."""
    return os.path.isfile(os.path.join(folder, MARKER))


def is_inside(folder: Path, root: Path) -> bool:
    """Whether ``folder`` is ``root`` or lies under it (both resolved, symbolic links followed)."""
    inner, outer = folder.expanduser().resolve(), root.expanduser().resolve()
    return inner == outer or outer in inner.parents


def claim_cache(cache_dir: Path | str | None, dataset_root: Path) -> None:
    """:func:`claim` for the bottleneck cache (``None``: the default location)."""
    from datacheck.embed.cache import default_cache_dir

    claim(Path(cache_dir) if cache_dir else default_cache_dir(), "cache", dataset_root)


def claim(folder: Path, kind: OutputKind, dataset_root: Path) -> None:
    """Mark an output folder inside the dataset before the dataset is read, and say so once.

    Args:
        folder: Where datacheck is about to write.
        kind: What it will hold.
        dataset_root: The dataset being audited (a manifest's folder for a CSV manifest).
    """
    root = dataset_root.parent if dataset_root.is_file() else dataset_root
    if not root.is_dir() or not is_inside(folder, root):
        return  # outside the dataset: marked when it is written, and not created for a failed run
    logger.warning(
        "the %s folder %s is inside the dataset %s; datacheck marks it (%s) and never reads it as data",
        kind,
        folder,
        root,
        MARKER,
    )
    mark(folder, kind)
