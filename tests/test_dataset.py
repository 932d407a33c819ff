from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from datacheck.dataset import (
    ISSUE_KINDS,
    Dataset,
    DatasetError,
    FileIssue,
    ImageRecord,
    discover,
    display_name,
    stable_split_percentage,
)
from datacheck.errors import DatacheckError
from datacheck.images import decode_image, read_file

if TYPE_CHECKING:
    from conftest import ImageFactory


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def files(root: Path, image_factory: ImageFactory) -> ImageFactory:
    """A factory writing under the dataset root."""
    return type(image_factory)(root)


def paths(dataset: Dataset) -> list[str]:
    return [r.path for r in dataset.records]


def issues_by_path(dataset: Dataset) -> dict[str, FileIssue]:
    return {i.path: i for i in dataset.issues}


def assert_printable_and_json_safe(dataset: Dataset) -> None:
    for text in [r.path for r in dataset.records] + [r.label for r in dataset.records]:
        assert text.isprintable()
        text.encode("utf-8")  # no lone surrogates
        assert json.loads(json.dumps(text, ensure_ascii=False)) == text
    for issue in dataset.issues:
        assert issue.path.isprintable() and issue.reason.isprintable()
        issue.path.encode("utf-8")
        assert issue.kind in ISSUE_KINDS


# ---------------------------------------------------------------------------------------------- layouts


def test_class_layout(class_tree: Callable[[dict[str, int]], Path]) -> None:
    root = class_tree({"dog": 2, "cat": 3})
    dataset = discover(root)
    assert dataset.layout == "classes"
    assert dataset.root == root
    assert dataset.classes == ("cat", "dog")
    assert dataset.class_counts == {"cat": 3, "dog": 2}
    assert dataset.splits == ()
    assert dataset.split_class_counts == {}
    assert len(dataset) == 5
    assert paths(dataset) == sorted(paths(dataset))
    assert paths(dataset)[0] == "cat/000.png"
    record = dataset.records[0]
    assert record == ImageRecord("cat/000.png", root / "cat" / "000.png", "cat", None)
    assert record.abs_path.is_file()
    assert dataset.issues == ()
    # the walk's own stat, kept so hashing need not stat every file again
    from datacheck.fileio import stat_fingerprint

    assert all(r.fingerprint == stat_fingerprint(os.stat(r.abs_path)) for r in dataset.records)


def test_nested_folders_belong_to_their_class(files: ImageFactory, root: Path) -> None:
    files.solid("cat/indoor/sofa/a.png")
    files.solid("cat/b.png")
    dataset = discover(root)
    assert [(r.path, r.label) for r in dataset.records] == [
        ("cat/b.png", "cat"),
        ("cat/indoor/sofa/a.png", "cat"),
    ]


def test_split_layout_is_detected_and_lower_cased(files: ImageFactory, root: Path) -> None:
    files.solid("Train/cat/a.png")
    files.solid("Train/cat/b.png")
    files.solid("Train/dog/c.png")
    files.solid("VAL/cat/d.png")
    files.solid("test/dog/nested/e.png")
    dataset = discover(root)
    assert dataset.layout == "splits"
    assert dataset.splits == ("test", "train", "val")
    assert dataset.classes == ("cat", "dog")
    assert dataset.split_class_counts == {
        "test": {"dog": 1},
        "train": {"cat": 2, "dog": 1},
        "val": {"cat": 1},
    }
    assert dataset.class_counts == {"cat": 3, "dog": 2}
    by_path = {r.path: r for r in dataset.records}
    assert by_path["VAL/cat/d.png"].split == "val"
    assert by_path["test/dog/nested/e.png"].label == "dog"


@pytest.mark.parametrize("name", ["valid", "Validation", "DEV", "Testing"])
def test_every_split_name_is_recognised(files: ImageFactory, root: Path, name: str) -> None:
    files.solid("train/cat/a.png")
    files.solid(f"{name}/cat/b.png")
    assert discover(root).splits == tuple(sorted(["train", name.lower()]))


def test_one_split_role_map_serves_discovery_training_and_the_checks() -> None:
    from datacheck.checks.representativeness import REFERENCE_SPLITS, TRAIN_SPLITS
    from datacheck.dataset import SPLIT_NAMES, SPLIT_ROLES, split_role
    from datacheck.train.splits import _folder_role

    assert frozenset(SPLIT_ROLES) == SPLIT_NAMES
    assert {name: split_role(name) for name in SPLIT_ROLES} == {
        name: _folder_role(name) for name in SPLIT_ROLES
    }
    assert split_role("Training") == "train" and split_role("holdout") is None and split_role(None) is None
    assert set(TRAIN_SPLITS) == {n for n, r in SPLIT_ROLES.items() if r == "train"}
    assert REFERENCE_SPLITS[0] == "test" and set(REFERENCE_SPLITS) == {
        n for n, r in SPLIT_ROLES.items() if r in ("val", "test")
    }


def test_a_non_split_folder_makes_it_a_class_layout(files: ImageFactory, root: Path) -> None:
    files.solid("train/a.png")
    files.solid("cat/b.png")
    dataset = discover(root)
    assert dataset.layout == "classes"
    assert dataset.classes == ("cat", "train")


def test_images_without_a_class_folder(files: ImageFactory, root: Path) -> None:
    files.solid("loose.png")
    files.solid("cat/a.png")
    dataset = discover(root)
    issue = issues_by_path(dataset)["loose.png"]
    assert issue.kind == "no_label"
    assert "class" in issue.reason and issue.reason.startswith("no class folder: ")
    assert paths(dataset) == ["cat/a.png"]


def test_images_directly_in_a_split_folder(files: ImageFactory, root: Path) -> None:
    files.solid("train/loose.png")
    files.solid("train/cat/a.png")
    issue = issues_by_path(discover(root))["train/loose.png"]
    assert issue.kind == "no_label"
    assert "'train'" in issue.reason


def test_hidden_entries_are_ignored_and_other_files_reported(files: ImageFactory, root: Path) -> None:
    files.solid("cat/a.png")
    files.solid("cat/.hidden.png")
    files.solid(".cache/cat/x.png")
    files.solid("__MACOSX/cat/y.png")
    files.write_bytes(".DS_Store", b"x")
    files.write_bytes("README.txt", b"hello")
    files.write_bytes("cat/labels.json", b"{}")
    files.write_bytes("cat/noext", b"?")
    dataset = discover(root)
    assert paths(dataset) == ["cat/a.png"]
    issues = issues_by_path(dataset)
    assert set(issues) == {"README.txt", "cat/labels.json", "cat/noext"}
    assert all(i.kind == "not_an_image" for i in issues.values())
    assert "'.json'" in issues["cat/labels.json"].reason
    assert "no file extension" in issues["cat/noext"].reason


def test_image_extensions_are_case_insensitive(files: ImageFactory, root: Path) -> None:
    for name in ["a.JPG", "b.Jpeg", "c.PNG", "d.bmp", "e.GIF", "f.webp", "g.TIF", "h.tiff"]:
        files.write_bytes(f"cat/{name}", b"")  # content is the decoder's business
    assert len(discover(root)) == 8


# --------------------------------------------------------------------------------------------- symlinks


def test_symlink_loop_is_not_followed_twice(files: ImageFactory, root: Path) -> None:
    files.solid("cat/a.png")
    (root / "cat" / "loop").symlink_to(root / "cat")
    (root / "cat" / "to_root").symlink_to(root)
    dataset = discover(root)
    assert paths(dataset) == ["cat/a.png"]
    issues = issues_by_path(dataset)
    assert issues["cat/loop"].kind == "duplicate_path"
    assert "'cat'" in issues["cat/loop"].reason
    assert "dataset root" in issues["cat/to_root"].reason


def test_symlinked_file_is_counted_once(files: ImageFactory, root: Path) -> None:
    files.solid("cat/a.png")
    files.solid("dog/b.png")
    (root / "dog" / "a_link.png").symlink_to(root / "cat" / "a.png")
    dataset = discover(root)
    assert paths(dataset) == ["cat/a.png", "dog/b.png"]
    issue = issues_by_path(dataset)["dog/a_link.png"]
    assert issue.kind == "duplicate_path"
    assert "'cat/a.png'" in issue.reason


def test_hard_link_is_counted_once(files: ImageFactory, root: Path) -> None:
    files.solid("cat/a.png")
    os.link(root / "cat" / "a.png", root / "cat" / "b.png")
    dataset = discover(root)
    assert paths(dataset) == ["cat/a.png"]
    assert issues_by_path(dataset)["cat/b.png"].kind == "duplicate_path"


def test_real_path_wins_over_a_link_that_sorts_first(files: ImageFactory, root: Path) -> None:
    files.solid("zebra/a.png")
    (root / "aardvark").symlink_to(root / "zebra")
    dataset = discover(root)
    assert paths(dataset) == ["zebra/a.png"]
    assert issues_by_path(dataset)["aardvark"].kind == "duplicate_path"


def test_symlink_to_a_folder_outside_the_root_is_followed(
    files: ImageFactory, root: Path, tmp_path: Path
) -> None:
    files.solid("cat/a.png")
    outside = type(files)(tmp_path / "elsewhere")
    outside.solid("birds/x.png")
    (root / "bird").symlink_to(tmp_path / "elsewhere" / "birds")
    dataset = discover(root)
    assert paths(dataset) == ["bird/x.png", "cat/a.png"]
    record = dataset.records[0]
    assert record.label == "bird"
    assert record.abs_path == root / "bird" / "x.png"
    assert record.abs_path.is_file()


def test_broken_symlink_is_unreadable(files: ImageFactory, root: Path) -> None:
    files.solid("cat/a.png")
    (root / "cat" / "gone.png").symlink_to(root / "cat" / "nothing.png")
    (root / "cat" / "self.png").symlink_to(root / "cat" / "self.png")
    issues = issues_by_path(discover(root))
    assert issues["cat/gone.png"].kind == "unreadable"
    assert issues["cat/gone.png"].reason.startswith("broken symbolic link: ")
    assert issues["cat/self.png"].reason.startswith("symbolic link loop: ")


def test_unlistable_folder_is_reported(
    files: ImageFactory, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files.solid("cat/a.png")
    files.solid("dog/b.png")
    real_scandir = os.scandir

    def scandir(path: os.PathLike[str] | str) -> object:
        if Path(path).name == "dog":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    dataset = discover(root)
    assert paths(dataset) == ["cat/a.png"]
    issue = issues_by_path(dataset)["dog"]
    assert (issue.kind, issue.reason.split(":")[0]) == ("unreadable", "permission denied")


# ------------------------------------------------------------------------------------------------ names


def test_non_utf8_names_do_not_crash(files: ImageFactory, root: Path) -> None:
    files.save(b"na\xefve/caf\xe9 1.png", files.noise((8, 8)))
    files.solid("cat/a.png")
    dataset = discover(root)
    assert_printable_and_json_safe(dataset)
    odd = next(r for r in dataset.records if r.label != "cat")
    assert odd.path == "na\\xefve/caf\\xe9 1.png"
    assert odd.label == "na\\xefve"
    assert os.fsencode(odd.abs_path).endswith(b"na\xefve/caf\xe9 1.png")
    assert decode_image(read_file(odd.abs_path), 16).stats.format == "PNG"


def test_unicode_and_spaces_in_names(files: ImageFactory, root: Path) -> None:
    files.solid("golden retriever/фото 1.png")
    files.solid("猫/été.jpg")
    dataset = discover(root)
    assert dataset.classes == ("golden retriever", "猫")
    assert paths(dataset) == ["golden retriever/фото 1.png", "猫/été.jpg"]
    assert_printable_and_json_safe(dataset)
    assert all(r.abs_path.is_file() for r in dataset.records)


def test_display_name_escapes_control_characters() -> None:
    assert display_name("a\nb.png") == "a\\nb.png"
    assert display_name(os.fsdecode(b"x\xff")) == "x\\xff"
    assert display_name("plain name.png") == "plain name.png"


# ---------------------------------------------------------------------------------------------- errors


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        discover(tmp_path / "nope")


def test_empty_root(root: Path) -> None:
    root.mkdir()
    with pytest.raises(DatasetError, match="is empty: put images in one sub-folder per class"):
        discover(root)


def test_root_without_images(files: ImageFactory, root: Path) -> None:
    files.write_bytes("cat/readme.txt", b"x")
    files.solid("loose.png")
    with pytest.raises(DatasetError, match="no labelled images found") as info:
        discover(root)
    assert "1 no_label" in str(info.value) and "1 not_an_image" in str(info.value)
    assert isinstance(info.value, DatacheckError)
    assert info.value.exit_code == 3


def test_root_is_a_plain_file(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(b"x")
    with pytest.raises(DatasetError, match="is not a folder"):
        discover(path)


def test_discovery_is_deterministic(class_tree: Callable[[dict[str, int]], Path]) -> None:
    root = class_tree({"b": 3, "a": 2, "c": 1})
    assert discover(root) == discover(root)


# -------------------------------------------------------------------------------------------- manifests


def write_manifest(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_manifest_layout(files: ImageFactory, root: Path, tmp_path: Path) -> None:
    files.solid("imgs/a.png")
    files.solid("imgs/b.jpg")
    files.solid("imgs/c.png")
    files.write_bytes("imgs/notes.txt", b"x")
    outside = type(files)(tmp_path / "outside").solid("z.png")
    manifest = write_manifest(
        root / "labels.csv",
        "\ufeffPath, Label ,split,extra\n"
        "imgs/a.png,cat,Train,1\n"
        "imgs/b.jpg,dog,val,2\n"
        "\n"
        f"{outside},dog,,3\n"
        "imgs/missing.png,cat,train,4\n"
        "imgs/notes.txt,cat,train,5\n"
        "imgs/c.png,,train,6\n"
        "./imgs/a.png,dog,train,7\n"
        ",cat,train,8\n",
    )
    for dataset in (discover(manifest), discover(root, manifest=manifest)):
        assert dataset.layout == "manifest"
        assert dataset.root == root
        assert [(r.path, r.label, r.split) for r in dataset.records] == [
            (outside.as_posix(), "dog", None),
            ("imgs/a.png", "cat", "train"),
            ("imgs/b.jpg", "dog", "val"),
        ]
        kinds = {(i.path, i.kind) for i in dataset.issues}
        assert kinds == {
            ("imgs/missing.png", "missing"),
            ("imgs/notes.txt", "not_an_image"),
            ("imgs/c.png", "no_label"),
            ("imgs/a.png", "duplicate_path"),
            ("labels.csv:10", "bad_manifest_row"),
        }
        duplicate = next(i for i in dataset.issues if i.kind == "duplicate_path")
        assert "line 2" in duplicate.reason and "'cat'" in duplicate.reason
        assert_printable_and_json_safe(dataset)


def test_manifest_paths_are_relative_to_the_manifest(files: ImageFactory, root: Path) -> None:
    files.solid("sub/imgs/a.png")
    manifest = write_manifest(root / "sub" / "m.csv", "path,label\nimgs/a.png,cat\n")
    dataset = discover(root, manifest=manifest)
    assert paths(dataset) == ["sub/imgs/a.png"]
    assert dataset.records[0].abs_path.is_file()


def test_manifest_without_header(files: ImageFactory, root: Path) -> None:
    files.solid("a.png")
    manifest = write_manifest(root / "m.csv", "a.png,cat\n")
    with pytest.raises(DatasetError, match="header row with the columns path,label"):
        discover(manifest)


def test_manifest_without_usable_rows(root: Path) -> None:
    manifest = write_manifest(root / "m.csv", "path,label\nnothing.png,cat\n")
    with pytest.raises(DatasetError, match="lists no usable image"):
        discover(manifest)


def test_missing_manifest(root: Path) -> None:
    root.mkdir()
    with pytest.raises(DatasetError, match="does not exist"):
        discover(root, manifest=root / "m.csv")


def test_manifest_with_non_utf8_path(files: ImageFactory, root: Path) -> None:
    files.save(b"caf\xe9.png", files.noise((8, 8)))
    (root / "m.csv").write_bytes(b"path,label\ncaf\xe9.png,cat\n")
    dataset = discover(root / "m.csv")
    assert paths(dataset) == ["caf\\xe9.png"]
    assert dataset.records[0].abs_path.is_file()


# ------------------------------------------------------------------------------------------- dataset API


def test_with_issues_returns_a_new_dataset(class_tree: Callable[[dict[str, int]], Path]) -> None:
    dataset = discover(class_tree({"cat": 2, "dog": 1}))
    failure = FileIssue("cat/000.png", "unreadable", "truncated file: image data ends early")
    updated = dataset.with_issues([failure])
    assert updated is not dataset
    assert updated.issues == (failure,)
    assert paths(updated) == ["cat/001.png", "dog/000.png"]
    assert updated.class_counts == {"cat": 1, "dog": 1}
    assert len(dataset) == 3 and dataset.issues == ()
    assert updated.with_issues([failure]).issues == (failure,)


def test_dataclasses_are_frozen(class_tree: Callable[[dict[str, int]], Path]) -> None:
    dataset = discover(class_tree({"cat": 1}))
    with pytest.raises(AttributeError):
        dataset.records[0].label = "dog"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        dataset.layout = "splits"  # type: ignore[misc]


# ------------------------------------------------------------------------------------------ stable split


def retrain_reference(file_name: str) -> float:
    """TF retrain.py's create_image_lists, applied to a base name."""
    max_num_images_per_class = 2**27 - 1
    hash_name = re.sub(r"_nohash_.*$", "", file_name)
    hash_name_hashed = hashlib.sha1(hash_name.encode("utf-8")).hexdigest()
    return (int(hash_name_hashed, 16) % (max_num_images_per_class + 1)) * (100.0 / max_num_images_per_class)


def test_stable_split_percentage_matches_retrain() -> None:
    for name in ["a.jpg", "person_42.png", "anna_nohash_3.jpg", "été.png"]:
        assert stable_split_percentage(name) == retrain_reference(name)
        assert 0.0 <= stable_split_percentage(name) <= 100.0


def test_stable_split_groups_nohash_variants() -> None:
    assert stable_split_percentage("cat/anna_nohash_1.jpg") == stable_split_percentage("anna_nohash_2.jpg")
    assert stable_split_percentage("anna_nohash_1.jpg") == stable_split_percentage("anna")
    assert stable_split_percentage("anna.jpg") != stable_split_percentage("bob.jpg")


def test_stable_split_is_spread_over_the_range() -> None:
    values = [stable_split_percentage(f"img_{i}.jpg") for i in range(2000)]
    assert 0.0 <= min(values) < 1.0 and 99.0 < max(values) <= 100.0
    assert 45.0 < sum(values) / len(values) < 55.0
