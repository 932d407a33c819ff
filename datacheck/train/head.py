"""Retrain a classifier on the cached bottlenecks, export it as one Keras model, predict with it.

The backbone and the cache are the audit's (:func:`datacheck.embed.pipeline.embed_dataset`), so retraining
after an audit embeds nothing: a softmax head (optionally with one hidden layer) trains on bottlenecks held
in memory in seconds. Two slower options work on pixels instead:

* ``augment``: random crop, flip and brightness, which changes every bottleneck, so the cache cannot help
  and every epoch runs the backbone over the training images (TF retrain.py's ``--random_*`` flags).
* ``fine_tune=N``: the last ``N`` backbone blocks train too, forward *and* backward through the network.

The export, ``model.keras``, is one Keras model from RGB images of any size (uint8 or float 0..255) to class
probabilities: :class:`ImagePreprocess` (resize like datacheck's decoder) + backbone + head. It loads in a
fresh process with TensorFlow and datacheck installed: ``datacheck.train.load_model(folder)``, or
``import datacheck.train.head`` (which registers the custom layer) and ``keras.saving.load_model``.

Importing this module imports Keras (and so TensorFlow).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datacheck._native import quiet_native_logs
from datacheck._version import __version__
from datacheck.dataset import IMAGE_EXTENSIONS, ImageRecord, discover
from datacheck.embed.pipeline import Embeddings, ProgressFn, embed_dataset
from datacheck.errors import UsageError
from datacheck.images import ImageDecodeError, decode_image, read_file
from datacheck.outputs import claim, claim_cache, mark
from datacheck.params import EmbedParams, Replaceable
from datacheck.sources import read_record
from datacheck.train.metrics import classification_metrics, confident_mistakes, one_hot, save_confusion_png
from datacheck.train.splits import TEST, TRAIN, VAL, SplitParams, assign_roles

with quiet_native_logs():  # TensorFlow's native start-up lines stay off the user's terminal
    import keras

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.txt"
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"
METRICS_SCHEMA_VERSION = 1

#: Share of the mean feature variance added to every feature's variance before standardising.
_VARIANCE_FLOOR = 0.1

#: Fewest optimiser steps per epoch (small training sets get smaller batches).
_MIN_STEPS = 8

#: Images per backbone pass when pixels go through the network (augmentation, fine-tuning, prediction).
_PIXEL_BATCH = 64


# ------------------------------------------------------------------------------------------- parameters


@dataclass(frozen=True, slots=True)
class HeadParams(Replaceable):
    """The classifier trained on the bottlenecks.

    Attributes:
        power_norm: Take the signed square root of each bottleneck feature before standardising (tames the
            heavy tail of post-ReLU features; +1 point on CIFAR-10, docs/benchmarks.md).
        hidden: Units of an optional ReLU hidden layer; 0 trains a plain softmax layer.
        dropout: Dropout rate before each dense layer (on the standardised bottleneck and on the hidden
            layer's output); ``None``: 0.5 with a hidden layer, none without (see :attr:`dropout_rate`).
        l2: L2 weight penalty of the dense layers.
        learning_rate: Adam learning rate.
        batch_size: Bottlenecks per step (smaller for small training sets, so that an epoch has at least 8
            steps).
        max_epochs: Upper bound on epochs; early stopping usually ends sooner.
        patience: Epochs without a lower validation loss before training stops (best weights restored).
        min_delta: Smallest drop of the validation loss that counts as lower (on easy data the loss creeps
            down by 1e-4 an epoch for a hundred epochs without changing a single prediction).
        class_weights: Weight each class by ``N / (classes × its count)`` to counter imbalance.
        label_smoothing: Cross-entropy label smoothing.
        seed: Seeds weight initialisation, dropout and shuffling.
    """

    power_norm: bool = True
    hidden: int = 0
    dropout: float | None = None
    l2: float = 1e-3
    learning_rate: float = 1e-3
    batch_size: int = 256
    max_epochs: int = 100
    patience: int = 5
    min_delta: float = 1e-3
    class_weights: bool = False
    label_smoothing: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "hidden": self.hidden >= 0,
            "dropout": self.dropout is None or 0.0 <= self.dropout < 1.0,
            "l2": self.l2 >= 0.0,
            "learning_rate": self.learning_rate > 0.0,
            "batch_size": self.batch_size >= 1,
            "max_epochs": self.max_epochs >= 1,
            "patience": self.patience >= 1,
            "min_delta": self.min_delta >= 0.0,
            "label_smoothing": 0.0 <= self.label_smoothing < 1.0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise UsageError(f"invalid head parameter {bad[0]}={getattr(self, bad[0])!r}")

    @property
    def dropout_rate(self) -> float:
        """The dropout rate in effect: ``dropout``, or by default 0.5 with a hidden layer and 0 without."""
        if self.dropout is not None:
            return self.dropout
        return 0.5 if self.hidden else 0.0


@dataclass(frozen=True)
class RetrainParams:
    """Everything ``retrain`` needs besides the dataset and the output folder.

    Attributes:
        embed: Backbone, image size and cache (the audit's defaults).
        split: Train / validation / test roles.
        head: The classifier on the bottlenecks.
        augment: Random crop/flip/brightness; bypasses the cache (a backbone pass per epoch).
        augment_epochs: Most augmented epochs, after the head has converged on the cached bottlenecks.
        fine_tune: Number of final backbone blocks to train too (0: backbone frozen). Slow on a CPU.
        fine_tune_epochs: Most fine-tuning epochs.
        fine_tune_learning_rate: Adam learning rate while fine-tuning.
        flip: Also train on the mirror image of every training image (its bottleneck is embedded once and
            cached) and predict with the average of an image and its mirror; the export does the same.
        top_mistakes: Confidently misclassified test images listed in the metrics.
    """

    embed: EmbedParams = field(default_factory=EmbedParams)
    split: SplitParams = field(default_factory=SplitParams)
    head: HeadParams = field(default_factory=HeadParams)
    augment: bool = False
    augment_epochs: int = 10
    fine_tune: int = 0
    fine_tune_epochs: int = 3
    fine_tune_learning_rate: float = 1e-4
    flip: bool = False
    top_mistakes: int = 20

    def __post_init__(self) -> None:
        if (
            self.fine_tune < 0
            or self.augment_epochs < 1
            or self.fine_tune_epochs < 1
            or self.top_mistakes < 0
        ):
            raise UsageError("fine_tune and top_mistakes must be >= 0, augment/fine-tune epochs >= 1")
        if self.fine_tune_learning_rate <= 0:
            raise UsageError("fine_tune_learning_rate must be positive")


# ----------------------------------------------------------------------------------------- custom layer


@keras.saving.register_keras_serializable(package="datacheck")
class ImagePreprocess(keras.layers.Layer):
    """RGB images of any size (uint8 or float 0..255) → the square model input the backbone was trained on.

    Resizes (squashing, no crop) with an antialiased Lanczos-3 filter and rounds to whole grey levels, as
    :func:`datacheck.images.decode_image` does with Pillow; an input already ``image_size`` square passes
    through unchanged.
    """

    def __init__(self, image_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image_size = int(image_size)

    def call(self, images: Any) -> Any:
        """Resize a batch ``[N, H, W, 3]`` to ``float32[N, S, S, 3]`` in 0..255."""
        x = keras.ops.cast(images, "float32")
        size = (self.image_size, self.image_size)
        x = keras.ops.image.resize(x, size, interpolation="lanczos3", antialias=True)
        return keras.ops.clip(keras.ops.round(x), 0.0, 255.0)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """``(N, S, S, channels)``."""
        return (input_shape[0], self.image_size, self.image_size, input_shape[-1])

    def get_config(self) -> dict:
        """Serialisable configuration."""
        return {**super().get_config(), "image_size": self.image_size}


@keras.saving.register_keras_serializable(package="datacheck")
class SignedSqrt(keras.layers.Layer):
    """``sign(x) · sqrt(|x|)`` per feature: power normalisation of bottleneck vectors."""

    def call(self, x: Any) -> Any:
        """Apply element-wise."""
        return keras.ops.sign(x) * keras.ops.sqrt(keras.ops.abs(x))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """Unchanged."""
        return input_shape


def signed_sqrt(x: np.ndarray) -> np.ndarray:
    """The numpy twin of :class:`SignedSqrt` (for the standardisation statistics)."""
    return np.sign(x) * np.sqrt(np.abs(x))


@keras.saving.register_keras_serializable(package="datacheck")
class Mirror(keras.layers.Layer):
    """Horizontal mirror image of a batch ``[N, H, W, C]``."""

    def call(self, images: Any) -> Any:
        """Flip along the width axis."""
        return keras.ops.flip(images, axis=2)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """Unchanged."""
        return input_shape


# ------------------------------------------------------------------------------------------ head model


@dataclass(frozen=True)
class TrainedHead:
    """A head fitted on bottlenecks.

    Attributes:
        model: Keras model ``float32[N, D]`` bottlenecks → ``float32[N, C]`` probabilities.
        epochs: Epochs run (including those after the best one, before early stopping).
        best_epoch: 1-based epoch whose weights were kept.
        history: Per-epoch ``loss``, ``accuracy`` and (with validation data) ``val_loss``, ``val_accuracy``.
        seconds: Wall-clock training time.
    """

    model: keras.Model
    epochs: int
    best_epoch: int
    history: dict[str, list[float]]
    seconds: float


def build_head(
    dim: int, n_classes: int, params: HeadParams, mean: np.ndarray, variance: np.ndarray
) -> keras.Model:
    """The head: [signed sqrt] → standardise → dropout → [dense ReLU → dropout] → dense softmax.

    Args:
        dim: Bottleneck dimension.
        n_classes: Output classes.
        params: Architecture and regularisation.
        mean: Per-feature mean of the (power-normalised) training bottlenecks, stored in the model.
        variance: Their per-feature variance.
    """
    reg = keras.regularizers.L2(params.l2) if params.l2 else None
    inputs = keras.Input((dim,), name="bottleneck")
    x = SignedSqrt(name="signed_sqrt")(inputs) if params.power_norm else inputs
    x = keras.layers.Normalization(mean=mean, variance=variance, name="standardise")(x)
    dropout = params.dropout_rate
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout_in")(x)
    if params.hidden:
        x = keras.layers.Dense(params.hidden, activation="relu", kernel_regularizer=reg, name="hidden")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="dropout_hidden")(x)
    outputs = keras.layers.Dense(
        n_classes, activation="softmax", kernel_regularizer=reg, name="probabilities"
    )(x)
    return keras.Model(inputs, outputs, name="head")


def effective_batch_size(n: int, batch_size: int) -> int:
    """``batch_size``, made smaller for small training sets so an epoch has at least :data:`_MIN_STEPS` steps.

    Early stopping counts epochs; with one step per epoch a tiny dataset would stop after a few updates.
    """
    return max(1, min(batch_size, -(-n // _MIN_STEPS)))


def _shrunk_variance(features: np.ndarray) -> np.ndarray:
    """Per-feature variance plus a tenth of the mean variance.

    Features that hardly vary in a small training set would otherwise be divided by almost zero, and any
    image where they do vary would get huge inputs (seen with 55 training images: validation loss 10^4).
    """
    var = features.var(axis=0)
    return var + _VARIANCE_FLOOR * float(var.mean())


def balanced_class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """``N / (present classes × count)`` per class present in ``y`` (absent classes get 1)."""
    counts = np.bincount(y, minlength=n_classes)
    present = int((counts > 0).sum())
    return {k: (len(y) / (present * c) if c else 1.0) for k, c in enumerate(counts.tolist())}


def _compile(
    model: keras.Model, learning_rate: float, label_smoothing: float, steps_per_execution: int = 1
) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )


def _history(fit_history: Any) -> dict[str, list[float]]:
    return {k: [float(v) for v in values] for k, values in fit_history.history.items()}


def train_head(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    params: HeadParams,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> TrainedHead:
    """Fit a head on in-memory bottlenecks, early-stopping on the validation loss.

    Args:
        x: ``float32[N, D]`` training bottlenecks.
        y: ``int[N]`` class indices.
        n_classes: Output classes (classes without training images are simply never learned).
        params: Head parameters (the seed makes runs repeatable).
        validation: ``(x_val, y_val)``; without it the head trains ``max_epochs`` epochs.

    Returns:
        The trained head with its best validation-loss weights.
    """
    start = time.perf_counter()
    keras.utils.set_random_seed(params.seed)
    x = np.asarray(x, np.float32)
    features = signed_sqrt(x) if params.power_norm else x
    model = build_head(x.shape[1], n_classes, params, features.mean(axis=0), _shrunk_variance(features))
    # Several steps per tf.function call: on a few hundred bottlenecks Keras' per-step overhead dominates.
    _compile(model, params.learning_rate, params.label_smoothing, steps_per_execution=_MIN_STEPS)
    has_val = validation is not None and len(validation[0]) > 0
    callbacks = (
        [
            keras.callbacks.EarlyStopping(
                "val_loss",
                patience=params.patience,
                min_delta=params.min_delta,
                restore_best_weights=True,
            )
        ]
        if has_val
        else []
    )
    fitted = model.fit(
        x,
        one_hot(y, n_classes),
        batch_size=effective_batch_size(len(x), params.batch_size),
        epochs=params.max_epochs,
        validation_data=(np.asarray(validation[0], np.float32), one_hot(validation[1], n_classes))
        if has_val
        else None,
        class_weight=balanced_class_weights(y, n_classes) if params.class_weights else None,
        callbacks=callbacks,
        shuffle=True,
        verbose=0,
    )
    history = _history(fitted)
    epochs = len(history["loss"])
    best = int(np.argmin(history["val_loss"])) + 1 if has_val else epochs
    seconds = time.perf_counter() - start
    logger.info("head: %d epochs (best %d) on %d bottlenecks in %.1f s", epochs, best, len(x), seconds)
    return TrainedHead(model, epochs, best, history, seconds)


def predict_proba(model: keras.Model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Class probabilities of a model for in-memory inputs, in inference mode.

    Calls the model directly batch by batch rather than ``model.predict``, which traces a new
    ``tf.function`` for every new model (and warns about retracing when ``compare`` trains many heads).
    """
    if len(x) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    parts = [
        np.asarray(model(np.asarray(x[s], np.float32), training=False)) for s in _batches(len(x), batch_size)
    ]
    return np.concatenate(parts)


# ---------------------------------------------------------------------------------------- pixel paths


def decode_pixels(records: Sequence[ImageRecord], image_size: int, workers: int = 2) -> np.ndarray:
    """Decode images to ``uint8[N, S, S, 3]`` exactly as the embedding pipeline does.

    Raises:
        ImageDecodeError: An image cannot be decoded (the pipeline already left such files out).
    """

    def one(record: ImageRecord) -> np.ndarray:
        return decode_image(read_record(record), image_size, name=record.path).pixels

    out = np.empty((len(records), image_size, image_size, 3), np.uint8)
    with ThreadPoolExecutor(workers) as pool:
        for i, pixels in enumerate(pool.map(one, records)):
            out[i] = pixels
    return out


def distort(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random crop (80–100 % of the side, resized back), horizontal flip and brightness (×0.8–1.2).

    Args:
        pixels: ``uint8[N, S, S, 3]``.
        rng: Source of randomness.

    Returns:
        ``float32[N, S, S, 3]`` in 0..255.
    """
    import tensorflow as tf

    n, size = len(pixels), pixels.shape[1]
    scale = rng.uniform(0.8, 1.0, n)
    y0, x0 = rng.uniform(0.0, 1.0 - scale), rng.uniform(0.0, 1.0 - scale)
    boxes = np.stack([y0, x0, y0 + scale, x0 + scale], axis=1).astype(np.float32)
    out = tf.image.crop_and_resize(
        pixels.astype(np.float32), boxes, np.arange(n, dtype=np.int32), (size, size)
    )
    out = np.asarray(out)
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    out *= rng.uniform(0.8, 1.2, n).astype(np.float32)[:, None, None, None]
    return np.clip(out, 0.0, 255.0)


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _augmented_bottlenecks(backend: Callable, pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    parts = [backend(distort(pixels[s], rng))[0] for s in _batches(len(pixels), _PIXEL_BATCH)]
    return np.concatenate(parts).astype(np.float32)


def continue_with_augmentation(
    trained: TrainedHead,
    backend: Callable,
    pixels: np.ndarray,
    y: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray],
    params: HeadParams,
    epochs: int,
) -> TrainedHead:
    """Keep training a head on freshly distorted images, one backbone pass per epoch.

    The head starts from its cached-bottleneck optimum; an epoch is kept only when it lowers the validation
    loss (measured on the clean cached bottlenecks), with the head's patience.
    """
    start = time.perf_counter()
    model, n_classes = trained.model, trained.model.output_shape[-1]
    rng = np.random.default_rng(params.seed)
    x_val, y_val = np.asarray(validation[0], np.float32), one_hot(validation[1], n_classes)
    best_loss = float(model.evaluate(x_val, y_val, verbose=0)[0]) if len(x_val) else np.inf
    best_weights, best_epoch, waited = model.get_weights(), 0, 0
    history: dict[str, list[float]] = {"val_loss": []}
    weights = balanced_class_weights(y, n_classes) if params.class_weights else None
    for epoch in range(1, epochs + 1):
        x_aug = _augmented_bottlenecks(backend, pixels, rng)
        model.fit(
            x_aug,
            one_hot(y, n_classes),
            batch_size=effective_batch_size(len(x_aug), params.batch_size),
            class_weight=weights,
            verbose=0,
        )
        loss = float(model.evaluate(x_val, y_val, verbose=0)[0]) if len(x_val) else -float(epoch)
        history["val_loss"].append(loss)
        logger.info(
            "augment epoch %d: val loss %.4f (%.0f s so far)", epoch, loss, time.perf_counter() - start
        )
        if loss < best_loss:
            best_loss, best_weights, best_epoch, waited = loss, model.get_weights(), epoch, 0
        else:
            waited += 1
            if waited >= params.patience:
                break
    model.set_weights(best_weights)
    seconds = time.perf_counter() - start
    return TrainedHead(
        model,
        trained.epochs + len(history["val_loss"]),
        trained.best_epoch + best_epoch,
        {**trained.history, "augment_val_loss": history["val_loss"]},
        trained.seconds + seconds,
    )


# -------------------------------------------------------------------------------------------- backbone


def feature_extractor(name: str, image_size: int, *, weights: Path | None, fresh: bool) -> keras.Model:
    """The backbone as a Keras model ``float32[N, S, S, 3]`` RGB 0..255 → ``float32[N, D]`` bottlenecks.

    Args:
        name: Backbone name.
        image_size: Input size.
        weights: Optional weights file.
        fresh: Build a private copy (needed when it will be trained); otherwise share the process-wide
            model the embedding fallback uses.
    """
    from datacheck.embed.backbones import build_backbone
    from datacheck.embed.runtime import keras_backbone

    built = (
        build_backbone(name, image_size, weights=weights)
        if fresh
        else keras_backbone(name, image_size, weights=weights)
    )
    return keras.Model(built.model.inputs, built.model.outputs[0], name="backbone")


def _block_of(layer_name: str) -> str | None:
    """The EfficientNet-Lite0 block a layer belongs to (``block7``, ``head``), or ``None`` (stem etc.)."""
    prefix = layer_name.split("_", 1)[0]
    return prefix if prefix.startswith("block") or prefix == "head" else None


def unfreeze_last_blocks(extractor: keras.Model, n_blocks: int) -> list[str]:
    """Make the last ``n_blocks`` blocks trainable (BatchNorm layers stay frozen); return their names.

    Raises:
        UsageError: The backbone has no recognisable blocks (only the bundled Lite0 is supported).
    """
    order: list[str] = []
    for layer in extractor.layers:
        block = _block_of(layer.name)
        if block is not None and block not in order:
            order.append(block)
    if not order:
        raise UsageError("--fine-tune supports the bundled efficientnet-lite0 backbone only")
    chosen = set(order[-n_blocks:])
    extractor.trainable = True
    for layer in extractor.layers:
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = _block_of(layer.name) in chosen and not is_bn
    return [b for b in order if b in chosen]


def fine_tune(
    extractor: keras.Model,
    head: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    params: RetrainParams,
) -> keras.Model:
    """Train the last ``params.fine_tune`` backbone blocks together with the head, on pixels.

    Args:
        extractor: A private backbone (see :func:`feature_extractor` with ``fresh=True``); modified in place.
        head: The trained head; modified in place.
        train: ``(uint8[N, S, S, 3] pixels, int[N] labels)``.
        validation: The same for early stopping.
        params: Epochs, learning rate, augmentation, head settings.

    Returns:
        The combined model pixels → probabilities (sharing ``extractor`` and ``head``).
    """
    blocks = unfreeze_last_blocks(extractor, params.fine_tune)
    logger.warning(
        "fine-tuning %s with the head: each step runs forward and backward through the network (slow on CPU)",
        ", ".join(blocks),
    )
    size = extractor.input_shape[1]
    inputs = keras.Input((size, size, 3), name="pixels")
    model = keras.Model(inputs, head(extractor(inputs)), name="fine_tuned")
    _compile(model, params.fine_tune_learning_rate, params.head.label_smoothing)
    n_classes = head.output_shape[-1]
    x_train, y_train = train
    data = _FineTuneData(
        x_train,
        one_hot(y_train, n_classes),
        params.head.batch_size // 4 or 1,
        params.augment,
        params.head.seed,
    )
    has_val = len(validation[0]) > 0
    model.fit(
        data,
        epochs=params.fine_tune_epochs,
        validation_data=(validation[0].astype(np.float32), one_hot(validation[1], n_classes))
        if has_val
        else None,
        callbacks=[keras.callbacks.EarlyStopping("val_loss", patience=1, restore_best_weights=True)]
        if has_val
        else [],
        class_weight=balanced_class_weights(y_train, n_classes) if params.head.class_weights else None,
        verbose=0,
    )
    return model


class _FineTuneData(keras.utils.PyDataset):
    """Shuffled batches of pixels (distorted when augmenting) for fine-tuning."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, augment: bool, seed: int) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.augment = x, y, batch_size, augment
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        x = self.x[rows]
        return (distort(x, self.rng) if self.augment else x.astype(np.float32)), self.y[rows]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.x))


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
    probs = predict_proba(loaded.model, np.stack(pixels) if pixels else np.zeros((0, 1, 1, 3)), _PIXEL_BATCH)
    k = min(top_k, len(loaded.labels))
    predictions = []
    for path, row in zip(kept, probs, strict=True):
        order = np.argsort(-row, kind="stable")[:k]
        predictions.append(Prediction(path, tuple((loaded.labels[i], float(row[i])) for i in order)))
    return PredictResult(tuple(predictions), tuple(failures), loaded.labels)


# ---------------------------------------------------------------------------------------------- retrain


@dataclass(frozen=True)
class LabelledBottlenecks:
    """The embedded dataset with roles and class indices.

    Attributes:
        embeddings: From the pipeline (cache).
        roles: ``"train"``/``"val"``/``"test"`` per row.
        labels: Class index per row.
        class_names: Sorted class names.
        mirrored: Bottlenecks of the mirror images, row-aligned (only with ``flip``).
    """

    embeddings: Embeddings
    roles: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    mirrored: np.ndarray | None = None

    def rows(self, role: str) -> np.ndarray:
        """Row numbers with ``role``."""
        return np.flatnonzero(self.roles == role)

    def xy(self, role: str) -> tuple[np.ndarray, np.ndarray]:
        """Bottlenecks and labels of the rows with ``role``."""
        rows = self.rows(role)
        return self.embeddings.vectors[rows], self.labels[rows]

    def xy_both(self, role: str) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`xy`, followed by the mirror images' bottlenecks when there are any."""
        x, y = self.xy(role)
        if self.mirrored is None:
            return x, y
        return np.concatenate([x, self.mirrored[self.rows(role)]]), np.concatenate([y, y])

    def proba(self, model: keras.Model, role: str) -> np.ndarray:
        """A head's probabilities for the rows with ``role``, averaged with their mirror images' if any."""
        probs = predict_proba(model, self.xy(role)[0])
        if self.mirrored is not None:
            probs = (probs + predict_proba(model, self.mirrored[self.rows(role)])) / 2.0
        return probs

    def paths(self, role: str) -> list[str]:
        """Dataset-relative paths of the rows with ``role``."""
        return [self.embeddings.records[i].path for i in self.rows(role)]

    def records_of(self, role: str) -> list[ImageRecord]:
        """Paths to open for the rows with ``role``."""
        return [self.embeddings.records[i] for i in self.rows(role)]


def label_bottlenecks(
    embeddings: Embeddings, split: SplitParams, class_names: Sequence[str] | None = None
) -> LabelledBottlenecks:
    """Attach roles and class indices to embeddings.

    Args:
        embeddings: The embedded dataset.
        split: How roles are assigned.
        class_names: The class list to index into (default: the dataset's sorted classes).

    Raises:
        UsageError: Fewer than two classes, or no training images.
    """
    names = (
        tuple(class_names)
        if class_names is not None
        else tuple(sorted({r.label for r in embeddings.records}))
    )
    lookup = {n: i for i, n in enumerate(names)}
    labels = np.array([lookup.get(r.label, -1) for r in embeddings.records], dtype=np.int64)
    roles = assign_roles(embeddings.records, split)
    if len(names) < 2:
        raise UsageError(f"retraining needs at least two classes; found {len(names)}")
    if not (roles == TRAIN).any():
        raise UsageError("no training images: every image fell in the validation or test role")
    return LabelledBottlenecks(embeddings, roles, labels, names)


@dataclass(frozen=True)
class RetrainResult:
    """What :func:`retrain` produced.

    Attributes:
        out: The output folder.
        files: Written files by kind (``model``, ``labels``, ``metrics``, ``confusion``).
        metrics: Everything in ``metrics.json``.
    """

    out: Path
    files: dict[str, Path]
    metrics: dict

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per stage."""
        return self.metrics["timings"]


@dataclass
class _Clock:
    timings: dict[str, float] = field(default_factory=dict)

    def lap(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - start
        return now


def _backend_for(embeddings: Embeddings, params: EmbedParams) -> Callable:
    from datacheck.embed.cache import Cache, default_cache_dir
    from datacheck.embed.runtime import load_backend

    with Cache(params.cache_dir or default_cache_dir()) as cache:
        artifacts = cache.artifact_path("")
    return load_backend(
        params.model,
        embeddings.image_size,
        weights=params.weights,
        runtime=params.runtime,
        artifact_dir=artifacts,
        batch_size=params.batch_size,
    )


def _train(
    data: LabelledBottlenecks, params: RetrainParams, clock: _Clock
) -> tuple[TrainedHead, keras.Model | None]:
    """Head on cached bottlenecks, then the optional augmented epochs and fine-tuning."""
    start = time.perf_counter()
    n_classes = len(data.class_names)
    y_train = data.xy(TRAIN)[1]
    validation = data.xy(VAL)
    trained = train_head(*data.xy_both(TRAIN), n_classes, params.head, data.xy_both(VAL))
    start = clock.lap("train_head", start)
    pixels = None
    if params.augment or params.fine_tune:
        pixels = decode_pixels(
            data.records_of(TRAIN), data.embeddings.image_size, params.embed.decode_workers
        )
        start = clock.lap("decode_pixels", start)
    if params.augment:
        logger.warning(
            "augmenting: every epoch runs the backbone over %d training images (the cache cannot help)",
            len(pixels),
        )
        backend = _backend_for(data.embeddings, params.embed)
        trained = continue_with_augmentation(
            trained, backend, pixels, y_train, validation, params.head, params.augment_epochs
        )
        start = clock.lap("train_augmented", start)
    if not params.fine_tune:
        return trained, None
    extractor = feature_extractor(
        params.embed.model, data.embeddings.image_size, weights=params.embed.weights, fresh=True
    )
    val_pixels = decode_pixels(data.records_of(VAL), data.embeddings.image_size, params.embed.decode_workers)
    fine_tune(extractor, trained.model, (pixels, y_train), (val_pixels, validation[1]), params)
    clock.lap("fine_tune", start)
    return trained, extractor


def _evaluate(
    data: LabelledBottlenecks, trained: TrainedHead, extractor: keras.Model | None, params: RetrainParams
) -> tuple[str, dict]:
    """Metrics on the test role (the validation role when there is no test image)."""
    role = TEST if (data.roles == TEST).any() else VAL
    if not (data.roles == role).any():
        role = TRAIN
    if role != TEST:
        logger.warning("no test images: metrics are on the %s images, which are not held out", role)
    if extractor is None:
        probs = data.proba(trained.model, role)
    else:
        pixels = decode_pixels(data.records_of(role), data.embeddings.image_size, params.embed.decode_workers)
        model = export_model(extractor, trained.model, data.embeddings.image_size, mirror=params.flip)
        probs = predict_proba(model, pixels, _PIXEL_BATCH)
    y = data.xy(role)[1]
    metrics = classification_metrics(y, probs.argmax(axis=1), data.class_names)
    metrics["mistakes"] = confident_mistakes(
        probs, y, data.paths(role), data.class_names, params.top_mistakes
    )
    return role, metrics


def _params_dict(params: RetrainParams) -> dict:
    raw = dataclasses.asdict(params)
    return json.loads(json.dumps(raw, default=str))


def _write_outputs(
    out: Path,
    model: keras.Model,
    data: LabelledBottlenecks,
    metrics: dict,
) -> dict[str, Path]:
    mark(out, "model")
    files = {
        "model": out / MODEL_FILE,
        "labels": out / LABELS_FILE,
        "metrics": out / METRICS_FILE,
        "confusion": out / CONFUSION_FILE,
    }
    model.save(files["model"])
    files["labels"].write_text("".join(f"{name}\n" for name in data.class_names), encoding="utf-8")
    cm = metrics["evaluation"]["confusion_matrix"]
    title = f"{metrics['evaluated_on']} images: accuracy {metrics['evaluation']['accuracy']:.1%}"
    save_confusion_png(np.array(cm["counts"]), cm["labels"], files["confusion"], title)
    files["metrics"].write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return files


def _summary(
    data: LabelledBottlenecks, trained: TrainedHead, role: str, evaluation: dict, params: RetrainParams
) -> dict:
    emb = data.embeddings
    roles = Counter(data.roles.tolist())
    return {
        "schema_version": METRICS_SCHEMA_VERSION,
        "datacheck_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "dataset": {
            "root": str(emb.records[0].abs_path.parents[0]) if emb.records else "",
            "images": len(emb.records),
            "classes": list(data.class_names),
            "roles": {r: roles.get(r, 0) for r in (TRAIN, VAL, TEST)},
            "unreadable": len(emb.failures),
        },
        "backbone": {
            "model": emb.model_id,
            "image_size": emb.image_size,
            "dim": emb.dim,
            "cached": emb.cached,
            "computed": emb.computed,
        },
        "params": _params_dict(params),
        "training": {
            "epochs": trained.epochs,
            "best_epoch": trained.best_epoch,
            "final_val_accuracy": trained.history.get("val_accuracy", [None])[trained.best_epoch - 1]
            if "val_accuracy" in trained.history
            and trained.best_epoch <= len(trained.history["val_accuracy"])
            else None,
        },
        "evaluated_on": role,
        "evaluation": {k: v for k, v in evaluation.items() if k != "mistakes"},
        "mistakes": evaluation["mistakes"],
    }


def retrain(
    path: Path | str,
    out: Path | str,
    params: RetrainParams | None = None,
    *,
    manifest: Path | None = None,
    progress: ProgressFn | None = None,
) -> RetrainResult:
    """Train a classifier on a dataset's bottlenecks and export it with its metrics.

    Args:
        path: Dataset folder (or CSV manifest).
        out: Output folder for ``model.keras``, ``labels.txt``, ``metrics.json``, ``confusion_matrix.png``.
        params: Everything tunable; defaults from :class:`RetrainParams`.
        manifest: CSV manifest with ``path,label[,split]``.
        progress: Embedding progress callback ``(stage, done, total)``.

    Returns:
        The written files and the metrics (also in ``metrics.json``), with seconds per stage.
    """
    params = params or RetrainParams()
    clock = _Clock()
    start = time.perf_counter()
    claim(Path(out), "model", Path(path))
    claim_cache(params.embed.cache_dir, Path(path))
    dataset = discover(Path(path), manifest=manifest)
    embeddings = embed_dataset(dataset, params.embed, progress=progress)
    clock.timings.update({f"embed_{k}": v for k, v in embeddings.timings.items() if k != "total"})
    start = clock.lap("embed", start)
    data = label_bottlenecks(embeddings, params.split)
    if params.flip:
        from datacheck.train.flip import mirrored_vectors

        start = time.perf_counter()
        data = dataclasses.replace(
            data, mirrored=mirrored_vectors(embeddings, params.embed, progress=progress)
        )
        clock.lap("mirror", start)
    trained, extractor = _train(data, params, clock)
    start = time.perf_counter()
    role, evaluation = _evaluate(data, trained, extractor, params)
    start = clock.lap("evaluate", start)
    if extractor is None:
        extractor = feature_extractor(
            params.embed.model, embeddings.image_size, weights=params.embed.weights, fresh=False
        )
    model = export_model(extractor, trained.model, embeddings.image_size, mirror=params.flip)
    metrics = _summary(data, trained, role, evaluation, params)
    metrics["dataset"]["root"] = str(dataset.root)
    metrics["timings"] = clock.timings
    files = _write_outputs(Path(out), model, data, metrics)
    clock.lap("export", start)
    metrics["timings"]["total"] = sum(v for k, v in clock.timings.items() if not k.startswith("embed_"))
    files["metrics"].write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info("retrain: %s accuracy %.4f; wrote %s", role, evaluation["accuracy"], out)
    return RetrainResult(Path(out), files, metrics)
