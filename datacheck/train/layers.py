"""The custom Keras layers of exported models, registered under ``datacheck>`` so ``model.keras`` loads.

Importing this module imports Keras (and so TensorFlow).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datacheck._native import quiet_native_logs

with quiet_native_logs():  # TensorFlow's native start-up lines stay off the user's terminal
    import keras


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
