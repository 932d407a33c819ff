"""The statistics of many images by column: :class:`StatsTable`, parsed from serialised stats in bulk.

An audit reads every image's statistics from the cache as :meth:`ImageStats.to_bytes` blobs. Turning each
into an :class:`ImageStats` object and then the objects into a table cost ~1.5 s per 60,000 images and held
every thumbnail twice (as ``bytes`` in the objects and in the stacked array: 6 GB at a million images).
:meth:`StatsTable.from_blobs` reads the fixed-size part of every blob as one structured numpy array, the
thumbnails straight into their array, and the three short texts once per distinct value.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from datacheck.images.stats import _FLOAT_FIELDS, STATS_VERSION, THUMB_SIDE, ImageStats, _row_fields

#: Bytes of a serialised thumbnail (the last bytes of every blob).
_THUMB_BYTES = THUMB_SIDE * THUMB_SIDE * 3
#: The fixed-size numbers after the 4-byte head, as :attr:`ImageStats._FIXED` packs them (little-endian,
#: no padding).
_FIXED_DTYPE = np.dtype(
    [
        ("width", "<u4"),
        ("height", "<u4"),
        ("file_size", "<u8"),
        ("frames", "<u4"),
        *((name, "<f8") for name in _FLOAT_FIELDS),
        ("grayscale", "?"),
        ("jpeg_quality", "<i2"),
        ("pixel_hash", "u1", (32,)),  # not "S32": numpy strips trailing zero bytes of those
    ]
)
_HEAD = ImageStats._HEAD.pack(ImageStats._MAGIC, STATS_VERSION)
_TEXTS_AT = len(_HEAD) + _FIXED_DTYPE.itemsize
_SHORTEST = _TEXTS_AT + 3 * ImageStats._TEXT_LEN.size + _THUMB_BYTES


@dataclass(frozen=True, eq=False)
class StatsTable:
    """Per-image statistics of N images, row-aligned with the images.

    Attributes:
        columns: One row per image, one column per scalar :class:`ImageStats` field (``ImageStats.as_row``'s
            names and order, with the dtypes ``pd.DataFrame`` gives a list of those rows).
        thumbs: ``uint8[N, THUMB_SIDE, THUMB_SIDE, 3]`` thumbnails: an array, or rows mapped from disk
            (:class:`~datacheck.spool.MappedRows`, possibly through :class:`~datacheck.blocks.RowsOf`) when
            the embedding run spilled them.
    """

    columns: pd.DataFrame
    thumbs: np.ndarray | Any

    def __len__(self) -> int:
        return len(self.columns)

    @classmethod
    def empty(cls) -> StatsTable:
        """No images."""
        return cls.from_stats(())

    @classmethod
    def from_stats(cls, stats: Sequence[ImageStats]) -> StatsTable:
        """From :class:`ImageStats` objects (freshly decoded images, tests)."""
        return cls.from_blobs([s.to_bytes() for s in stats])

    @classmethod
    def from_blobs(cls, blobs: Sequence[bytes | memoryview]) -> StatsTable:
        """From :meth:`ImageStats.to_bytes` blobs of this :data:`STATS_VERSION`.

        Raises:
            ValueError: A blob is not one (check them with :func:`is_stats_blob` first).
        """
        return cls.from_blob_chunks([blobs], len(blobs))

    @classmethod
    def from_blob_chunks(cls, chunks: Iterable[Sequence[bytes | memoryview]], n: int) -> StatsTable:
        """From ``n`` blobs arriving in chunks (a caller can let go of each chunk's blobs once it is read).

        Raises:
            ValueError: A blob is not a serialised :class:`ImageStats` of this version, or the chunks do not
                hold ``n`` blobs.
        """
        thumbs = np.empty((n, _THUMB_BYTES), np.uint8)

        def heads() -> Iterator[list[bytes | memoryview]]:
            done = 0
            for blobs in chunks:
                # only the length here: _parse_heads checks the heads, the rest of is_stats_blob
                if done + len(blobs) > n or not all(len(b) >= _SHORTEST for b in blobs):
                    raise ValueError("not n serialised ImageStats blobs of this version (see is_stats_blob)")
                thumbs[done : done + len(blobs)] = thumbnails(blobs).reshape(len(blobs), _THUMB_BYTES)
                done += len(blobs)
                yield [b[:-_THUMB_BYTES] for b in blobs]

        columns = _parse_heads(heads(), n)
        return cls(columns, thumbs.reshape(n, THUMB_SIDE, THUMB_SIDE, 3))

    @classmethod
    def from_heads(cls, chunks: Iterable[Sequence[bytes | memoryview]], n: int, thumbs: Any) -> StatsTable:
        """From ``n`` blobs without their thumbnails (:func:`stats_head`) and the thumbnails apart.

        ``thumbs`` may be any row-indexable ``uint8[n, 32, 32, 3]`` (e.g. rows mapped from disk).

        Raises:
            ValueError: A head is not one of this version, or the chunks do not hold ``n`` heads.
        """
        if len(thumbs) != n:
            raise ValueError(f"{len(thumbs)} thumbnails for {n} images")
        return cls(_parse_heads(chunks, n), thumbs)

    def equals(self, other: StatsTable) -> bool:
        """Same images' statistics: every column and every thumbnail pixel equal."""
        return self.columns.equals(other.columns) and np.array_equal(self.thumbs, other.thumbs)

    def row(self, i: int) -> ImageStats:
        """Image ``i``'s statistics as an :class:`ImageStats`."""
        values = self.columns.iloc[i].to_dict()
        quality, camera = values["jpeg_quality"], values["camera"]
        values["jpeg_quality"] = None if quality is None or pd.isna(quality) else int(quality)
        values["camera"] = None if camera is None or pd.isna(camera) else camera  # str columns hold NaN
        for name in ("width", "height", "file_size", "frames"):
            values[name] = int(values[name])
        values["grayscale"] = bool(values["grayscale"])
        return ImageStats(**values, thumb=self.thumbs[i].tobytes())


def _columns(fixed: np.ndarray, texts: list[tuple[str | None, str | None, str | None]]) -> pd.DataFrame:
    """The scalar fields as ``pd.DataFrame([s.as_row() for s in stats])`` makes them, dtypes included."""
    data: dict[str, object] = {
        "width": fixed["width"].astype(np.int64),
        "height": fixed["height"].astype(np.int64),
        "mode": _objects([t[0] or "" for t in texts]),
        "format": _objects([t[1] or "" for t in texts]),
        "file_size": fixed["file_size"].astype(np.int64),
        "frames": fixed["frames"].astype(np.int64),
        **{name: fixed[name].copy() for name in _FLOAT_FIELDS},
        "grayscale": fixed["grayscale"].copy(),
        "jpeg_quality": _optional_ints(fixed["jpeg_quality"]),
        "camera": _objects([t[2] for t in texts]),
        "pixel_hash": _hex_rows(fixed["pixel_hash"]),
    }
    return pd.DataFrame({name: data[name] for name in _row_fields()}, index=pd.RangeIndex(len(fixed)))


def is_stats_blob(blob: bytes | memoryview) -> bool:
    """Whether ``blob`` is a whole :meth:`ImageStats.to_bytes` blob of this version (damage reads as not)."""
    return len(blob) >= _SHORTEST and _is_head(memoryview(blob)[:-_THUMB_BYTES])


def is_stats_head(head: bytes | memoryview) -> bool:
    """:func:`is_stats_blob` of a blob given without its last :data:`THUMB_BYTES` (empty: it was shorter).

    What a caller that needs no thumbnail reads (``Cache.get_stats(keys, drop_tail=THUMB_BYTES)``).
    """
    return _is_head(memoryview(head))


#: Bytes of the thumbnail that ends every statistics blob.
THUMB_BYTES = _THUMB_BYTES


def stats_head(blob: bytes | memoryview) -> memoryview:
    """A whole blob (:func:`is_stats_blob`) less its thumbnail (a view; :func:`thumbnails` reads those)."""
    return memoryview(blob)[:-_THUMB_BYTES]


def thumbnails(blobs: Sequence[bytes | memoryview]) -> np.ndarray:
    """The thumbnails of whole blobs as one ``uint8[len(blobs), 32, 32, 3]`` array."""
    out = np.empty((len(blobs), _THUMB_BYTES), np.uint8)
    for i, blob in enumerate(blobs):
        out[i] = np.frombuffer(blob, np.uint8, _THUMB_BYTES, len(blob) - _THUMB_BYTES)
    return out.reshape(len(blobs), THUMB_SIDE, THUMB_SIDE, 3)


def _parse_heads(chunks: Iterable[Sequence[bytes | memoryview]], n: int) -> pd.DataFrame:
    """The scalar columns of ``n`` blob heads (blobs without their thumbnails) arriving in chunks."""
    fixed = np.empty(n, _FIXED_DTYPE)
    texts: list[tuple[str | None, str | None, str | None]] = []
    done = 0
    for heads in chunks:
        if done + len(heads) > n or not all(_is_head(h) for h in heads):
            raise ValueError("not n serialised ImageStats heads of this version")
        joined = b"".join(h[len(_HEAD) : _TEXTS_AT] for h in heads)
        fixed[done : done + len(heads)] = np.frombuffer(joined, _FIXED_DTYPE, count=len(heads))
        texts += [_texts(bytes(h[_TEXTS_AT:])) for h in heads]
        done += len(heads)
    if done != n:
        raise ValueError(f"expected {n} serialised ImageStats blobs, got {done}")
    return _columns(fixed, texts)


def _is_head(head: bytes | memoryview) -> bool:
    if len(head) < _SHORTEST - _THUMB_BYTES or bytes(head[: len(_HEAD)]) != _HEAD:
        return False
    try:
        _texts(bytes(head[_TEXTS_AT:]))
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def _texts(middle: bytes) -> tuple[str | None, str | None, str | None]:
    """The three texts (mode, format, camera) of a blob's middle part, which they must fill exactly.

    Cached: a dataset has few distinct (mode, format, camera) triples.
    """
    offset, out = 0, []
    for _ in range(3):
        try:
            text, offset = ImageStats._unpack_text(middle, offset)
        except (ValueError, UnicodeDecodeError, struct.error) as err:
            raise ValueError(f"damaged text field: {err}") from err
        out.append(text)
    if offset != len(middle):
        raise ValueError("text fields do not end where the thumbnail begins")
    return out[0], out[1], out[2]


def _hex_rows(digests: np.ndarray) -> np.ndarray:
    """``uint8[N, 32]`` digests as N hex strings."""
    text, width = np.ascontiguousarray(digests).tobytes().hex(), 2 * digests.shape[1]
    return _objects([text[i : i + width] for i in range(0, len(text), width)])


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _optional_ints(values: np.ndarray) -> np.ndarray:
    """``jpeg_quality`` as pandas infers it from Python values: ints, floats with NaN for None, or Nones."""
    missing = values < 0
    if not missing.any():
        return values.astype(np.int64)
    if missing.all():
        return _objects([None] * len(values))
    return np.where(missing, np.nan, values.astype(np.float64))
