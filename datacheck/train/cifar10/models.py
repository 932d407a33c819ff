"""The CIFAR-10 networks and their training recipes.

* ``resnet9``: the residual network of the DAWNBench CIFAR-10 records (David Page, "How to train your
  ResNet", 2018; the ancestor of airbench): conv-BN-ReLU blocks 64-128-256-512 with two residual blocks,
  global max pooling and a linear classifier scaled by 1/8. Trained with SGD + Nesterov momentum, a
  piecewise-linear one-cycle learning rate, label smoothing 0.2 and L2 weight decay 5e-4, it reaches about
  94 % test accuracy in 24 epochs.
* ``small``: a plain CNN in the spirit of TF's classic CIFAR-10 tutorial — three convolution/max-pool
  stages and two fully-connected layers, ReLU, no batch norm — that a CPU trains to a useful accuracy in
  minutes. Having no batch norm it is also the model whose multi-replica step equals the single-replica
  step exactly, which the synchronous-update tests rely on.

Both take ``float[B, 32, 32, 3]`` pixels in 0…255 (normalisation is the first layer) and return float32
logits, also under a mixed-precision policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

#: Per-channel mean and standard deviation of the CIFAR-10 training images (0…1 scale).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class Recipe:
    """How a model is trained; the defaults of the ``None`` fields of :class:`TrainParams`.

    Attributes:
        batch_size: Images per replica per step, and the global batch ``lr`` is tuned for.
        epochs: Passes over the training set.
        lr: Peak learning rate at ``batch_size`` (scaled linearly with the global batch).
        warmup: Fraction of the training steps over which the LR rises linearly from 0 to the peak; it then
            falls linearly to 0 at the last step.
        momentum: SGD momentum (Nesterov).
        weight_decay: L2 penalty ``weight_decay / 2 · ‖w‖²`` on convolution and dense kernels (coupled,
            like PyTorch SGD's ``weight_decay``).
        label_smoothing: Cross-entropy label smoothing.
    """

    batch_size: int
    epochs: int
    lr: float
    warmup: float
    momentum: float
    weight_decay: float
    label_smoothing: float


RECIPES: dict[str, Recipe] = {
    "resnet9": Recipe(
        batch_size=512, epochs=24, lr=0.4, warmup=5 / 24, momentum=0.9, weight_decay=5e-4, label_smoothing=0.2
    ),
    "small": Recipe(
        batch_size=128, epochs=10, lr=0.05, warmup=0.15, momentum=0.9, weight_decay=5e-4, label_smoothing=0.1
    ),
}


def build_model(name: str, *, num_classes: int = 10, sync_bn: bool = False, seed: int = 0) -> keras.Model:
    """A fresh, built model.

    Args:
        name: ``"resnet9"`` or ``"small"``.
        num_classes: Outputs.
        sync_bn: Batch-norm statistics over the global batch (all replicas) instead of each replica's
            slice; only ``resnet9`` has batch norm.
        seed: Weight-initialisation seed.

    Returns:
        The Keras model (uses the global dtype policy; logits are float32).
    """
    keras.utils.set_random_seed(seed)
    if name == "resnet9":
        return _resnet9(num_classes, sync_bn)
    if name == "small":
        return _small(num_classes)
    raise ValueError(f"unknown model {name!r}")


def _logits_dtype() -> str:
    """float32 logits under every policy (mixed precision included); float64 under a float64 policy.

    Mixed-precision models keep their logits in float32 for a stable softmax; a float64 model (the tests'
    exact-arithmetic reference) must not round its last layers to float32.
    """
    return "float64" if keras.mixed_precision.dtype_policy().compute_dtype == "float64" else "float32"


def kernels(model: keras.Model) -> list:
    """The convolution and dense kernels: the weights the L2 penalty applies to (not biases, not BN)."""
    return [w for w in model.trainable_weights if w.path.endswith("kernel")]


def _normalise() -> keras.layers.Layer:
    mean = [255.0 * m for m in CIFAR10_MEAN]
    var = [(255.0 * s) ** 2 for s in CIFAR10_STD]
    return keras.layers.Normalization(mean=mean, variance=var, name="normalise")


def _conv_bn(x, filters: int, sync_bn: bool, name: str):
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync_bn, name=f"{name}_bn")(
        x
    )
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _residual(x, filters: int, sync_bn: bool, name: str):
    y = _conv_bn(x, filters, sync_bn, f"{name}a")
    y = _conv_bn(y, filters, sync_bn, f"{name}b")
    return keras.layers.Add(name=f"{name}_add")([x, y])


def _resnet9(num_classes: int, sync_bn: bool) -> keras.Model:
    inputs = keras.Input((32, 32, 3), name="pixels")
    x = _normalise()(inputs)
    x = _conv_bn(x, 64, sync_bn, "prep")
    x = _conv_bn(x, 128, sync_bn, "layer1")
    x = keras.layers.MaxPooling2D(name="layer1_pool")(x)
    x = _residual(x, 128, sync_bn, "res1")
    x = _conv_bn(x, 256, sync_bn, "layer2")
    x = keras.layers.MaxPooling2D(name="layer2_pool")(x)
    x = _conv_bn(x, 512, sync_bn, "layer3")
    x = keras.layers.MaxPooling2D(name="layer3_pool")(x)
    x = _residual(x, 512, sync_bn, "res3")
    x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    x = keras.layers.Dense(num_classes, use_bias=False, dtype=_logits_dtype(), name="classifier")(x)
    outputs = keras.layers.Rescaling(0.125, dtype=_logits_dtype(), name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet9")


def _small(num_classes: int) -> keras.Model:
    inputs = keras.Input((32, 32, 3), name="pixels")
    x = _normalise()(inputs)
    for i, filters in enumerate((32, 64, 128), start=1):
        x = keras.layers.Conv2D(
            filters, 3, padding="same", activation="relu", kernel_initializer="he_normal", name=f"conv{i}"
        )(x)
        x = keras.layers.MaxPooling2D(name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(256, activation="relu", kernel_initializer="he_normal", name="fc")(x)
    small_init = keras.initializers.RandomNormal(stddev=0.01)  # start near the uniform prediction
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=small_init, dtype=_logits_dtype(), name="logits"
    )(x)
    return keras.Model(inputs, outputs, name="small")
