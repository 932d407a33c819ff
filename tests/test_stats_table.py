"""StatsTable: many images' statistics parsed by column, equal to the objects they were serialised from."""

from __future__ import annotations

import dataclasses
import io
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datacheck.dataset import discover
from datacheck.embed.pipeline import embed_dataset
from datacheck.images import THUMB_BYTES, ImageStats, StatsTable, decode_image, is_stats_blob, is_stats_head
from datacheck.params import EmbedParams
from tests.conftest import noise


def _encoded(img: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **options)
    return out.getvalue()


@pytest.fixture(scope="module")
def varied() -> list[ImageStats]:
    """Statistics of images that differ in every way the serialisation cares about."""
    images = [
        _encoded(noise((40, 30), seed=1), "JPEG", quality=80),
        _encoded(noise((16, 16), seed=2), "PNG"),
        _encoded(noise((20, 24), seed=3).convert("L"), "PNG"),
        _encoded(noise((24, 20), seed=4).convert("P"), "GIF"),
        _encoded(noise((33, 17), seed=5), "JPEG", quality=95),
    ]
    stats = [decode_image(data, 16).stats for data in images]
    # texts the decoder rarely gives: a camera, an empty mode, a non-ASCII name; a digest ending in zero bytes
    stats[1] = dataclasses.replace(stats[1], camera="Canon EOS 5D", mode="", pixel_hash="ab" * 30 + "0000")
    stats[3] = dataclasses.replace(stats[3], camera="Fujifilm X-T3 \u00e9")
    return stats


def _frame(stats: list[ImageStats]) -> pd.DataFrame:
    """How the context built its table before: one dict per image."""
    return pd.DataFrame([s.as_row() for s in stats])


@pytest.mark.parametrize("rows", [[0, 1, 2, 3, 4], [0, 4], [1, 2], [3]])
def test_columns_match_a_frame_of_the_objects(varied: list[ImageStats], rows: list[int]) -> None:
    # dtypes included: jpeg_quality is int with every image a JPEG, float with NaN for a mix, None for none
    chosen = [varied[i] for i in rows]
    table = StatsTable.from_blobs([s.to_bytes() for s in chosen])
    pd.testing.assert_frame_equal(table.columns, _frame(chosen))
    np.testing.assert_array_equal(table.thumbs, np.stack([s.thumbnail for s in chosen]))
    assert [table.row(i) for i in range(len(chosen))] == chosen
    assert table.equals(StatsTable.from_stats(chosen))


def test_chunks_read_as_one_table(varied: list[ImageStats]) -> None:
    blobs = [s.to_bytes() for s in varied]
    table = StatsTable.from_blob_chunks([blobs[:2], blobs[2:3], blobs[3:]], len(blobs))
    pd.testing.assert_frame_equal(table.columns, _frame(varied))
    with pytest.raises(ValueError, match="expected 6"):
        StatsTable.from_blob_chunks([blobs], 6)


def test_no_images() -> None:
    table = StatsTable.empty()
    assert len(table) == 0
    assert table.thumbs.shape == (0, 32, 32, 3)
    assert "pixel_hash" in table.columns


def test_damaged_blobs_are_recognised(varied: list[ImageStats]) -> None:
    blob = varied[1].to_bytes()
    assert is_stats_blob(blob)
    damaged = [
        blob[:-1],  # truncated thumbnail
        blob[:100],
        b"XYZ" + blob[3:],  # bad magic
        blob[:3] + bytes([blob[3] + 1]) + blob[4:],  # another format version
        blob[:155] + b"\xfe\xff" + blob[157:],  # a text length running past the end
    ]
    assert not any(is_stats_blob(b) for b in damaged)
    for whole in [
        blob,
        *damaged,
    ]:  # what a reader given the blob less its thumbnail decides (the cache's tail)
        head = whole[:-THUMB_BYTES] if len(whole) > THUMB_BYTES else b""
        assert is_stats_head(head) == is_stats_blob(whole)
    with pytest.raises(ValueError, match="not n serialised"):
        StatsTable.from_blobs([blob, damaged[0]])


def _cached_folder(root: Path) -> tuple[EmbedParams, list[ImageStats]]:
    """Three images and a cache holding their rows, filled without the model (what embedding would store)."""
    from datacheck.embed.backbones import cache_tag
    from datacheck.embed.cache import Cache, embedding_key, stats_key
    from datacheck.fileio import file_sha256
    from datacheck.images import STATS_VERSION, read_file

    params = EmbedParams(cache_dir=root / "cache", image_size=32)
    tag = cache_tag(params.model, 32, weights=params.weights)
    (root / "data" / "a").mkdir(parents=True)
    stats, rng = [], np.random.default_rng(0)
    with Cache(root / "cache") as cache:
        for i in range(3):
            path = root / "data" / "a" / f"{i}.png"
            noise((24, 24), seed=i).save(path)
            sha = file_sha256(path)
            stats.append(decode_image(read_file(path), 32).stats)
            cache.put_embeddings([(embedding_key(sha, tag), rng.standard_normal(8), rng.standard_normal(10))])
            cache.put_stats([(stats_key(sha, STATS_VERSION), stats[-1].to_bytes())])
    return params, stats


def test_cached_statistics_arrive_as_one_table(tmp_path: Path) -> None:
    params, stats = _cached_folder(tmp_path)
    embedded = embed_dataset(discover(tmp_path / "data"), params)  # every row cached: the model is not loaded
    assert (embedded.computed, embedded.runtime) == (0, "cache")
    assert embedded.stats.equals(StatsTable.from_stats(stats))


def test_a_damaged_cached_blob_is_a_miss(tmp_path: Path) -> None:
    from datacheck.embed.pipeline import cache_misses

    params, _ = _cached_folder(tmp_path)
    records = discover(tmp_path / "data").records
    assert cache_misses(records, params, 32) == []
    with sqlite3.connect(tmp_path / "cache" / "cache.sqlite") as raw:  # one blob cut short
        raw.execute("UPDATE stats SET value = substr(value, 1, 100) WHERE rowid = 2")
    raw.close()
    assert len(cache_misses(records, params, 32)) == 1  # embedded again instead of crashing the run
