"""The classifier head trained on bottlenecks, and the pixel path that augmentation uses.

A softmax head (optionally with one hidden layer) on standardised, power-normalised bottlenecks
(:func:`train_head`), its probabilities (:func:`predict_proba`), and the random crop / flip / brightness
augmentation that runs the backbone on pixels every epoch (:func:`continue_with_augmentation`). The run
around it is :mod:`datacheck.train.retrain`; the export :mod:`datacheck.train.export`; the custom layers
:mod:`datacheck.train.layers` (importing this module registers them).

Importing this module imports Keras (and so TensorFlow).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from datacheck._native import quiet_native_logs
from datacheck.dataset import ImageRecord
from datacheck.images import decode_image
from datacheck.sources import read_record
from datacheck.train.layers import SignedSqrt, signed_sqrt
from datacheck.train.metrics import one_hot
from datacheck.train.params import PIXEL_BATCH, HeadParams

with quiet_native_logs():  # TensorFlow's native start-up lines stay off the user's terminal
    import keras

logger = logging.getLogger(__name__)

#: Share of the mean feature variance added to every feature's variance before standardising.
_VARIANCE_FLOOR = 0.1

#: Fewest optimiser steps per epoch (small training sets get smaller batches).
_MIN_STEPS = 8


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


def compile_head(
    model: keras.Model, learning_rate: float, label_smoothing: float, steps_per_execution: int = 1
) -> None:
    """Compile ``model`` with Adam and label-smoothed cross-entropy (heads and fine-tuned networks alike)."""
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
    compile_head(model, params.learning_rate, params.label_smoothing, steps_per_execution=_MIN_STEPS)
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
    parts = [backend(distort(pixels[s], rng))[0] for s in _batches(len(pixels), PIXEL_BATCH)]
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
