"""retrain → export → predict with the real bundled backbone, the stable split, the head and its metrics.

The dataset is generated: three classes of smooth colour scenes (reddish, greenish, bluish) with a random
shape on top, so the pretrained backbone separates them and the test stays fast. Embedding uses
``runtime="tf"``: the Keras model is built anyway for the export, and a session that has not converted the
LiteRT model yet saves the conversion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from datacheck.cli import app
from datacheck.dataset import ImageRecord
from datacheck.errors import UsageError
from datacheck.train.metrics import classification_metrics, confident_mistakes, save_confusion_png
from datacheck.train.params import HeadParams, RetrainParams
from datacheck.train.splits import SplitParams, assign_roles, hash_role

SIZE = 96
CLASSES = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}
PER_CLASS = 30


def scene(colour: tuple[int, int, int], seed: int, size: int = 48) -> Image.Image:
    """A smooth field around ``colour`` with a few light shapes: distinct per seed (no near duplicates), and
    natural enough for a CNN."""
    rng = np.random.default_rng(seed)
    coarse = np.clip(np.array(colour) + rng.normal(0, 50, (8, 8, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x, y = (int(v) for v in rng.integers(0, size - 8, 2))
        side = int(rng.integers(6, 16))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x, y, x + side, y + side], fill=fill)
    return img


def make_dataset(root: Path, per_class: int = PER_CLASS) -> Path:
    for k, (label, colour) in enumerate(CLASSES.items()):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            scene(colour, 1000 * k + i).save(root / label / f"{label}_{i:03d}.png")
    return root


def _options(cache: Path) -> list[str]:
    return ["--image-size", str(SIZE), "--cache", str(cache), "--runtime", "tf"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> tuple[Path, Path, dict]:
    """One retrain through the CLI (JSON), shared by the round-trip tests: (data, model folder, metrics)."""
    base = tmp_path_factory.mktemp("retrain")
    data, out = make_dataset(base / "data"), base / "model"
    args = ["retrain", str(data), "--out", str(out), "--val-percent", "20", "--test-percent", "20"]
    result = CliRunner().invoke(app, [*args, *_options(model_cache), "--format", "json"])
    assert result.exit_code == 0, result.output
    return data, out, json.loads(result.stdout)


# --------------------------------------------------------------------------------------- stable split


def _records(names: list[str]) -> list[ImageRecord]:
    return [ImageRecord(n, Path(n), n.split("/")[0], None) for n in names]


def test_stable_split_honours_nohash_and_is_stable():
    names = [f"speaker{s}/speaker{s}_nohash_{i}.wav.png" for s in range(200) for i in range(3)]
    roles = assign_roles(_records(names), SplitParams(val_percent=20, test_percent=20))
    by_speaker = {}
    for name, role in zip(names, roles, strict=True):
        by_speaker.setdefault(name.split("/")[0], set()).add(role)
    assert all(len(r) == 1 for r in by_speaker.values())  # one speaker, one role
    shares = {r: float(np.mean(roles == r)) for r in ("train", "val", "test")}
    assert 0.5 < shares["train"] < 0.7 and 0.12 < shares["val"] < 0.28 and 0.12 < shares["test"] < 0.28
    # adding images never moves an existing one; the folder a file sits in does not matter
    more = assign_roles(_records([*names, *(f"new/n{i}.png" for i in range(50))]), SplitParams(20, 20))
    assert list(more[: len(names)]) == list(roles)
    assert hash_role("a/x_nohash_1.png", 20, 20) == hash_role("b/x_nohash_999.png", 20, 20)


def test_split_folders_win_and_missing_roles_come_from_train():
    records = [
        ImageRecord(f"{s}/c/{i}.png", Path("."), "c", s) for s in ("train", "test") for i in range(300)
    ]
    roles = assign_roles(records, SplitParams(val_percent=10, test_percent=10))
    train_part, test_part = roles[:300], roles[300:]
    assert set(test_part) == {"test"}
    assert set(train_part) == {"train", "val"}  # no val/ folder: carved from train/, no hash test share
    assert 0.04 < np.mean(train_part == "val") < 0.18
    ignored = assign_roles(records, SplitParams(10, 10, use_folders=False))
    assert set(ignored[300:]) == {"train", "val", "test"}


def test_split_params_are_validated():
    with pytest.raises(UsageError, match=r"val_percent \+ test_percent must be less than 100"):
        SplitParams(val_percent=60, test_percent=40)
    with pytest.raises(UsageError, match="val_percent must be at least 0"):
        SplitParams(val_percent=-1)
    with pytest.raises(UsageError, match="test_percent must be less than 100"):
        SplitParams(test_percent=100)


@pytest.mark.parametrize(
    ("params_type", "bad", "message"),
    [
        (HeadParams, {"dropout": 1.0}, "dropout must be less than 1"),
        (HeadParams, {"learning_rate": 0}, "learning_rate must be greater than 0"),
        (HeadParams, {"label_smoothing": -0.1}, "label_smoothing must be at least 0"),
        (HeadParams, {"patience": 0}, "patience must be at least 1"),
        (RetrainParams, {"fine_tune": -1}, "fine_tune must be at least 0"),
        (RetrainParams, {"augment_epochs": 0}, "augment_epochs must be at least 1"),
        (RetrainParams, {"fine_tune_learning_rate": 0}, "fine_tune_learning_rate must be greater than 0"),
        (RetrainParams, {"top_mistakes": -1}, "top_mistakes must be at least 0"),
    ],
)
def test_head_and_retrain_params_are_validated(params_type, bad, message):
    assert HeadParams(dropout=None).dropout_rate == 0.0 and HeadParams(dropout=0.0).dropout == 0.0
    with pytest.raises(UsageError, match=message):
        params_type(**bad)


# -------------------------------------------------------------------------------------------- metrics


def test_metrics_and_confident_mistakes():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [[0.9, 0.1, 0], [0.2, 0.8, 0], [0.1, 0.9, 0], [0.05, 0.95, 0], [0, 0.4, 0.6], [0.7, 0, 0.3]],
        np.float32,
    )
    m = classification_metrics(y_true, probs.argmax(1), ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"]["counts"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["per_class"]["b"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": 0.8, "support": 2}
    assert m["macro_f1"] == pytest.approx(np.mean([0.5, 0.8, 2 / 3]))
    mistakes = confident_mistakes(probs, y_true, [f"{i}.png" for i in range(6)], ["a", "b", "c"], 5)
    assert [(x["path"], x["predicted"]) for x in mistakes] == [("1.png", "b"), ("5.png", "a")]
    assert mistakes[0]["confidence"] == pytest.approx(0.8)


def test_confusion_picture_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails → the Pillow drawing
    path = save_confusion_png(np.array([[5, 1], [0, 7]]), ["cat", "dog"], tmp_path / "cm.png", "t")
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) > 60


# ------------------------------------------------------------------------------- the real round trip


def test_retrain_writes_model_metrics_and_picture(trained):
    _, out, metrics = trained
    assert {p.name for p in out.iterdir()} == {
        "model.keras",
        "labels.txt",
        "metrics.json",
        "confusion_matrix.png",
        ".datacheck-output",  # so that an audit of a folder holding this one never reads it as data
    }
    assert (out / "labels.txt").read_text().split() == ["blue", "green", "red"]
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["dataset"]["images"] == 3 * PER_CLASS and metrics["backbone"]["image_size"] == SIZE
    roles = metrics["dataset"]["roles"]
    assert roles["test"] > 0 and roles["val"] > 0 and sum(roles.values()) == 3 * PER_CLASS
    assert metrics["evaluated_on"] == "test"
    assert metrics["evaluation"]["accuracy"] >= 0.8
    assert set(metrics["evaluation"]["per_class"]) == set(CLASSES)
    assert {"embed", "train_head", "evaluate", "export", "total"} <= set(metrics["timings"])


def test_predict_round_trip_text_and_json(trained):
    data, out, _ = trained
    files = [data / "red" / "red_000.png", data / "blue" / "blue_001.png", data / "green" / "green_002.png"]
    (data.parent / "broken.png").write_bytes(b"not an image")
    runner = CliRunner()
    result = runner.invoke(
        app, ["predict", str(out), *map(str, files), str(data.parent / "broken.png"), "-f", "json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [p["top"][0]["label"] for p in doc["predictions"]] == ["red", "blue", "green"]
    assert all(
        len(p["top"]) == 3 and abs(sum(t["probability"] for t in p["top"]) - 1) < 1e-4
        for p in doc["predictions"]
    )
    assert doc["failures"][0]["path"].endswith("broken.png")
    table = runner.invoke(app, ["predict", str(out), str(data / "green"), "--top-k", "1"])
    assert table.exit_code == 0 and table.stdout.count("green") >= PER_CLASS


def test_export_loads_in_a_fresh_process_and_predicts_the_same(trained, tmp_path):
    from datacheck.images import decode_image
    from datacheck.train.export import load_model
    from datacheck.train.head import predict_proba

    data, out, _ = trained
    files = sorted((data / "red").iterdir())[:4] + sorted((data / "blue").iterdir())[:4]
    pixels = np.stack([decode_image(f.read_bytes(), SIZE).pixels for f in files])
    raw = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])  # 48 px: the model resizes
    np.save(tmp_path / "pixels.npy", pixels)
    np.save(tmp_path / "raw.npy", raw)
    loaded = load_model(out).model
    expected = predict_proba(loaded, pixels)
    # Graph-mode predict may pick other (fused) kernels than the eager call: that gap, measured here on
    # this CPU, is the rounding a fresh process running the same predict can show too.
    graph_gap = float(np.abs(loaded.predict(pixels, verbose=0) - expected).max())
    code = (
        "import sys, numpy as np, keras\n"
        "import datacheck.train.layers  # registers datacheck>ImagePreprocess\n"
        f"m = keras.saving.load_model({str(out / 'model.keras')!r})\n"
        f"np.save(sys.argv[1], m.predict(np.load({str(tmp_path / 'pixels.npy')!r}), verbose=0))\n"
        f"np.save(sys.argv[2], m.predict(np.load({str(tmp_path / 'raw.npy')!r}), verbose=0))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = [sys.executable, "-c", code, str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    eps = float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), expected, atol=2 * graph_gap + 8 * eps)
    from_raw = np.load(tmp_path / "b.npy")  # Lanczos in TF vs Pillow: close, not bit-identical
    gap = float(np.abs(from_raw - expected).max())
    assert gap < 0.1
    # a prediction can only flip where the two top probabilities are closer than twice the gap
    top2 = np.sort(expected, axis=1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] > 2 * gap
    assert decided.sum() >= len(files) // 2
    assert (from_raw.argmax(1) == expected.argmax(1))[decided].all()


def test_predict_refuses_a_folder_without_a_model(tmp_path):
    result = CliRunner().invoke(app, ["predict", str(tmp_path), str(tmp_path)])
    assert result.exit_code == 2 and "not a model folder" in " ".join(result.stderr.split())


def test_retrain_needs_two_classes(tmp_path, model_cache):
    root = tmp_path / "one"
    (root / "only").mkdir(parents=True)
    for i in range(3):
        scene((90, 90, 90), i).save(root / "only" / f"{i}.png")
    result = CliRunner().invoke(
        app, ["retrain", str(root), "--out", str(tmp_path / "m"), *_options(model_cache)]
    )
    assert result.exit_code == 2 and "at least two classes" in " ".join(result.stderr.split())
