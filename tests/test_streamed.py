"""Discovery with the records on disk (``datacheck embed``): the same dataset as in memory, bounded memory."""

from __future__ import annotations

import os
import random
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from datacheck.dataset import Dataset, DatasetError, discover, streamed
from datacheck.dataset.records import ImageRecord, size_sample
from datacheck.dataset.streamed import RecordSpool, Scratch, SpooledDataset, spool_dataset
from tests.test_sources import _images, write_hf, write_hub_parquet, write_webdataset


@pytest.fixture(params=["memory", "disk"])
def spill(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a spool keeps its rows: in memory (small datasets), and in its file past 2 rows."""
    if request.param == "disk":
        monkeypatch.setattr(streamed, "SPILL_ITEMS", 2)
        monkeypatch.setattr(streamed, "_WRITE_BATCH", 3)
    return request.param


def _record_fields(record: ImageRecord) -> tuple:
    return (record.path, record.abs_path, record.label, record.split, record.blob, record.fingerprint)


def _same_as_discover(root: Path | str, manifest: Path | None = None, *, format_in: str = "auto") -> None:
    """Spooled discovery finds what :func:`discover` finds: records (every field), issues, root, layout."""
    expected = discover(root, manifest, format_in=format_in)
    with spool_dataset(root, manifest, format_in=format_in) as spooled:
        records = [r for chunk in spooled.record_chunks(3) for r in chunk]  # several chunks
        assert sorted(map(_record_fields, records)) == [_record_fields(r) for r in expected.records]
        assert spooled.issues == expected.issues
        assert (spooled.root, spooled.layout, len(spooled)) == (expected.root, expected.layout, len(expected))
        summary = spooled.summary()
    assert (summary.images, summary.issues) == (len(expected), expected.issues)


def test_a_tree_with_links_and_bad_files_is_discovered_the_same(
    tmp_path: Path, image_factory, spill: str
) -> None:
    root = tmp_path / "data"
    files = type(image_factory)(root)
    for name in ("cat/a.png", "cat/sub/b.png", "dog/c.png", "zebra/d.png", "loose.png"):
        files.solid(name)
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / "a_link.png").symlink_to(root / "cat" / "a.png")  # a link to a file: duplicate
    os.link(root / "cat" / "a.png", root / "dog" / "hard.png")  # a hard link: duplicate
    (root / "aardvark").symlink_to(root / "zebra")  # sorts before its real folder: real path wins
    (root / "cat" / "loop").symlink_to(root / "cat")
    (root / "cat" / "gone.png").symlink_to(root / "cat" / "nothing.png")
    outside = type(image_factory)(tmp_path / "elsewhere")
    outside.solid("birds/x.png")
    (root / "bird").symlink_to(tmp_path / "elsewhere" / "birds")  # followed: its files are records
    (root / "bird2").symlink_to(tmp_path / "elsewhere" / "birds")  # the same folder again: duplicate
    (root / os.fsdecode(b"caf\xe9")).mkdir()
    files.solid(os.fsdecode(b"caf\xe9") + "/" + os.fsdecode(b"\xff.png"))  # not valid UTF-8
    _same_as_discover(root)


def test_a_split_tree_is_discovered_the_same(tmp_path: Path, image_factory, spill: str) -> None:
    root = tmp_path / "data"
    files = type(image_factory)(root)
    for name in ("train/cat/a.png", "train/dog/b.png", "Test/cat/c.png", "test/direct.png"):
        files.solid(name)
    _same_as_discover(root)


def test_a_manifest_is_discovered_the_same(tmp_path: Path, image_factory, spill: str) -> None:
    root = tmp_path / "data"
    files = type(image_factory)(root)
    for name in ("a.png", "b.png", "c.png"):
        files.solid(name)
    (root / "folder").mkdir()
    manifest = root / "list.csv"
    manifest.write_text(
        "path,label,split\n"
        "a.png,cat,train\n"
        "b.png,dog,test\n"
        "a.png,dog,train\n"  # the same file again: the first row wins
        "./c.png,,train\n"  # no label
        "gone.png,cat,train\n"
        "folder,cat,train\n"
        ",cat,train\n"
        "list.csv,cat,train\n"
    )
    _same_as_discover(root, manifest)
    _same_as_discover(manifest)  # the manifest alone: its folder is the root


@pytest.mark.parametrize("writer", [write_webdataset, write_hf, write_hub_parquet])
def test_container_datasets_are_discovered_the_same(tmp_path: Path, writer: Callable, spill: str) -> None:
    _same_as_discover(writer(tmp_path / "data", _images()))


def test_the_same_errors_as_discover(tmp_path: Path, spill: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "text" / "cat").mkdir(parents=True)
    (tmp_path / "text" / "cat" / "notes.txt").write_text("x")
    (tmp_path / "list.csv").write_text("path,label\ngone.png,cat\n")
    for root in (tmp_path / "missing", tmp_path / "empty", tmp_path / "text", tmp_path / "list.csv"):
        with pytest.raises(DatasetError) as in_memory:
            discover(root)
        with pytest.raises(DatasetError) as spooled, spool_dataset(root):
            pass
        assert str(spooled.value) == str(in_memory.value)


def test_the_spool_is_written_only_past_its_limit_and_removed_when_the_block_ends(
    tmp_path: Path, class_tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, scratch = class_tree({"cat": 2, "dog": 2}), tmp_path / "scratch"
    with spool_dataset(root, directory=scratch) as spooled:
        assert not scratch.exists()  # 4 records: nothing written
    monkeypatch.setattr(streamed, "SPILL_ITEMS", 3)
    with spool_dataset(root, directory=scratch) as spooled:
        assert [p.name[:16] for p in scratch.iterdir()] == ["datacheck-spool-"]
        assert len(spooled) == 4 and len(list(spooled.record_chunks(3))) == 2
    assert not list(scratch.iterdir())
    with pytest.raises(DatasetError), spool_dataset(tmp_path / "missing", directory=scratch):
        pass
    assert not list(scratch.iterdir())
    assert isinstance(spooled, SpooledDataset)


def test_the_size_sample_is_the_same_in_any_order_in_memory_or_on_disk(tmp_path: Path, spill: str) -> None:
    records = [ImageRecord(f"c{i % 7}/{i}.png", Path(f"/x/{i}.png"), f"c{i % 7}", None) for i in range(1000)]
    picked = size_sample(records, 50)
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    assert size_sample(shuffled, 50) == picked
    assert Dataset(Path("/x"), "classes", tuple(records)).size_sample(50) == picked
    scratch = Scratch(tmp_path)
    try:
        spool = RecordSpool(scratch)
        spool.extend((r, None) for r in shuffled)
        assert spool.size_sample(50) == picked
        assert size_sample(picked, 50) == picked  # what resolve_image_size gets from a spool: kept whole
    finally:
        scratch.close()
    # spread over the dataset, not its first records: every class is in the sample
    assert {r.label for r in picked} == {f"c{k}" for k in range(7)}


def test_record_spool_gives_every_record_in_order_and_each_content_once(tmp_path: Path, spill: str) -> None:
    records = [ImageRecord(f"a/{i}.png", Path(f"/a/{i}.png"), "a", "train") for i in range(10)]
    shas = [digit * 64 for digit in "f0f1023145"]  # f, 0 and 1 twice
    scratch = Scratch(tmp_path)
    try:
        spool = RecordSpool(scratch)
        spool.extend(zip(records, shas, strict=True))
        chunks = list(spool.chunks(4))
        assert [len(c) for c in chunks] == [4, 4, 2]
        assert [pair for chunk in chunks for pair in chunk] == list(zip(records, shas, strict=True))
        distinct = [pair for chunk in spool.distinct_chunks(2) for pair in chunk]
        first_of_each = {sha: record for record, sha in reversed(list(zip(records, shas, strict=True)))}
        assert sorted(distinct, key=lambda p: p[1]) == sorted(
            ((record, sha) for sha, record in first_of_each.items()), key=lambda p: p[1]
        )
        assert len(spool) == 10
    finally:
        scratch.close()
    assert not list(tmp_path.iterdir())


def _peak_bytes(run: Callable[[], None]) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_spooled_discovery_memory_does_not_grow_with_the_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four times the files: in memory the peak grows with them, on disk it stays what one batch takes."""
    monkeypatch.setattr(streamed, "SPILL_ITEMS", 1000)  # 65,536 in use: too many files for a test

    def tree(n: int) -> Path:
        root = tmp_path / f"n{n}"
        for k in range(10):
            (root / f"class{k}").mkdir(parents=True)
        for i in range(n):
            (root / f"class{i % 10}" / f"{i:06d}.png").touch()  # discovery reads no pixels
        return root

    def spooled(root: Path) -> Callable[[], None]:
        def run() -> None:
            with spool_dataset(root, directory=tmp_path / "scratch") as dataset:
                for _ in dataset.record_chunks(1000):
                    pass

        return run

    small, large = tree(3000), tree(12_000)
    in_memory = [_peak_bytes(lambda root=root: discover(root)) for root in (small, large)]
    on_disk = [_peak_bytes(spooled(root)) for root in (small, large)]
    assert in_memory[1] > 3 * in_memory[0]  # what the measure sees: records held grow with the files
    # on disk: what is kept before spilling, the write batches (4,096 rows) and one chunk, whatever the files
    assert on_disk[1] < 1.25 * on_disk[0], on_disk
    assert on_disk[1] < in_memory[1] / 2, (on_disk, in_memory)
