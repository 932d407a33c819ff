"""The fast inference path: LiteRT (TFLite) with XNNPACK, and its Keras ``tf.function`` fallback.

:func:`load_backend` returns a :class:`Backend`, a callable ``uint8[N, S, S, 3] -> (bottleneck float32[N, D],
logits float32[N, 1000] | None)``. Every runtime runs the same network with the preprocessing inside it, so
the input contract is the same for all of them.

* ``"tf"``: the Keras model in a plain ``tf.function`` with a ``None`` batch dimension (no retracing on
  partial batches). XNNPACK-less and without XLA ``jit_compile``, which is much slower on CPU.
* ``"litert"``: the Keras model converted once to a float32 ``.tflite`` flatbuffer (stored under
  ``artifact_dir``, keyed by model id, size, weights and converter version), run by the ``ai-edge-litert``
  interpreter with XNNPACK on all available cores.
* ``"auto"``: LiteRT when it imports, converts and passes a one-time self-check against the Keras reference
  (bottleneck cosine ≥ :data:`SELF_CHECK_MIN_COSINE`); otherwise ``tf``, with a logged warning saying why.
  The self-check result is stored next to the artifact, so later processes with a converted model do not
  need TensorFlow at all.
"""

from __future__ import annotations

import abc
import importlib.metadata
import json
import logging
import os
import queue
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from datacheck._native import quiet_native_logs, tensorflow
from datacheck.embed.backbones import BuiltBackbone, build_backbone, cache_tag, get_backbone, weights_id
from datacheck.fileio import atomic_write_bytes

__all__ = [
    "CONVERTER_VERSION",
    "DEFAULT_BATCH_SIZE",
    "SELF_CHECK_MIN_COSINE",
    "Backend",
    "LiteRTBackend",
    "LiteRTUnavailableError",
    "RuntimeName",
    "TFBackend",
    "convert_to_tflite",
    "keras_backbone",
    "load_backend",
    "min_cosine",
]

logger = logging.getLogger(__name__)

RuntimeName = Literal["auto", "litert", "tf"]
#: Bump when the conversion settings change, so stale ``.tflite`` artifacts are not reused.
CONVERTER_VERSION = "fp32-v1"
DEFAULT_BATCH_SIZE = 64
SELF_CHECK_MIN_COSINE = 0.999
_SELF_CHECK_IMAGES = 4

_KERAS_MODELS: dict[tuple[str, int, str], BuiltBackbone] = {}
_KERAS_LOCK = threading.Lock()


class LiteRTUnavailableError(RuntimeError):
    """LiteRT cannot be used for this model (not importable, conversion failed, or self-check failed)."""


def keras_backbone(name: str, image_size: int, *, weights: Path | None = None) -> BuiltBackbone:
    """Return the Keras model for ``(name, image_size, weights)``, built once per process (lazily)."""
    key = (name, image_size, weights_id(name, weights))
    tensorflow()  # import it quietly before Keras does
    with _KERAS_LOCK:
        if key not in _KERAS_MODELS:
            _KERAS_MODELS[key] = build_backbone(name, image_size, weights=weights)
        return _KERAS_MODELS[key]


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row-wise cosine similarity between two ``[N, D]`` arrays."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    num = (a64 * b64).sum(axis=1)
    den = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return float(np.min(num / np.maximum(den, 1e-30)))


def _check_input(pixels: np.ndarray, image_size: int) -> np.ndarray:
    x = np.asarray(pixels)
    if x.ndim != 4 or x.shape[1:] != (image_size, image_size, 3):
        raise ValueError(f"expected images of shape [N, {image_size}, {image_size}, 3], got {x.shape}")
    if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"expected uint8 or float RGB 0..255 pixels, got dtype {x.dtype}")
    return x


class Backend(abc.ABC):
    """A loaded backbone: ``uint8[N, S, S, 3] -> (bottleneck float32[N, D], logits float32[N, 1000] | None)``.

    Attributes:
        model_id: Backbone name.
        image_size: Square input size.
        dim: Bottleneck dimension ``D``.
        has_logits: Whether logits are produced (otherwise the second element is ``None``).
        runtime: The runtime that actually runs: ``"litert"`` or ``"tf"``.
        cache_tag: Model id + size + preprocessing version (not the runtime).
        batch_size: Images per forward pass; longer inputs are split, shorter ones run as they are.
    """

    runtime: str = ""
    #: Calls that may run at once (from different threads) without waiting for each other.
    replicas: int = 1

    def __init__(
        self, *, model_id: str, image_size: int, dim: int, has_logits: bool, cache_tag: str, batch_size: int
    ) -> None:
        self.model_id = model_id
        self.image_size = image_size
        self.dim = dim
        self.has_logits = has_logits
        self.cache_tag = cache_tag
        self.batch_size = batch_size

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Embed a stack of RGB images (uint8, or float in 0..255).

        Raises:
            ValueError: Wrong shape or dtype.
        """
        x = _check_input(pixels, self.image_size)
        if len(x) == 0:
            empty_logits = np.zeros((0, 1000), np.float32) if self.has_logits else None
            return np.zeros((0, self.dim), np.float32), empty_logits
        parts = [
            self._run(np.ascontiguousarray(x[i : i + self.batch_size], dtype=np.float32))
            for i in range(0, len(x), self.batch_size)
        ]
        bottleneck = np.concatenate([p[0] for p in parts]).astype(np.float32, copy=False)
        if not self.has_logits:
            return bottleneck, None
        return bottleneck, np.concatenate([p[1] for p in parts]).astype(np.float32, copy=False)

    @abc.abstractmethod
    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Run one float32 batch of at most ``batch_size`` images."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cache_tag!r}, runtime={self.runtime!r}, dim={self.dim})"


class TFBackend(Backend):
    """The Keras model in a plain ``tf.function`` (no XLA), with a ``None`` batch dimension."""

    runtime = "tf"

    def __init__(self, built: BuiltBackbone, *, cache_tag: str, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        import tensorflow as tf

        super().__init__(
            model_id=built.spec.name,
            image_size=built.image_size,
            dim=built.spec.dim,
            has_logits=built.has_logits,
            cache_tag=cache_tag,
            batch_size=batch_size,
        )
        model = built.model
        signature = [tf.TensorSpec([None, built.image_size, built.image_size, 3], tf.float32)]
        self._fn: Callable[[Any], Any] = tf.function(
            lambda x: model(x, training=False), input_signature=signature, autograph=False
        )

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = self._fn(batch)
        return np.asarray(outputs[0]), np.asarray(outputs[1]) if self.has_logits else None


class _Interpreter:
    """One LiteRT interpreter with its tensor indices and the batch size its tensors are allocated for."""

    def __init__(self, interpreter_cls: Any, model_content: bytes, threads: int, image_size: int) -> None:
        # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on the first allocation;
        # later re-allocations (other batch sizes, from the pipeline's threads) are silent.
        with quiet_native_logs():
            self.interpreter = interpreter_cls(model_content=model_content, num_threads=threads)
            self.interpreter.allocate_tensors()
        self.input, self.outputs = _signature_indices(self.interpreter)
        self.image_size = image_size
        self.batch = 0

    def output_dims(self) -> list[int]:
        shapes = {d["index"]: d["shape_signature"] for d in self.interpreter.get_output_details()}
        return [int(shapes[i][-1]) for i in self.outputs]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        if len(batch) != self.batch:
            self.interpreter.resize_tensor_input(
                self.input, [len(batch), self.image_size, self.image_size, 3]
            )
            self.interpreter.allocate_tensors()
            self.batch = len(batch)
        self.interpreter.set_tensor(self.input, batch)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(i) for i in self.outputs]


class LiteRTBackend(Backend):
    """A ``.tflite`` model run by the ``ai-edge-litert`` interpreter with XNNPACK (its default delegate).

    ``replicas`` > 1 loads that many interpreters sharing the threads (one single-threaded interpreter
    per core by default when replicas = cores); each call runs on an idle one, so callers that call from
    several threads (the embedding pipeline does) run batches in parallel (``invoke`` releases the GIL).
    While a decoding thread competes for a core this is ~20 % faster than one interpreter using every
    core, which waits at every operator for its slowest thread (docs/benchmarks.md). A single caller
    should keep the default of one interpreter.
    """

    runtime = "litert"

    def __init__(
        self,
        model_content: bytes,
        *,
        model_id: str,
        image_size: int,
        cache_tag: str,
        threads: int | None = None,
        replicas: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        interpreter_cls = _import_interpreter()
        cores = threads or available_cores()
        n_replicas = max(1, min(replicas or 1, cores))
        self._idle: queue.SimpleQueue[_Interpreter] = queue.SimpleQueue()
        for _ in range(n_replicas):
            self._idle.put(
                _Interpreter(interpreter_cls, model_content, max(1, cores // n_replicas), image_size)
            )
        self.replicas = n_replicas
        first = self._idle.get()
        dims = first.output_dims()
        self._idle.put(first)
        super().__init__(
            model_id=model_id,
            image_size=image_size,
            dim=dims[0],
            has_logits=len(dims) > 1,
            cache_tag=cache_tag,
            batch_size=batch_size,
        )

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        interpreter = self._idle.get()  # blocks while every interpreter is busy
        try:
            outs = interpreter.run(batch)
        finally:
            self._idle.put(interpreter)
        return outs[0], outs[1] if self.has_logits else None


def _import_interpreter() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as err:
        raise LiteRTUnavailableError(f"ai-edge-litert is not importable ({err})") from err
    return Interpreter


def _signature_indices(interpreter: Any) -> tuple[int, list[int]]:
    """Input tensor index and output tensor indices in model-output order (``output_0``, ``output_1``)."""
    signatures = interpreter._get_full_signature_list()  # the public runner API pins tensor buffers
    if len(signatures) != 1:
        raise LiteRTUnavailableError(f"expected one signature in the .tflite model, found {len(signatures)}")
    (sig,) = signatures.values()
    if len(sig["inputs"]) != 1 or not 1 <= len(sig["outputs"]) <= 2:
        raise LiteRTUnavailableError("unexpected .tflite signature: " + json.dumps(sig))
    (input_index,) = sig["inputs"].values()
    names = sorted(sig["outputs"], key=lambda n: int(re.sub(r"\D", "", n) or 0))
    return int(input_index), [int(sig["outputs"][n]) for n in names]


def convert_to_tflite(model: Any, *, fp16_weights: bool = False) -> bytes:
    """Convert a Keras model to a ``.tflite`` flatbuffer with a dynamic batch dimension.

    Goes through a temporary SavedModel (``model.export``), the supported path for Keras 3.

    Args:
        model: The Keras model.
        fp16_weights: Store weights as float16 (half the file; computation stays float32).

    Raises:
        LiteRTUnavailableError: Conversion failed.
    """
    import tensorflow as tf

    try:
        with tempfile.TemporaryDirectory(prefix="datacheck-tflite-") as tmp:
            saved = os.path.join(tmp, "saved_model")
            model.export(saved, format="tf_saved_model", verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(saved)
            if fp16_weights:
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.target_spec.supported_types = [tf.float16]
            with quiet_native_logs():  # the converter's MLIR and delegate lines
                return bytes(converter.convert())
    except Exception as err:  # the converter raises many types (ConverterError, ValueError, ...)
        raise LiteRTUnavailableError(f"TFLite conversion failed: {type(err).__name__}: {err}") from err


def _artifact_path(
    artifact_dir: Path | None, name: str, image_size: int, weights: Path | None
) -> Path | None:
    if artifact_dir is None:
        return None
    tf_version = importlib.metadata.version("tensorflow")
    stem = f"{name}-{image_size}-{weights_id(name, weights)}-tf{tf_version}-{CONVERTER_VERSION}"
    return Path(artifact_dir) / (re.sub(r"[^A-Za-z0-9._-]", "_", stem) + ".tflite")


def _store(path: Path, data: bytes) -> None:
    """Write a derived file; failing to store it only costs redoing the work next time."""
    try:
        atomic_write_bytes(path, data, durable=True)
    except OSError as err:
        logger.warning("cannot store %s (%s); it will be recomputed next time", path, err)


def _check_path(artifact: Path) -> Path:
    return artifact.with_suffix(".check.json")


def _litert_version() -> str:
    try:
        return importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _previously_verified(artifact: Path | None) -> bool:
    if artifact is None or not _check_path(artifact).is_file():
        return False
    try:
        record = json.loads(_check_path(artifact).read_text())
    except (OSError, ValueError):
        return False
    return (
        record.get("litert") == _litert_version() and record.get("min_cosine", 0.0) >= SELF_CHECK_MIN_COSINE
    )


def self_check_images(image_size: int, n: int = _SELF_CHECK_IMAGES) -> np.ndarray:
    """Deterministic, image-like ``uint8[n, S, S, 3]`` inputs (smooth blobs plus gradients and noise)."""
    rng = np.random.default_rng(20261124)
    ramp = np.linspace(0.0, 255.0, image_size, dtype=np.float32)
    out = np.empty((n, image_size, image_size, 3), np.uint8)
    for i in range(n):
        coarse = rng.uniform(0, 255, (8, 8, 3)).astype(np.float32)
        blobs = np.kron(coarse, np.ones((image_size // 8 + 1, image_size // 8 + 1, 1)))[
            :image_size, :image_size
        ]
        img = 0.6 * blobs + 0.3 * ramp[None, :, None] + rng.normal(0, 12, (image_size, image_size, 3))
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _self_check(backend: LiteRTBackend, built: BuiltBackbone) -> float:
    images = self_check_images(backend.image_size)
    reference = built.model(images.astype(np.float32), training=False)
    return min_cosine(backend(images)[0], np.asarray(reference[0]))


def _load_litert(
    name: str,
    image_size: int,
    *,
    weights: Path | None,
    artifact_dir: Path | None,
    threads: int | None,
    replicas: int,
    batch_size: int,
    verify: bool,
) -> LiteRTBackend:
    _import_interpreter()
    artifact = _artifact_path(artifact_dir, name, image_size, weights)
    if artifact is not None and artifact.is_file():
        content = artifact.read_bytes()
        logger.debug("using converted model %s", artifact)
    else:
        built = keras_backbone(name, image_size, weights=weights)
        logger.info(
            "converting %s @ %d px to LiteRT (once%s)",
            name,
            image_size,
            f"; stored in {artifact.parent}" if artifact else "",
        )
        content = convert_to_tflite(built.model)
        if artifact is not None:
            _store(artifact, content)
    tag = cache_tag(name, image_size, weights=weights)
    try:
        backend = LiteRTBackend(
            content,
            model_id=name,
            image_size=image_size,
            cache_tag=tag,
            threads=threads,
            replicas=replicas,
            batch_size=batch_size,
        )
    except LiteRTUnavailableError:
        raise
    except Exception as err:  # the interpreter raises ValueError/RuntimeError on bad flatbuffers
        raise LiteRTUnavailableError(f"LiteRT could not load the converted model: {err}") from err
    if verify and not _previously_verified(artifact):
        _verify(backend, keras_backbone(name, image_size, weights=weights), artifact)
    return backend


def _verify(backend: LiteRTBackend, built: BuiltBackbone, artifact: Path | None) -> None:
    cos = _self_check(backend, built)
    if cos < SELF_CHECK_MIN_COSINE:
        raise LiteRTUnavailableError(
            f"self-check failed: LiteRT bottlenecks reach only cosine {cos:.6f} < {SELF_CHECK_MIN_COSINE} "
            "against the Keras reference"
        )
    logger.debug("LiteRT self-check passed (min cosine %.7f)", cos)
    if artifact is not None:
        record = {"min_cosine": cos, "litert": _litert_version(), "images": _SELF_CHECK_IMAGES}
        _store(_check_path(artifact), json.dumps(record).encode())


def _load_tf(name: str, image_size: int, *, weights: Path | None, batch_size: int) -> TFBackend:
    built = keras_backbone(name, image_size, weights=weights)
    return TFBackend(built, cache_tag=cache_tag(name, image_size, weights=weights), batch_size=batch_size)


def load_backend(
    name: str,
    image_size: int,
    *,
    weights: Path | None = None,
    runtime: RuntimeName = "auto",
    artifact_dir: Path | None = None,
    threads: int | None = None,
    replicas: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Backend:
    """Load a backbone for inference on the fastest runtime that matches the Keras reference.

    Args:
        name: Backbone name (see :func:`datacheck.embed.backbones.available_backbones`).
        image_size: Square input size in pixels.
        weights: Local weights file (Keras Applications backbones; see
            :func:`datacheck.embed.backbones.build_backbone`).
        runtime: ``"auto"`` (LiteRT if it converts and passes the self-check, else ``tf``), ``"litert"``
            (fail if LiteRT cannot be used) or ``"tf"``.
        artifact_dir: Where converted ``.tflite`` models are kept; ``None`` converts in memory every time.
        threads: LiteRT threads; ``None`` means all available cores. (TensorFlow's thread pools are
            process-wide and are left alone.)
        replicas: LiteRT interpreters sharing those threads, for callers that call the backend from that
            many threads at once (see :class:`LiteRTBackend`); the tf runtime ignores it.
        batch_size: Images per forward pass.

    Returns:
        The backend; its ``runtime`` attribute says which runtime runs.

    Raises:
        BackboneError: Unknown backbone or unusable weights (never silently random weights).
        LiteRTUnavailableError: ``runtime="litert"`` and LiteRT cannot be used.
        ValueError: Unknown runtime or a non-positive batch size.
    """
    get_backbone(name)
    if runtime not in ("auto", "litert", "tf"):
        raise ValueError(f"runtime must be one of auto, litert, tf; got {runtime!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if runtime == "tf":
        return _load_tf(name, image_size, weights=weights, batch_size=batch_size)
    options = {
        "weights": weights,
        "artifact_dir": artifact_dir,
        "threads": threads,
        "replicas": replicas,
        "batch_size": batch_size,
    }
    if runtime == "litert":
        return _load_litert(name, image_size, verify=False, **options)
    try:
        return _load_litert(name, image_size, verify=True, **options)
    except LiteRTUnavailableError as err:
        logger.warning(
            "LiteRT runtime not used for %s @ %d px: %s; falling back to tf.function", name, image_size, err
        )
        return _load_tf(name, image_size, weights=weights, batch_size=batch_size)
