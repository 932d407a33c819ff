"""Fine-tuning: the last backbone blocks train with the head, forward and backward through the network."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from datacheck._native import quiet_native_logs
from datacheck.errors import UsageError
from datacheck.train.head import balanced_class_weights, compile_head, distort
from datacheck.train.metrics import one_hot
from datacheck.train.params import RetrainParams

with quiet_native_logs():  # TensorFlow's native start-up lines stay off the user's terminal
    import keras

logger = logging.getLogger(__name__)


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
    compile_head(model, params.fine_tune_learning_rate, params.head.label_smoothing)
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
