"""Typed, validated parameters shared by the library and the CLI.

Every default lives here (or in a check's own params dataclass) exactly once; the CLI and the config
loader only override fields.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

from datacheck.errors import UsageError

Runtime = Literal["auto", "litert", "tf"]
ImageSize = int | Literal["auto"]
Engine = Literal["local", "ray"]

#: Smallest and largest input sizes we accept for a backbone (EfficientNet strides total 32).
MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 640

#: Largest image decoded, in pixels (see ``EmbedParams.max_image_pixels``).
MAX_IMAGE_PIXELS = 250_000_000


class ParamsError(UsageError, ValueError):
    """A parameter has a value outside its documented range."""


class Replaceable:
    """Mixin for frozen parameter dataclasses: :meth:`replace` that skips unset (``None``) values."""

    __slots__ = ()

    def replace(self, **changes: object) -> Self:
        """Return a copy with ``changes`` applied; ``None`` values (unset CLI flags) are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[type-var]


@dataclass(frozen=True, slots=True)
class EmbedParams(Replaceable):
    """How images become bottleneck vectors.

    Attributes:
        model: Backbone name (see ``datacheck models``); the bundled default works offline.
        image_size: Square model input in pixels, or ``"auto"`` to pick from the dataset's image sizes
            (see :func:`datacheck.embed.pipeline.auto_image_size`).
        batch_size: Images per forward pass.
        runtime: ``"auto"`` picks the fastest runtime that matches the Keras reference (LiteRT/XNNPACK),
            ``"tf"`` forces TensorFlow, ``"litert"`` forces LiteRT.
        weights: Local weights file for Keras Applications backbones (air-gapped use).
        cache_dir: Cache directory; ``None`` means :func:`datacheck.embed.cache.default_cache_dir`.
        decode_workers: Threads decoding images while the model runs; default half the CPU cores, since
            the inference runtime already uses every core (on 2 cores one decoder is 7–10 % faster than
            two, docs/benchmarks.md).
        max_image_pixels: Largest image accepted, in pixels (width × height). 250 MP by default, 2.8×
            Pillow's own 89 MP, so 100 MP photographs, scans and aerial images are audited; decompression
            bombs are refused (beyond this, or absurdly many pixels for the file's size: see
            :func:`datacheck.images.decode_image`).
        engine: ``"local"`` embeds in this process; ``"ray"`` embeds what the cache lacks on a Ray cluster
            first (:mod:`datacheck.embed.ray_engine`; extra ``datacheck[ray]``).
        ray_address: Ray cluster to connect to (``ray://…`` or ``host:port``); ``None``: ``RAY_ADDRESS`` if
            set, else a local Ray instance.
        ray_actors: Embedding actors; 0 means one per GPU of the cluster, or one on a CPU-only cluster
            (which leaves the other CPUs to decoding).
    """

    model: str = "efficientnet-lite0"
    image_size: ImageSize = "auto"
    batch_size: int = 64
    runtime: Runtime = "auto"
    weights: Path | None = None
    cache_dir: Path | None = None
    decode_workers: int = field(default_factory=lambda: max(1, (os.cpu_count() or 1) // 2))
    max_image_pixels: int = MAX_IMAGE_PIXELS
    engine: Engine = "local"
    ray_address: str | None = None
    ray_actors: int = 0

    def __post_init__(self) -> None:
        if self.image_size != "auto" and not (
            isinstance(self.image_size, int) and MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE
        ):
            raise ParamsError(
                f"image_size must be 'auto' or an integer from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}, "
                f"got {self.image_size!r}"
            )
        if self.batch_size < 1:
            raise ParamsError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.decode_workers < 1:
            raise ParamsError(f"decode_workers must be at least 1, got {self.decode_workers}")
        if self.max_image_pixels < 1:
            raise ParamsError(f"max_image_pixels must be at least 1, got {self.max_image_pixels}")
        if self.engine not in ("local", "ray"):
            raise ParamsError(f"engine must be 'local' or 'ray', got {self.engine!r}")
        if self.ray_actors < 0:
            raise ParamsError(f"ray_actors must be 0 (one per GPU, else one) or more, got {self.ray_actors}")
        if self.runtime not in ("auto", "litert", "tf"):
            raise ParamsError(f"runtime must be one of auto, litert, tf; got {self.runtime!r}")

    def as_options(self) -> dict[str, object]:
        """Fields as keyword options for :func:`datacheck.audit`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
