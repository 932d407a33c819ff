"""WebDataset tar shards: ``<key>.<image ext>`` plus ``<key>.cls`` (the label) per sample.

A shard is listed once with :mod:`tarfile` (no member data is read except the small label files); each
image becomes a record whose key is ``<shard>/<member>`` and whose bytes are read later by offset. The
label is the text of ``<key>.cls`` (or ``<key>.label``); when it is a number and ``classes.txt`` (one name
per line) sits beside the shards, the number picks the name. The split comes from a split-named folder or
shard name (``train-000.tar``, ``test/000.tar``). A damaged shard keeps the members before the damage and
is reported; a sample without a label file is reported as ``no_label``.
"""

from __future__ import annotations

import logging
import sys
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from datacheck.dataset import (
    IMAGE_EXTENSIONS,
    Blob,
    DatasetError,
    FileIssue,
    ImageRecord,
)
from datacheck.sources import fs, split_from_name

logger = logging.getLogger(__name__)

#: Label members, in order of preference (WebDataset's convention is ``.cls``).
LABEL_SUFFIXES: tuple[str, ...] = (".cls", ".label")

#: Largest label file read (a label is a word or a number).
_MAX_LABEL_BYTES = 4096


@dataclass
class _Sample:
    """The members of one WebDataset sample (same key), as met in the shard."""

    images: list[tarfile.TarInfo] = field(default_factory=list)
    label: str | None = None


def webdataset_items(root: str) -> Iterator[ImageRecord | FileIssue]:
    """Every labelled image in the shards under ``root`` (a ``.tar`` file or a folder of them), as read."""
    shards = [root] if fs.isfile(root) else sorted(fs.files_under(root, ".tar"))
    if not shards:
        raise DatasetError(f"no .tar shards under {root}: pass a WebDataset shard or a folder of shards")
    names = _class_names(root)
    for shard in shards:
        rel = fs.relative(shard, root)
        split = split_from_name(*PurePosixPath(rel).parts)
        yield from _read_shard(shard, rel, split, names)


def no_records_message(root: str, issues: Sequence[FileIssue]) -> str:
    """What to do when the shards hold no labelled image."""
    return (
        f"no labelled images in the shards under {root}: each sample needs <key>.jpg (or another image "
        f"type) and <key>.cls with its label; {len(issues)} members left out"
    )


def _class_names(root: str) -> list[str] | None:
    folder = root if fs.isdir(root) else fs.parent(root)
    path = folder.rstrip("/") + "/classes.txt"
    if not fs.isfile(path):
        return None
    with fs.open_binary(path) as handle:
        return [
            line.strip() for line in handle.read().decode("utf-8", "replace").splitlines() if line.strip()
        ]


def _read_shard(
    shard: str, rel: str, split: str | None, names: list[str] | None
) -> Iterator[ImageRecord | FileIssue]:
    samples: dict[str, _Sample] = {}
    try:
        with fs.open_binary(shard) as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            for member in tar:
                _add_member(tar, member, samples)
    except (tarfile.TarError, OSError, EOFError) as err:
        kept = sum(len(s.images) for s in samples.values())
        yield FileIssue(
            rel,
            "unreadable",
            f"damaged tar shard: {err or type(err).__name__} ({kept} images before the damage are used; "
            "rewrite the shard to include the rest)",
        )
    shard_path = fs.local_path(shard)  # one object for the shard's records, as the label and split below
    for key, sample in samples.items():
        for member in sample.images:
            path = f"{rel}/{member.name}"
            if not sample.label:
                wanted = " or ".join(LABEL_SUFFIXES)
                yield FileIssue(
                    path, "no_label", f"no label: sample {key!r} has no (or an empty) {wanted} member"
                )
                continue
            blob = Blob("tar", shard, (member.offset_data, member.size))
            label = sys.intern(_label_name(sample.label, names))
            yield ImageRecord(path, shard_path, label, split, blob)


def _add_member(tar: tarfile.TarFile, member: tarfile.TarInfo, samples: dict[str, _Sample]) -> None:
    if not member.isfile():
        return
    path = PurePosixPath(member.name)
    if path.name.startswith("."):
        return
    stem, _, ext = path.name.partition(".")
    # WebDataset keys keep the folder: a/b/x.seg.png is key a/b/x, field seg.png.
    key = str(path.parent / stem)
    suffix = "." + ext.lower() if ext else ""
    sample = samples.setdefault(key, _Sample())
    if "." + suffix.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS and suffix not in LABEL_SUFFIXES:
        sample.images.append(member)
    elif suffix in LABEL_SUFFIXES and sample.label is None and member.size <= _MAX_LABEL_BYTES:
        handle = tar.extractfile(member)
        sample.label = handle.read().decode("utf-8", "replace").strip() if handle else None


def _label_name(text: str, names: list[str] | None) -> str:
    if names and text.isdigit() and int(text) < len(names):
        return names[int(text)]
    return text
