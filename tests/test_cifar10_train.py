"""``datacheck cifar10 train`` on the CPU: data sources, .npy cache, leaks, augmentation, CLI end to end.

Real CIFAR-10 JPEGs come from ``../shared/datasets/cifar10-jpeg.tar.gz`` beside the repository root (a small
subset is extracted into a temporary folder; the archive is never unpacked into the repository). Tests that
need it are skipped with a message when it is absent. The multi-replica tests are in test_distributed.py.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from datacheck.cli import app
from datacheck.errors import DatasetUnreadableError, UsageError
from datacheck.train.cifar10 import data
from datacheck.train.cifar10.params import ParamsError, TrainParams, parse_gpus

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
needs_archive = pytest.mark.skipif(
    not ARCHIVE.is_file(), reason=f"CIFAR-10 archive not found at {ARCHIVE} (expected beside the repository)"
)
TRAIN_PER_CLASS, TEST_PER_CLASS = 30, 10
LEAKED_CLASSES = ("cat", "dog", "ship")  # a training image of each is copied into test/ (exact leaks)
REPORTED = ("test/bird/", "test/frog/")  # the first test image of each is named by the fake report


def _extract_subset(archive: Path, root: Path) -> None:
    """The first N images of each class and split, in archive order."""
    wanted = {"train": TRAIN_PER_CLASS, "test": TEST_PER_CLASS}
    counts: dict[tuple[str, str], int] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] not in wanted:
                continue
            key = (parts[0], parts[1])
            if counts.get(key, 0) >= wanted[parts[0]]:
                continue
            counts[key] = counts.get(key, 0) + 1
            target = root / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())


def _first(folder: Path) -> Path:
    return sorted(folder.iterdir())[0]


@pytest.fixture(scope="module")
def subset(tmp_path_factory) -> Path:
    """300 training and 100 test JPEGs of real CIFAR-10, plus 3 test files copied from training images."""
    if not ARCHIVE.is_file():
        pytest.skip(f"CIFAR-10 archive not found at {ARCHIVE} (expected beside the repository)")
    root = tmp_path_factory.mktemp("cifar") / "cifar10"
    _extract_subset(ARCHIVE, root)
    for name in LEAKED_CLASSES:  # the alphabetically first training image is in every --limit subset
        shutil.copyfile(_first(root / "train" / name), root / "test" / name / "zz-leak.jpg")
    return root


@pytest.fixture(scope="module")
def report(subset, tmp_path_factory) -> Path:
    """A report.json whose leakage check names two test images (as `datacheck audit` writes it)."""
    findings = []
    for prefix in REPORTED:
        test_file = _first(subset / prefix).relative_to(subset).as_posix()
        train_file = _first(subset / "train" / prefix.split("/")[1]).relative_to(subset).as_posix()
        findings.append({"kind": "leak", "severity": "fail", "files": [test_file, train_file],
                         "splits": ["test", "train"], "similarity": 0.98})  # fmt: skip
    doc = {
        "schema_version": 1,
        "dataset": {"root": str(subset)},
        "checks": [{"id": "leakage", "status": "fail", "metrics": {"pairs": 2}, "findings": findings}],
    }
    path = tmp_path_factory.mktemp("report") / "report.json"
    path.write_text(json.dumps(doc))
    return path


def _write_batches(folder: Path, arrays: data.Cifar10Arrays) -> None:
    """The arrays in the original cifar-10-batches-py format (pickled dicts, channel-first rows)."""
    folder.mkdir(parents=True)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [c.encode() for c in arrays.classes]}, handle, protocol=2)
    train_chunks = np.array_split(np.arange(len(arrays.y_train)), 5)
    names = [Path(p).name for p in arrays.test_paths]
    batches = [
        (f"data_batch_{i + 1}", arrays.x_train[c], arrays.y_train[c], None)
        for i, c in enumerate(train_chunks)
    ]
    batches.append(("test_batch", arrays.x_test, arrays.y_test, names))
    for name, x, y, files in batches:
        batch = {
            b"labels": [int(v) for v in y],
            b"data": x.transpose(0, 3, 1, 2).reshape(len(x), 3072),
            b"filenames": [f.encode() for f in (files or [f"{name}_{i}.png" for i in range(len(x))])],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)


# ----------------------------------------------------------------------------------------- data


def test_balanced_subset_takes_classes_round_robin():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    assert data.balanced_subset(labels, None).tolist() == list(range(7))
    assert data.balanced_subset(labels, 3).tolist() == [0, 4, 6]
    assert data.balanced_subset(labels, 5).tolist() == [0, 1, 4, 5, 6]


@needs_archive
def test_folder_and_batches_give_the_same_arrays(subset, tmp_path):
    folder = data.load_cifar10(subset, cache_dir=tmp_path / "cache")
    assert folder.x_train.shape == (10 * TRAIN_PER_CLASS, 32, 32, 3) and folder.x_train.dtype == np.uint8
    assert folder.x_test.shape == (10 * TEST_PER_CLASS + len(LEAKED_CLASSES), 32, 32, 3)
    assert folder.classes == data.CLASSES
    assert np.bincount(folder.y_train).tolist() == [TRAIN_PER_CLASS] * 10
    assert folder.test_paths[0].startswith("test/airplane/")
    _write_batches(tmp_path / "cifar-10-batches-py", folder)
    batches = data.load_cifar10(tmp_path, cache_dir=tmp_path / "cache")  # the parent folder is found too
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(batches, name), getattr(folder, name))
    assert batches.test_paths == folder.test_paths  # so report.json leak lists apply to both
    assert "cifar-10-batches-py" in batches.source


@needs_archive
def test_decoded_arrays_are_cached_and_invalidated(subset, tmp_path):
    cache = tmp_path / "cache"
    first = data.load_cifar10(subset, limit=50, cache_dir=cache)
    folders = list((cache / "cifar10").iterdir())
    assert len(folders) == 1 and {p.name for p in folders[0].iterdir()} >= {"x_train.npy", "meta.json"}
    again = data.load_cifar10(subset, limit=50, cache_dir=cache)
    np.testing.assert_array_equal(first.x_test, again.x_test)
    assert len(first.y_train) == 50 and np.bincount(first.y_train).tolist() == [5] * 10
    copy = tmp_path / "copy"
    shutil.copytree(subset, copy)
    victim = copy / first.test_paths[0]
    victim.write_bytes((copy / first.test_paths[1]).read_bytes())  # an edited file → decoded again
    changed = data.load_cifar10(copy, limit=50, cache_dir=cache)
    assert len(list((cache / "cifar10").iterdir())) == 2
    np.testing.assert_array_equal(changed.x_test[0], first.x_test[1])


def test_batches_refuse_pickles_that_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    evil = pickle.dumps({b"data": os.getcwd})  # a reference to any callable outside the allow-list
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(evil)
    with pytest.raises(DatasetUnreadableError, match="refusing to load"):
        data.load_cifar10(folder, cache_dir=tmp_path / "cache")


def test_a_folder_without_splits_is_refused(tmp_path, class_tree):
    root = class_tree({"cat": 2, "dog": 2})
    with pytest.raises(DatasetUnreadableError, match=r"needs train/<class>/ and test/<class>/"):
        data.load_cifar10(root, cache_dir=tmp_path / "cache")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_offline_fails_with_a_clear_message(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/cifar-10-python.tar.gz"
    with pytest.raises(DatasetUnreadableError, match="--download needs internet") as err:
        data.download_batches(tmp_path, url=url)
    assert "cifar-10-batches-py" in str(err.value)


def test_leaks_are_read_from_the_report_and_rerooted(tmp_path):
    pairs = [
        (["cifar/test/cat/1.jpg", "cifar/train/cat/9.jpg"], ["test", "train"]),
        (["cifar/train/dog/3.jpg", "cifar/val/dog/4.jpg"], ["train", "val"]),
    ]
    findings = [{"kind": "leak", "files": files, "splits": splits} for files, splits in pairs]
    leakage = {"id": "leakage", "status": "fail", "metrics": {"pairs": 5}, "findings": findings}
    doc = {"dataset": {"root": str(tmp_path)}, "checks": [leakage]}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(doc))
    leaks = data.read_leaks(path)
    assert leaks.test_paths == {"cifar/test/cat/1.jpg"} and (leaks.pairs_listed, leaks.pairs_total) == (2, 5)
    mask = data.leak_free_mask(["test/cat/1.jpg", "test/cat/2.jpg"], leaks, tmp_path / "cifar")
    assert mask.tolist() == [False, True]
    path.write_text(json.dumps({"checks": [{"id": "leakage", "status": "skipped", "findings": []}]}))
    with pytest.raises(UsageError, match="no leakage results"):
        data.read_leaks(path)


def test_augment_crops_a_padded_window_and_flips():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    out = data.augment(tf.constant(images), tf.constant([1, 2], tf.int32)).numpy()
    again = data.augment(tf.constant(images), tf.constant([1, 2], tf.int32)).numpy()
    np.testing.assert_array_equal(out, again)  # stateless: the seed decides
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect").astype(np.float32)
    kinds = set()
    for i in range(len(images)):
        windows = {
            (dy, dx, flip): padded[i, dy : dy + 32, dx : dx + 32][:, ::-1]
            if flip
            else padded[i, dy : dy + 32, dx : dx + 32]
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
        }
        matches = [key for key, window in windows.items() if np.array_equal(out[i], window)]
        assert matches, f"image {i} is not a (flipped) 32×32 window of the padded image"
        kinds.add(matches[0][2])
    assert kinds == {False, True}


# ----------------------------------------------------------------------------------------- params and plan


def test_params_are_validated():
    assert parse_gpus("all") == "all" and parse_gpus("2") == 2
    with pytest.raises(ParamsError):
        parse_gpus("two")
    with pytest.raises(ParamsError, match="either a data folder or download"):
        TrainParams()
    with pytest.raises(ParamsError, match="needs gpus=0"):
        TrainParams(data=Path("x"), cpu_replicas=2)
    with pytest.raises(ParamsError, match="model must be one of resnet9, small"):
        TrainParams(data=Path("x"), model="vgg")
    with pytest.raises(ParamsError, match="precision must be one of"):
        TrainParams(data=Path("x"), precision="float64")
    with pytest.raises(ParamsError, match="epochs must be at least 1"):
        TrainParams(data=Path("x"), epochs=0)
    with pytest.raises(ParamsError, match="lr must be greater than 0"):
        TrainParams(data=Path("x"), lr=0.0)
    with pytest.raises(ParamsError, match="gpus must be 'all' or an integer"):
        TrainParams(data=Path("x"), gpus=-1)
    with pytest.raises(ParamsError, match="cannot be combined with multi_worker"):
        TrainParams(data=Path("x"), gpus=0, cpu_replicas=2, multi_worker=True)
    assert TrainParams(download=True, epochs=None, limit=None).epochs is None


def test_global_batch_and_learning_rate_scale_with_replicas():
    from datacheck.train.cifar10.train import Plan

    params = TrainParams(data=Path("x"), model="resnet9", epochs=10)
    one, four = Plan.make(params, 1, 50_000), Plan.make(params, 4, 50_000)
    assert (one.global_batch, four.global_batch) == (512, 2048)
    assert four.peak_lr == pytest.approx(4 * one.peak_lr) and one.peak_lr == pytest.approx(0.4)
    assert four.steps_per_epoch == 50_000 // 2048
    schedule = four.schedule()
    lrs = [float(schedule(s)) for s in (0, four.warmup_steps, four.total_steps - 1)]
    peak, warm, total = four.peak_lr, four.warmup_steps, four.total_steps
    assert lrs == pytest.approx(
        [peak * 0.5 / warm, peak * (1 - 0.5 / (total - warm)), peak * 0.5 / (total - warm)], rel=1e-4
    )
    with pytest.raises(UsageError, match="fewer than one global batch"):
        Plan.make(params, 4, 1000)


# ----------------------------------------------------------------------------------------- end to end


def _train_args(subset: Path, out: Path, cache: Path, report: Path, epochs: int) -> list[str]:
    return [
        "cifar10", "train", "--data", str(subset), "--model", "small", "--epochs", str(epochs),
        "--limit", "250", "--batch-size", "25", "--gpus", "0", "--out", str(out), "--cache", str(cache),
        "--exclude-leaks", str(report),
    ]  # fmt: skip


@needs_archive
def test_cli_trains_on_the_cpu_reports_both_accuracies_and_resumes(subset, report, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "datacheck", *_train_args(subset, out, cache, report, 1)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "leak-free test accuracy" in proc.stdout and "metrics.json" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    test_images = 10 * TEST_PER_CLASS + len(LEAKED_CLASSES)
    assert metrics["train_images"] == 250 and metrics["test_images"] == test_images
    assert metrics["leaks"]["exact_copies_of_train_images"] == len(LEAKED_CLASSES)
    assert metrics["leaks"]["named_by_report"] == len(REPORTED)
    assert metrics["test_images_leak_free"] == test_images - len(LEAKED_CLASSES) - len(REPORTED)
    for key in ("test_accuracy", "test_accuracy_leak_free"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["images_per_second"] > 0 and metrics["wall_seconds"] > 0
    assert metrics["devices"] == {"strategy": "cpu", "replicas": 1, "devices": ["/cpu:0"], "workers": 1,
                                  "precision": "float32", "sync_bn": False}  # fmt: skip
    assert metrics["batch"] == {"per_replica": 25, "global": 25, "steps_per_epoch": 10}
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "checkpoints" / "ckpt-1.index").is_file()

    runner = CliRunner()
    refused = runner.invoke(app, _train_args(subset, out, cache, report, 2))
    assert refused.exit_code == 2 and "--resume" in refused.output
    resumed = runner.invoke(app, [*_train_args(subset, out, cache, report, 2), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    after = json.loads((out / "metrics.json").read_text())
    assert after["resumed_from_epoch"] == 1 and [e["epoch"] for e in after["history"]] == [1, 2]
    assert (metrics["optimizer_steps"], after["optimizer_steps"]) == (
        10,
        20,
    )  # the optimiser state was restored
    assert after["history"][0] == metrics["history"][0]
    assert (out / "checkpoints" / "ckpt-2.index").is_file()
    # a finished run resumed with other leak information is evaluated again (here: no report)
    again = runner.invoke(app, [*_train_args(subset, out, cache, report, 2)[:-2], "--resume"])
    assert again.exit_code == 0, again.output
    final = json.loads((out / "metrics.json").read_text())
    assert len(final["history"]) == 2 and final["optimizer_steps"] == 20
    assert final["test_accuracy"] == after["test_accuracy"]  # the same model, evaluated again
    assert (
        final["test_images_leak_free"] == test_images - len(LEAKED_CLASSES)
        and final["leaks"]["report"] is None
    )


def test_cli_download_offline_and_bad_options_exit_with_clear_errors(tmp_path, monkeypatch):
    runner = CliRunner()
    both = runner.invoke(app, ["cifar10", "train", "--data", str(tmp_path), "--download"])
    assert both.exit_code == 2 and "either" in both.output
    monkeypatch.setenv("DATACHECK_CIFAR10_URL", f"http://127.0.0.1:{_closed_port()}/cifar-10-python.tar.gz")
    args = [
        "cifar10",
        "train",
        "--download",
        "--gpus",
        "0",
        "--out",
        str(tmp_path / "o"),
        "--cache",
        str(tmp_path),
    ]
    offline = runner.invoke(app, args)
    assert offline.exit_code == 3 and "needs internet" in offline.output
    monkeypatch.delenv("TF_CONFIG", raising=False)
    alone = runner.invoke(app, ["cifar10", "train", "--data", str(tmp_path), "--gpus", "0", "--multi-worker"])
    assert alone.exit_code == 2 and "TF_CONFIG" in alone.output
