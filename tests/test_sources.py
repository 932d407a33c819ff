"""Datasets kept in container files: WebDataset shards, Parquet, Hugging Face ``save_to_disk``, fsspec URIs.

Every format is written by the library people use to make it (``webdataset``, ``datasets``, ``pyarrow``)
from the same generated images, then read back: same records and bytes, the same audit findings as the
image folder, and the bad cases (damaged shard, corrupt member, missing label) reported, never crashing.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from datacheck import api
from datacheck.cli import app
from datacheck.dataset import DatasetError, discover
from datacheck.images import ImageDecodeError
from datacheck.params import EmbedParams
from datacheck.sources import detect_format, read_record
from datacheck.sources.blobs import clear_cache
from tests.conftest import encode
from tests.factories import random_scene

CLASSES = ("apple", "pear")


def _images(train: int = 6, test: int = 3) -> list[tuple[str, str, str, bytes]]:
    """``(split, label, name, JPEG bytes)``; test image 0 of each class copies train image 0 (a leak)."""
    out = []
    for s, split in enumerate(("train", "test")):
        for k, label in enumerate(CLASSES):
            for i in range(train if split == "train" else test):
                seed = 100 * k + i if split == "test" and i == 0 else 10_000 * s + 100 * k + i
                out.append(
                    (split, label, f"{split}-{label}-{i}", encode(random_scene(seed), "JPEG", quality=92))
                )
    return out


def write_folder(root: Path, images: list[tuple[str, str, str, bytes]]) -> Path:
    for split, label, name, data in images:
        (root / split / label).mkdir(parents=True, exist_ok=True)
        (root / split / label / f"{name}.jpg").write_bytes(data)
    return root


def write_webdataset(root: Path, images: list[tuple[str, str, str, bytes]]) -> Path:
    import webdataset as wds

    root.mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for split in ("train", "test"):
        with wds.TarWriter(str(root / f"{split}-000000.tar")) as sink:
            for s, label, name, data in images:
                if s == split:
                    sink.write({"__key__": name, "jpg": data, "cls": CLASSES.index(label)})
    return root


def write_hf(root: Path, images: list[tuple[str, str, str, bytes]]) -> Path:
    import datasets

    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES))}
    )
    parts = {
        split: datasets.Dataset.from_dict(
            {
                "image": [{"bytes": d, "path": None} for s, _, _, d in images if s == split],
                "label": [CLASSES.index(lbl) for s, lbl, _, _ in images if s == split],
            },
            features=features,
        )
        for split in ("train", "test")
    }
    datasets.DatasetDict(parts).save_to_disk(str(root))
    return root


def write_hub_parquet(root: Path, images: list[tuple[str, str, str, bytes]]) -> Path:
    """The Hub's layout: ``data/<split>-00000-of-00001.parquet`` with the ClassLabel in the metadata."""
    import datasets

    (root / "data").mkdir(parents=True)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES))}
    )
    for split in ("train", "test"):
        rows = [(d, CLASSES.index(lbl)) for s, lbl, _, d in images if s == split]
        part = datasets.Dataset.from_dict(
            {"image": [{"bytes": d, "path": None} for d, _ in rows], "label": [y for _, y in rows]},
            features=features,
        )
        part.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return root


@pytest.fixture(autouse=True)
def _fresh_table_cache():
    clear_cache()
    yield
    clear_cache()


def _by_bytes(dataset) -> list[tuple[bytes, str, str | None]]:
    """Every record as (bytes, label, split), sorted (a copied image appears once per copy)."""
    return sorted((read_record(r), r.label, r.split or "") for r in dataset.records)


def test_every_format_reads_back_the_same_labelled_images(tmp_path: Path) -> None:
    images = _images()
    expected = sorted((data, label, split) for split, label, _, data in images)
    folder = write_folder(tmp_path / "folder", images)
    wds_root = write_webdataset(tmp_path / "wds", images)
    hf_root = write_hf(tmp_path / "hf", images)
    hub_root = write_hub_parquet(tmp_path / "hub", images)

    for root, layout in (
        (folder, "splits"),
        (wds_root, "webdataset"),
        (hf_root, "hf"),
        (hub_root, "parquet"),
    ):
        dataset = discover(root)
        assert dataset.layout == layout
        assert not dataset.issues
        assert _by_bytes(dataset) == expected, (
            layout
        )  # names from classes.txt / ClassLabel, splits from paths
    keys = [r.path for r in discover(wds_root).records]
    assert "test-000000.tar/test-apple-0.jpg" in keys
    assert [r.path for r in discover(hf_root).records][:2] == [
        "test/data-00000-of-00001.arrow#0",
        "test/data-00000-of-00001.arrow#1",
    ]


def test_detect_format_by_path(tmp_path: Path) -> None:
    images = _images(2, 1)
    assert detect_format(write_webdataset(tmp_path / "wds", images)) == "webdataset"
    assert detect_format(tmp_path / "wds" / "train-000000.tar") == "webdataset"
    assert detect_format(write_hf(tmp_path / "hf", images)) == "hf"
    assert detect_format(write_hub_parquet(tmp_path / "hub", images)) == "parquet"
    assert detect_format(write_folder(tmp_path / "folder", images)) == "folder"


def test_plain_parquet_with_bytes_or_paths_and_a_missing_label(tmp_path: Path) -> None:
    images = _images(3, 0)
    table = pa.table(
        {
            "img": pa.array([d for *_, d in images], pa.binary()),
            "category": [lbl for _, lbl, _, _ in images[:-1]] + [None],
            "split": ["train"] * len(images),
        }
    )
    pq.write_table(table, tmp_path / "bytes.parquet", row_group_size=2)
    dataset = discover(tmp_path / "bytes.parquet")
    assert dataset.layout == "parquet" and len(dataset) == len(images) - 1
    assert [(i.path, i.kind) for i in dataset.issues] == [("bytes.parquet#5", "no_label")]
    assert [read_record(r) for r in dataset.records] == [d for *_, d in images[:-1]]  # across row groups
    # rows of one file share its path, label and split objects (a million rows held them ~650 MB apart)
    first, *rest = dataset.records
    assert all(r.abs_path is first.abs_path and r.split is first.split for r in rest)
    assert all(r.label is first.label for r in rest if r.label == first.label)

    folder = write_folder(tmp_path / "files", images)
    paths = [str(p.relative_to(tmp_path)) for p in sorted(folder.rglob("*.jpg"))]
    pq.write_table(
        pa.table({"path": paths, "label": [p.split("/")[2] for p in paths]}), tmp_path / "paths.parquet"
    )
    by_path = discover(tmp_path / "paths.parquet")
    assert all(r.blob is None and r.abs_path.is_file() for r in by_path.records)
    assert {r.label for r in by_path.records} == set(CLASSES)


def test_table_without_an_image_column_says_what_it_needs(tmp_path: Path) -> None:
    pq.write_table(pa.table({"x": [1, 2], "label": ["a", "b"]}), tmp_path / "t.parquet")
    with pytest.raises(DatasetError, match=r"no image column in t\.parquet.*columns: x, label"):
        discover(tmp_path / "t.parquet")


def test_damaged_shard_keeps_what_precedes_the_damage(tmp_path: Path) -> None:
    images = _images(4, 0)
    root = write_webdataset(tmp_path / "wds", images)
    shard = root / "train-000000.tar"
    raw = shard.read_bytes()
    shard.write_bytes(raw[: len(raw) // 2] + b"\x07" * 700)  # garbage where the next header should be
    dataset = discover(root)
    assert 0 < len(dataset) < len(images)
    (issue,) = [i for i in dataset.issues if i.path == "train-000000.tar"]
    assert issue.kind == "unreadable" and issue.reason.startswith("damaged tar shard")
    for record in dataset.records:
        assert read_record(record) in {d for *_, d in images}


def test_sample_without_label_and_corrupt_member(tmp_path: Path) -> None:
    good = encode(random_scene(1), "JPEG")
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in (
            ("a.jpg", good),
            ("a.cls", b"apple"),
            ("b.jpg", good[:40]),  # a truncated member
            ("b.cls", b"pear"),
            ("c.jpg", encode(random_scene(2), "JPEG")),  # no label file
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    dataset = discover(shard)
    assert [(r.path, r.label) for r in dataset.records] == [("s.tar/a.jpg", "apple"), ("s.tar/b.jpg", "pear")]
    assert [(i.path, i.kind) for i in dataset.issues] == [("s.tar/c.jpg", "no_label")]
    result = api.embed(shard, EmbedParams(cache_dir=tmp_path / "cache", image_size=96))
    failures = {f.path: f.reason for f in result.embeddings.failures}
    assert list(failures) == ["s.tar/b.jpg"] and "truncated" in failures["s.tar/b.jpg"]


def test_fsspec_uris_read_the_same_bytes(tmp_path: Path) -> None:
    import fsspec

    images = _images(2, 1)
    local = write_webdataset(tmp_path / "wds", images)
    fs = fsspec.filesystem("memory")
    for path in local.iterdir():
        fs.pipe(f"/bucket/wds/{path.name}", path.read_bytes())
    pq.write_table(
        pa.table({"image": [d for *_, d in images], "label": [lbl for _, lbl, _, _ in images]}),
        tmp_path / "t.parquet",
    )
    fs.pipe("/bucket/t.parquet", (tmp_path / "t.parquet").read_bytes())
    assert _by_bytes(discover(f"file://{local}")) == _by_bytes(discover(local))
    try:
        remote = discover("memory://bucket/wds")
        assert remote.root == "memory://bucket/wds" and remote.layout == "webdataset"
        assert _by_bytes(remote) == _by_bytes(discover(local))
        table = discover("memory://bucket/t.parquet")
        assert sorted(read_record(r) for r in table.records) == sorted(d for *_, d in images)
    finally:
        fs.rm("/bucket", recursive=True)


def _findings_by_content(report) -> set[tuple]:
    sha = dict(zip(report.map["path"], report.map["sha256"], strict=True))
    return {
        (res.id, f.kind, str(f.severity), tuple(sorted(sha[p] for p in f.files)))
        for res in report.checks
        for f in res.findings
    }


def test_audit_gives_the_same_findings_in_every_format(tmp_path: Path) -> None:
    images = _images()
    roots = {
        "folder": write_folder(tmp_path / "folder", images),
        "webdataset": write_webdataset(tmp_path / "wds", images),
        "hf": write_hf(tmp_path / "hf", images),
        "parquet": write_hub_parquet(tmp_path / "hub", images),
    }
    checks = ["files", "duplicates", "leakage", "balance"]
    reports = {
        name: api.audit(root, checks=checks, cache_dir=tmp_path / "cache", image_size=96, map_method="none")
        for name, root in roots.items()
    }
    reference = _findings_by_content(reports["folder"])
    assert any(check == "leakage" for check, *_ in reference)  # the planted test→train copies
    for name, report in reports.items():
        assert _findings_by_content(report) == reference, name
        assert report.check("leakage").metrics == reports["folder"].check("leakage").metrics


def test_apply_on_a_container_writes_a_change_list_and_moves_nothing(tmp_path: Path) -> None:
    root = write_webdataset(tmp_path / "wds", _images(3, 1))
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    out = tmp_path / "report"
    report = api.audit(
        root, checks=["files"], cache_dir=tmp_path / "cache", image_size=96, map_method="none", out=out
    )
    report.write(out, html=True)
    # thumbnails read from the shards, one per distinct image
    assert len(list((out / "thumbs").iterdir())) == len(set(report.map["sha256"]))
    doc = json.loads((out / "report.json").read_text())
    sha = dict(zip(doc["map"]["path"], doc["map"]["sha256"], strict=True))
    key = "train-000000.tar/train-apple-1.jpg"
    decisions = out / "decisions.json"
    decisions.write_text(
        json.dumps(
            {
                "schema": "datacheck-decisions",
                "version": 1,
                "report_id": doc["report_id"],
                "dataset_root": doc["dataset"]["root"],
                "decisions": [
                    {"file": key, "action": "relabel", "target": "pear", "sha256": sha[key]},
                    {"file": "train-000000.tar/train-pear-0.jpg", "action": "keep"},
                ],
            }
        )
    )
    result = CliRunner().invoke(app, ["apply", str(decisions), "--yes"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "nothing was moved" in result.output
    rows = (out / "decisions.changes.csv").read_text().splitlines()
    assert rows == ["key,action,target,sha256,finding", f"{key},relabel,pear,{sha[key]},"]
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before


def test_read_record_reports_an_empty_table_cell(tmp_path: Path) -> None:
    table = pa.table({"image": pa.array([b"", None], pa.binary()), "label": ["a", "b"]})
    pq.write_table(table, tmp_path / "t.parquet")
    records = discover(tmp_path / "t.parquet").records
    with pytest.raises(ImageDecodeError, match="no image bytes"):
        read_record(records[1])


def test_cli_format_in(tmp_path: Path) -> None:
    root = write_hf(tmp_path / "hf", _images(2, 1))
    runner = CliRunner()
    bad = runner.invoke(app, ["embed", str(root), "--format-in", "zip", "--cache", str(tmp_path / "c")])
    assert bad.exit_code == 2 and "unknown dataset format 'zip'" in bad.output
    wrong = runner.invoke(
        app, ["embed", str(root), "--format-in", "webdataset", "--cache", str(tmp_path / "c")]
    )
    assert wrong.exit_code == 3 and "no .tar shards" in wrong.output
    ok = runner.invoke(
        app,
        ["embed", str(root), "--format-in", "hf", "--cache", str(tmp_path / "c"), "--image-size", "96"],
        env={"COLUMNS": "300"},
    )
    assert ok.exit_code == 0, ok.output
    assert "(hf layout)" in ok.output and re.search(r"images embedded\s*│\s*6\b", ok.output)
