"""``compare``: the paired bootstrap, the verdict words, the leak-free test set, the real thing on CIFAR-10.

The CIFAR-10 test uses JPEGs from ``../shared/datasets/cifar10-jpeg.tar.gz`` (beside the repository root) and
is skipped when the archive is absent. BEFORE has 30 % of the automobile training images labelled "truck" (a
systematic, plausible annotation error); AFTER is the clean version. Both share a clean test split.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from datacheck.cli import app
from datacheck.errors import UsageError
from datacheck.train.compare import HELPED, HURT, NO_DIFFERENCE, CompareParams, bootstrap_metrics, verdict
from tests.test_retrain import make_dataset, scene

ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
CIFAR_CLASSES = ("airplane", "automobile", "ship", "truck")
TRAIN_PER_CLASS, TEST_PER_CLASS = 250, 200
SIZE = 96


# ----------------------------------------------------------------------------------------- statistics


def test_verdict_words():
    assert verdict([0.01, 0.03]) == HELPED
    assert verdict([-0.03, -0.001]) == HURT
    assert verdict([-0.01, 0.02]) == NO_DIFFERENCE
    assert verdict([0.0, 0.0]) == NO_DIFFERENCE


def test_bootstrap_is_paired_and_sees_a_clear_difference():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    right = np.tile(y, (5, 1))
    worse = np.where(rng.random((5, 600)) < 0.2, (y + 1) % 3, y)  # 20 % wrong in every seed
    boot = bootstrap_metrics(y, np.stack([right, right]), 3, 500, np.random.default_rng(1))
    assert boot["accuracy"].shape == (2, 500) and boot["recall"].shape == (2, 500, 3)
    assert np.all(boot["accuracy"][1] - boot["accuracy"][0] == 0)  # identical versions: exactly 0 in each
    boot = bootstrap_metrics(y, np.stack([worse, right]), 3, 500, np.random.default_rng(1))
    diff = boot["accuracy"][1] - boot["accuracy"][0]
    assert 0.15 < diff.mean() < 0.25 and np.quantile(diff, 0.025) > 0.1
    assert np.all(boot["macro_f1"][1] > boot["macro_f1"][0])


def test_compare_params_are_validated():
    with pytest.raises(UsageError, match="seeds must be at least 2"):
        CompareParams(seeds=1)
    with pytest.raises(UsageError, match="metric must be one of accuracy, macro_f1, got 'auc'"):
        CompareParams(metric="auc")
    with pytest.raises(UsageError, match="confidence must be less than 1"):
        CompareParams(confidence=1.0)
    with pytest.raises(UsageError, match="bootstrap must be at least 100"):
        CompareParams(bootstrap=99)
    assert CompareParams().replace(seeds=None, metric="macro_f1").metric == "macro_f1"


# ------------------------------------------------------------------------ generated data, real model


def _scene_dataset(root: Path) -> Path:
    return make_dataset(root, per_class=24)


def test_identical_datasets_show_no_detectable_difference(tmp_path, model_cache):
    before = _scene_dataset(tmp_path / "before")
    after = tmp_path / "after"
    shutil.copytree(before, after)  # the same images in another folder
    args = ["compare", str(before), str(after), "--seeds", "2", "--test-percent", "25", "-f", "json"]
    args += ["--epochs", "5"]  # the verdict needs identical heads, not converged ones
    result = CliRunner().invoke(
        app, [*args, "--image-size", str(SIZE), "--cache", str(model_cache), "--runtime", "tf"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["verdict"] == NO_DIFFERENCE
    assert doc["test"]["used"] > 0 and doc["test"]["excluded_duplicates"] == 0
    acc = doc["metrics"]["accuracy"]
    assert acc["difference"]["ci"][0] <= 0 <= acc["difference"]["ci"][1]
    # same vectors, same seeds: the heads agree up to thread-order rounding, which may move one test image
    one_image = 1 / doc["test"]["used"]
    assert acc["before"]["per_seed"] == pytest.approx(acc["after"]["per_seed"], abs=one_image)
    assert {row["class"] for row in doc["per_class"]} <= {"red", "green", "blue"}


def test_test_images_copied_into_training_are_left_out(tmp_path, model_cache):
    before = _scene_dataset(tmp_path / "before")
    test = tmp_path / "test"
    for label in ("red", "green", "blue"):
        (test / label).mkdir(parents=True)
        for i in range(3):
            shutil.copy(before / label / f"{label}_{i:03d}.png", test / label / f"copy{i}.png")

        scene((128, 128, 128), 5000 + len(label)).save(test / label / "fresh.png")
    from datacheck.params import EmbedParams
    from datacheck.train.compare import compare
    from datacheck.train.params import HeadParams

    params = CompareParams(
        embed=EmbedParams(image_size=SIZE, cache_dir=model_cache, runtime="tf"),
        head=HeadParams(max_epochs=1),  # what is checked is the test set, not the heads
        seeds=2,
    )
    doc = compare(before, before, test=test, params=params).to_dict()
    assert doc["test"]["images"] == 12 and doc["test"]["excluded_duplicates"] == 9
    assert all(path.endswith(".png") and "copy" in path for path in doc["test"]["excluded"])


# ---------------------------------------------------------------------------------------- CIFAR-10


@pytest.fixture(scope="module")
def cifar_versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """BEFORE (30 % of automobiles labelled truck) and AFTER (clean), with the same clean test split."""
    if not ARCHIVE.is_file():
        pytest.skip(f"CIFAR-10 archive not found at {ARCHIVE} (needs ../shared beside the repository)")
    base = tmp_path_factory.mktemp("cifar-compare")
    before, after = base / "before", base / "after"
    with tarfile.open(ARCHIVE, "r:gz") as archive:
        for member in archive:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3 or parts[-2] not in CIFAR_CLASSES:
                continue
            split, label, name = parts[-3:]
            number = int(Path(name).stem)
            if number >= (TRAIN_PER_CLASS if split == "train" else TEST_PER_CLASS):
                continue
            data = archive.extractfile(member).read()  # type: ignore[union-attr]
            flipped = split == "train" and label == "automobile" and number % 10 < 3
            for root, target in ((after, label), (before, "truck" if flipped else label)):
                path = root / split / target / f"{label}{name}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
    return before, after


@pytest.mark.cifar
@pytest.mark.slow
def test_compare_detects_the_label_fix_on_cifar(cifar_versions, model_cache):
    before, after = cifar_versions
    options = ["--image-size", str(SIZE), "--cache", str(model_cache), "-f", "json"]
    result = CliRunner().invoke(app, ["compare", str(before), str(after), *options])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["verdict"] == HELPED, doc["summary"]
    assert doc["test"]["source"].startswith("test images of BEFORE")
    assert doc["test"]["images"] == len(CIFAR_CLASSES) * TEST_PER_CLASS
    assert doc["settings"]["seeds"] == 5
    per_class = {row["class"]: row for row in doc["per_class"]}
    assert per_class["automobile"]["recall"]["delta"] > 0.05  # the fixed class gains most
    assert per_class["automobile"]["change"] == HELPED
    assert doc["metrics"]["accuracy"]["difference"]["mean"] > 0
