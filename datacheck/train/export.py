"""Export a trained head with its backbone as one ``model.keras``, load it back, predict with it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datacheck._native import quiet_native_logs
from datacheck.dataset import IMAGE_EXTENSIONS
from datacheck.errors import UsageError
from datacheck.images import ImageDecodeError, decode_image, read_file
from datacheck.train.head import predict_proba
from datacheck.train.layers import ImagePreprocess, Mirror
from datacheck.train.params import PIXEL_BATCH

with quiet_native_logs():  # TensorFlow's native start-up lines stay off the user's terminal
    import keras

#: Files of an exported model folder.
MODEL_FILE = "model.keras"
LABELS_FILE = "labels.txt"


# ---------------------------------------------------------------------------------------------- export


def export_model(
    extractor: keras.Model, head: keras.Model, image_size: int, *, mirror: bool = False
) -> keras.Model:
    """One model from RGB images of any size to class probabilities: preprocess + backbone + head.

    With ``mirror`` the output is the mean of the probabilities for the image and its mirror image.
    """
    inputs = keras.Input((None, None, 3), dtype="float32", name="image")
    x = ImagePreprocess(image_size, name="preprocess")(inputs)
    outputs = head(extractor(x))
    if mirror:
        mirrored = head(extractor(Mirror(name="mirror")(x)))
        outputs = keras.layers.Average(name="average_with_mirror")([outputs, mirrored])
    return keras.Model(inputs, outputs, name="datacheck_classifier")


@dataclass(frozen=True)
class LoadedModel:
    """An exported classifier, ready to predict.

    Attributes:
        model: Keras model, images → probabilities.
        labels: Class name of each output.
        image_size: The backbone's input size.
        folder: Where it was loaded from.
    """

    model: keras.Model
    labels: tuple[str, ...]
    image_size: int
    folder: Path


def load_model(folder: Path | str) -> LoadedModel:
    """Load ``model.keras`` and ``labels.txt`` from a folder written by :func:`retrain`.

    Raises:
        UsageError: The folder lacks the files or they do not match.
    """
    folder = Path(folder)
    model_path, labels_path = folder / MODEL_FILE, folder / LABELS_FILE
    if not model_path.is_file() or not labels_path.is_file():
        raise UsageError(
            f"{folder} is not a model folder: expected {MODEL_FILE} and {LABELS_FILE} from datacheck retrain"
        )
    labels = tuple(line for line in labels_path.read_text(encoding="utf-8").splitlines() if line)
    try:
        model = keras.saving.load_model(model_path)
    except Exception as err:  # Keras raises ValueError/TypeError/OSError on damaged or foreign files
        raise UsageError(f"cannot load {model_path}: {err}") from err
    if model.output_shape[-1] != len(labels):
        raise UsageError(
            f"{labels_path} has {len(labels)} labels but the model has {model.output_shape[-1]} outputs"
        )
    image_size = int(model.get_layer("preprocess").image_size)
    return LoadedModel(model, labels, image_size, folder)


# ---------------------------------------------------------------------------------------------- predict


@dataclass(frozen=True)
class Prediction:
    """The top classes for one image.

    Attributes:
        path: The image as given (or found under a given folder).
        top: ``(label, probability)`` pairs, most probable first.
    """

    path: str
    top: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class PredictResult:
    """Predictions, and the files that could not be read (path, reason)."""

    predictions: tuple[Prediction, ...]
    failures: tuple[tuple[str, str], ...]
    labels: tuple[str, ...]

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "predictions": [
                {"path": p.path, "top": [{"label": lab, "probability": prob} for lab, prob in p.top]}
                for p in self.predictions
            ],
            "failures": [{"path": path, "reason": reason} for path, reason in self.failures],
        }


def image_files(inputs: Sequence[Path]) -> list[Path]:
    """Files given directly, plus every image file (by extension) under given folders, sorted per folder."""
    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found.extend(
                sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            )
        else:
            found.append(item)
    return found


def predict(model_dir: Path | str, images: Sequence[Path | str], *, top_k: int = 3) -> PredictResult:
    """Classify image files with an exported model.

    Files are decoded exactly as for training (:func:`datacheck.images.decode_image`: EXIF orientation,
    colour modes, resize) and run through ``model.keras``.

    Args:
        model_dir: A folder written by :func:`retrain`.
        images: Image files or folders (searched recursively).
        top_k: Classes reported per image.

    Returns:
        Predictions in input order, and the files that could not be decoded.
    """
    if top_k < 1:
        raise UsageError(f"top_k must be at least 1, got {top_k}")
    loaded = load_model(model_dir)
    files = image_files([Path(p) for p in images])
    pixels, kept, failures = [], [], []
    for path in files:
        try:
            pixels.append(decode_image(read_file(path), loaded.image_size, name=str(path)).pixels)
            kept.append(str(path))
        except ImageDecodeError as err:
            failures.append((str(path), str(err)))
    probs = predict_proba(loaded.model, np.stack(pixels) if pixels else np.zeros((0, 1, 1, 3)), PIXEL_BATCH)
    k = min(top_k, len(loaded.labels))
    predictions = []
    for path, row in zip(kept, probs, strict=True):
        order = np.argsort(-row, kind="stable")[:k]
        predictions.append(Prediction(path, tuple((loaded.labels[i], float(row[i])) for i in order)))
    return PredictResult(tuple(predictions), tuple(failures), loaded.labels)
