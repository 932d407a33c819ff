"""Option bundles for the CLI: each group of flags is declared once and shared by every command using it.

A bundle is a frozen dataclass whose fields carry their Typer declaration (``Annotated[..., typer.Option]``).
:func:`with_bundles` spreads a bundle's fields into a command's signature, so Typer sees ordinary options,
and hands the command one bundle object instead. Unset flags are ``None``: the library's params objects
(and the config file) own every default, the CLI none.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer

from datacheck.params import ParamsError

if TYPE_CHECKING:
    from datacheck.params import EmbedParams, Params
    from datacheck.train.cifar10.params import TrainParams
    from datacheck.train.params import HeadParams
    from datacheck.train.splits import SplitParams

F = TypeVar("F", bound=Callable[..., Any])
P = TypeVar("P", bound="Params")

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only print errors and the final result.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv for debug).")]
CacheOpt = Annotated[
    Path | None,
    typer.Option("--cache", help="Cache directory (default: $DATACHECK_CACHE or ~/.cache/datacheck)."),
]
ManifestOpt = Annotated[
    Path | None, typer.Option("--manifest", help="CSV manifest with columns path,label[,split].")
]
FormatInOpt = Annotated[
    str | None,
    typer.Option(
        "--format-in",
        help="Dataset format: auto (by the path; default), folder, manifest, webdataset, parquet or hf "
        "(see docs/datasets.md).",
    ),
]
#: ``--format`` of the commands that print a table or its JSON.
TableFormatOpt = Annotated[Literal["table", "json"], typer.Option("--format", "-f", help="table or json.")]
FlipOpt = Annotated[
    bool,
    typer.Option(
        "--flip", help="Train on mirror images too, average image and mirror (first run embeds twice)."
    ),
]
PATH_HELP = (
    "Dataset folder, CSV manifest, WebDataset shards, Parquet or a saved Hugging Face dataset (path or URI)."
)


@dataclasses.dataclass(frozen=True)
class LogFlags:
    """How much the command says: ``--quiet`` / ``-v``."""

    quiet: QuietOpt = False
    verbose: VerboseOpt = 0

    def setup(self) -> None:
        """Route the library's logging to stderr at the level asked for (:func:`setup_logging`)."""
        from datacheck.console import setup_logging

        setup_logging(quiet=self.quiet, verbose=self.verbose)


def given(**options: object) -> dict[str, object]:
    """The options that were set (not ``None``): the library's own defaults fill the rest."""
    return {name: value for name, value in options.items() if value is not None}


def _given(bundle: object) -> dict[str, Any]:
    """The bundle's fields that were set."""
    return given(**{f.name: getattr(bundle, f.name) for f in dataclasses.fields(bundle)})  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class EmbedFlags:
    """How images become vectors (:class:`~datacheck.params.EmbedParams` fields)."""

    model: Annotated[str | None, typer.Option("--model", help="Backbone name (see `datacheck models`).")] = (
        None
    )
    image_size: Annotated[
        str | None, typer.Option("--image-size", help="Model input size in px, or 'auto'.")
    ] = None
    runtime: Annotated[
        str | None, typer.Option("--runtime", help="Inference runtime: auto, litert or tf.")
    ] = None
    weights: Annotated[
        Path | None, typer.Option("--weights", help="Local weights file for Keras Applications backbones.")
    ] = None
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per forward pass.")] = None
    cache: CacheOpt = None

    def given(self) -> dict[str, Any]:
        """The flags the user gave, as ``EmbedParams`` fields; unset ones are left to the config."""
        given = _given(self)
        if "cache" in given:
            given["cache_dir"] = given.pop("cache")
        size = given.get("image_size")
        if size is not None and size != "auto":
            try:
                given["image_size"] = int(size)
            except ValueError:
                raise ParamsError(f"--image-size takes a number of pixels or 'auto', got {size!r}") from None
        return given

    def params(self) -> EmbedParams:
        """``EmbedParams`` from the library's defaults and the flags given (commands without a config)."""
        from datacheck.params import EmbedParams

        return EmbedParams().replace(**self.given())


@dataclasses.dataclass(frozen=True)
class RayFlags:
    """Where to embed: this process or a Ray cluster."""

    engine: Annotated[
        str | None,
        typer.Option(
            "--engine", help="Where to embed: local (this process) or ray (a Ray cluster; docs/scaling.md)."
        ),
    ] = None
    address: Annotated[
        str | None,
        typer.Option("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local one)."),
    ] = None

    def given(self) -> dict[str, Any]:
        """The flags given, as ``EmbedParams`` fields."""
        given = _given(self)
        if "address" in given:
            given["ray_address"] = given.pop("address")
        return given


@dataclasses.dataclass(frozen=True)
class HeadFlags:
    """How a classifier head is trained on the bottlenecks, and how the data is split for it."""

    hidden: Annotated[
        int | None, typer.Option("--hidden", help="Units of the head's hidden layer (0: none).")
    ] = None
    dropout: Annotated[float | None, typer.Option("--dropout", help="Dropout rate of the head.")] = None
    l2: Annotated[float | None, typer.Option("--l2", help="L2 weight penalty of the head.")] = None
    learning_rate: Annotated[
        float | None, typer.Option("--learning-rate", help="Adam learning rate of the head.")
    ] = None
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Most epochs (early stopping on validation).")
    ] = None
    patience: Annotated[
        int | None, typer.Option("--patience", help="Epochs without validation improvement before stopping.")
    ] = None
    class_weights: Annotated[
        bool,
        typer.Option("--class-weights", help="Weight classes inversely to their size (imbalanced data)."),
    ] = False
    val_percent: Annotated[
        float | None, typer.Option("--val-percent", help="Validation share by stable hash (no val/ folder).")
    ] = None
    test_percent: Annotated[
        float | None, typer.Option("--test-percent", help="Test share by stable hash (no test/ folder).")
    ] = None
    flip: FlipOpt = False

    def params(self) -> tuple[HeadParams, SplitParams]:
        """The head's and the split's params: library defaults, overridden by the flags given."""
        from datacheck.train.params import HeadParams
        from datacheck.train.splits import SplitParams

        head = HeadParams().replace(
            hidden=self.hidden,
            dropout=self.dropout,
            l2=self.l2,
            learning_rate=self.learning_rate,
            max_epochs=self.epochs,
            patience=self.patience,
            class_weights=self.class_weights or None,
        )
        split = SplitParams().replace(val_percent=self.val_percent, test_percent=self.test_percent)
        return head, split

    def run_params(self, params_type: type[P], embedding: EmbedFlags, **given: object) -> P:
        """A training run's params (``RetrainParams``, ``CompareParams``): their defaults, then these flags.

        ``given``: the command's own options; ``None`` leaves a default in place.
        """
        head, split = self.params()
        flip = self.flip or None
        return params_type().replace(embed=embedding.params(), split=split, head=head, flip=flip, **given)


@dataclasses.dataclass(frozen=True)
class Cifar10Flags:
    """The reference CIFAR-10 trainer's settings (:class:`~datacheck.train.cifar10.params.TrainParams`)."""

    data: Annotated[
        Path | None,
        typer.Option("--data", help="train/<class>/ + test/<class>/ image folder, or cifar-10-batches-py."),
    ] = None
    download: Annotated[
        bool, typer.Option("--download", help="Fetch the CIFAR-10 python batches (needs internet).")
    ] = False
    model: Annotated[str | None, typer.Option("--model", help="resnet9 (GPU) or small (CPU).")] = None
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs (default: the model's recipe).")] = (
        None
    )
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Images per replica; global batch = this × replicas.")
    ] = None
    lr: Annotated[
        float | None,
        typer.Option("--lr", help="Peak LR at the recipe's batch (scaled with the global batch)."),
    ] = None
    gpus: Annotated[str | None, typer.Option("--gpus", help="0 (CPU), N, or all (default).")] = None
    cpu_replicas: Annotated[
        int | None, typer.Option("--cpu-replicas", help="With --gpus 0: mirror over N logical CPU devices.")
    ] = None
    multi_worker: Annotated[
        bool, typer.Option("--multi-worker", help="MultiWorkerMirroredStrategy configured by TF_CONFIG.")
    ] = False
    precision: Annotated[
        str | None, typer.Option("--precision", help="auto, float32, mixed_float16 or mixed_bfloat16.")
    ] = None
    sync_bn: Annotated[
        bool | None, typer.Option("--sync-bn/--no-sync-bn", help="Batch-norm statistics over all replicas.")
    ] = None
    augment: Annotated[
        bool | None, typer.Option("--augment/--no-augment", help="Random crop (pad 4) and flip.")
    ] = None
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help="Flip test-time augmentation.")] = None
    exclude_leaks: Annotated[
        Path | None,
        typer.Option(
            "--exclude-leaks", help="report.json: also report accuracy without its leaked test images."
        ),
    ] = None
    limit: Annotated[int | None, typer.Option("--limit", help="At most N images per split (quick runs).")] = (
        None
    )
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Checkpoints, metrics.json, tensorboard/.")
    ] = None
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False
    seed: Annotated[int | None, typer.Option("--seed", help="Initialisation, shuffling, augmentation.")] = (
        None
    )
    cache: CacheOpt = None

    def params(self) -> TrainParams:
        """``TrainParams``: the recipe's defaults, overridden by the flags given."""
        from datacheck.train.cifar10.params import TrainParams, parse_gpus

        given = _given(self)
        for name in ("data", "download"):  # constructor arguments: the params validate them together
            given.pop(name, None)
        if "gpus" in given:
            given["gpus"] = parse_gpus(given["gpus"])
        if "cache" in given:
            given["cache_dir"] = given.pop("cache")
        return TrainParams(data=self.data, download=self.download).replace(**given)


def _bundle_fields(bundle: type) -> list[inspect.Parameter]:
    """The bundle's fields as keyword parameters carrying their Typer declarations."""
    hints = typing.get_type_hints(bundle, include_extras=True)
    return [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
        for f in dataclasses.fields(bundle)
    ]


def with_bundles(command: F) -> F:
    """Spread the command's bundle-typed parameters into single options for Typer.

    A parameter annotated with a bundle class (a dataclass above) is replaced by the bundle's fields; when
    Typer calls the command, those values are gathered back into one bundle object.
    """
    hints = typing.get_type_hints(command, include_extras=True)
    bundles: dict[str, type] = {}
    parameters: list[inspect.Parameter] = []
    for param in inspect.signature(command).parameters.values():
        hint = hints.get(param.name, param.annotation)
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            bundles[param.name] = hint
            parameters.extend(_bundle_fields(hint))
        else:
            parameters.append(param.replace(annotation=hint, kind=inspect.Parameter.KEYWORD_ONLY))

    @functools.wraps(command)
    def wrapper(**values: Any) -> Any:
        for name, bundle in bundles.items():
            values[name] = bundle(**{f.name: values.pop(f.name) for f in dataclasses.fields(bundle)})
        return command(**values)

    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper  # type: ignore[return-value]
