"""Typed, validated parameters shared by the library and the CLI.

Every default lives here (or in a check's own params dataclass) exactly once; the CLI and the config
loader only override fields.

Validation is declarative and done one way for every params dataclass: a field's range is written next to
its default with :func:`param` (``folds: int = param(5, ge=2)``), and :class:`Params` checks every range
when an instance is built, reporting all problems at once in a :class:`ParamsError`. Rules that relate two
fields (``fail_ratio <= narrow_ratio``) go in :meth:`Params.relations`. Plain dataclass metadata rather
than pydantic: the params stay ordinary frozen (slotted) dataclasses, with no second model layer, no
coercion surprises and no new dependency; the ranges are data that the docs tests can read.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

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
class Range:
    """The values a parameter may take (``None`` bounds are open; ``optional``: ``None`` is allowed too)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[object, ...] | None = None
    optional: bool = False

    def problem(self, name: str, value: object) -> str | None:
        """Why ``value`` is out of range for the parameter ``name``, or ``None`` when it fits."""
        if value is None:
            return None if self.optional else f"{name} must be set"
        if self.choices is not None:
            if value in self.choices:
                return None
            return f"{name} must be one of {', '.join(map(str, self.choices))}, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy scalars are Real too
            return None if self.ge is self.gt is self.le is self.lt is None else f"{name} must be a number"
        for bound, ok, word in (
            (self.ge, lambda b: value >= b, "at least"),
            (self.gt, lambda b: value > b, "greater than"),
            (self.le, lambda b: value <= b, "at most"),
            (self.lt, lambda b: value < b, "less than"),
        ):
            if bound is not None and not ok(bound):
                return f"{name} must be {word} {bound:g}, got {value!r}"
        return None


def param(
    default: object = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[object, ...] | None = None,
    optional: bool = False,
    factory: object = dataclasses.MISSING,
) -> Any:
    """A params field with its range, checked by :class:`Params` (see the module docstring)."""
    metadata = {"range": Range(ge, gt, le, lt, choices, optional or default is None)}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)  # type: ignore[arg-type]
    return field(default=default, metadata=metadata)


class Params(Replaceable):
    """Base of every params dataclass: checks each field's :func:`param` range, then :meth:`relations`."""

    __slots__ = ()

    def __post_init__(self) -> None:
        problems = [
            problem
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if (declared := f.metadata.get("range")) is not None
            and (problem := declared.problem(f.name, getattr(self, f.name))) is not None
        ]
        if not problems:
            problems = [p for p in self.relations() if p]
        if problems:
            raise ParamsError("; ".join(problems))

    def relations(self) -> list[str]:
        """Problems with rules that involve several fields (checked once every field is in range)."""
        return []


@dataclass(frozen=True, slots=True)
class EmbedParams(Params):
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
        check_workers: Threads running the checks once the audit context is built; default every core (the
            checks are pure functions of the frozen context, BLAS held at one thread each so their results
            do not depend on what runs beside them). 1 runs them one after another.
        spill_rows: From this many images on, the thumbnails and ImageNet logits (5 KB per image: 5 GB at a
            million) go to unlinked temporary files in the cache folder as they are read, and the checks
            read the rows they need through memory maps, and the bottleneck vectors are held as the cache's
            float16 rows (2.4 GB less at a million 1280-d vectors; checks read them as the same float32
            unit rows, :class:`~datacheck.halfrows.HalfUnitRows`); below it all stay in memory as float32.
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
    batch_size: int = param(64, ge=1)
    runtime: Runtime = param("auto", choices=typing.get_args(Runtime))
    weights: Path | None = None
    cache_dir: Path | None = None
    decode_workers: int = param(factory=lambda: max(1, (os.cpu_count() or 1) // 2), ge=1)
    check_workers: int = param(factory=lambda: os.cpu_count() or 1, ge=1)
    spill_rows: int = param(200_000, ge=1)
    max_image_pixels: int = param(MAX_IMAGE_PIXELS, ge=1)
    engine: Engine = param("local", choices=typing.get_args(Engine))
    ray_address: str | None = None
    ray_actors: int = param(0, ge=0)

    def relations(self) -> list[str]:
        """``image_size`` is ``"auto"`` or a whole number of pixels in the backbones' range."""
        size = self.image_size
        if size == "auto" or (isinstance(size, int) and MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE):
            return []
        return [
            f"image_size must be 'auto' or an integer from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}, got {size!r}"
        ]

    def as_options(self) -> dict[str, object]:
        """Fields as keyword options for :func:`datacheck.audit`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
