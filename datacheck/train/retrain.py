"""``retrain``: cached bottlenecks → a trained head, evaluated on held-out images, exported with its metrics.

Augmentation and fine-tuning (slower: they run the backbone on pixels) are options of the same run.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datacheck._native import quiet_native_logs
from datacheck._version import __version__
from datacheck.dataset import ImageRecord, discover
from datacheck.embed.pipeline import Embeddings, ProgressFn, embed_dataset
from datacheck.errors import UsageError
from datacheck.outputs import claim, claim_cache, mark
from datacheck.params import EmbedParams
from datacheck.train.export import LABELS_FILE, MODEL_FILE, export_model
from datacheck.train.finetune import feature_extractor, fine_tune
from datacheck.train.head import (
    TrainedHead,
    continue_with_augmentation,
    decode_pixels,
    predict_proba,
    train_head,
)
from datacheck.train.metrics import classification_metrics, confident_mistakes, save_confusion_png
from datacheck.train.params import PIXEL_BATCH, RetrainParams
from datacheck.train.splits import TEST, TRAIN, VAL, SplitParams, assign_roles

with quiet_native_logs():  # TensorFlow's native start-up lines stay off the user's terminal
    import keras

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"
METRICS_SCHEMA_VERSION = 1


# ---------------------------------------------------------------------------------------------- retrain


@dataclass(frozen=True)
class LabelledBottlenecks:
    """The embedded dataset with roles and class indices.

    Attributes:
        embeddings: From the pipeline (cache).
        roles: ``"train"``/``"val"``/``"test"`` per row.
        labels: Class index per row.
        class_names: Sorted class names.
        mirrored: Bottlenecks of the mirror images, row-aligned (only with ``flip``).
    """

    embeddings: Embeddings
    roles: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    mirrored: np.ndarray | None = None

    def rows(self, role: str) -> np.ndarray:
        """Row numbers with ``role``."""
        return np.flatnonzero(self.roles == role)

    def xy(self, role: str) -> tuple[np.ndarray, np.ndarray]:
        """Bottlenecks (float32: a large set's are float16) and labels of the rows with ``role``."""
        rows = self.rows(role)
        return self.embeddings.vectors[rows].astype(np.float32, copy=False), self.labels[rows]

    def xy_both(self, role: str) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`xy`, followed by the mirror images' bottlenecks when there are any."""
        x, y = self.xy(role)
        if self.mirrored is None:
            return x, y
        return np.concatenate([x, self.mirrored[self.rows(role)]]), np.concatenate([y, y])

    def proba(self, model: keras.Model, role: str) -> np.ndarray:
        """A head's probabilities for the rows with ``role``, averaged with their mirror images' if any."""
        probs = predict_proba(model, self.xy(role)[0])
        if self.mirrored is not None:
            probs = (probs + predict_proba(model, self.mirrored[self.rows(role)])) / 2.0
        return probs

    def paths(self, role: str) -> list[str]:
        """Dataset-relative paths of the rows with ``role``."""
        return [self.embeddings.records[i].path for i in self.rows(role)]

    def records_of(self, role: str) -> list[ImageRecord]:
        """Paths to open for the rows with ``role``."""
        return [self.embeddings.records[i] for i in self.rows(role)]


def label_bottlenecks(
    embeddings: Embeddings, split: SplitParams, class_names: Sequence[str] | None = None
) -> LabelledBottlenecks:
    """Attach roles and class indices to embeddings.

    Args:
        embeddings: The embedded dataset.
        split: How roles are assigned.
        class_names: The class list to index into (default: the dataset's sorted classes).

    Raises:
        UsageError: Fewer than two classes, or no training images.
    """
    names = (
        tuple(class_names)
        if class_names is not None
        else tuple(sorted({r.label for r in embeddings.records}))
    )
    lookup = {n: i for i, n in enumerate(names)}
    labels = np.array([lookup.get(r.label, -1) for r in embeddings.records], dtype=np.int64)
    roles = assign_roles(embeddings.records, split)
    if len(names) < 2:
        raise UsageError(f"retraining needs at least two classes; found {len(names)}")
    if not (roles == TRAIN).any():
        raise UsageError("no training images: every image fell in the validation or test role")
    return LabelledBottlenecks(embeddings, roles, labels, names)


@dataclass(frozen=True)
class RetrainResult:
    """What :func:`retrain` produced.

    Attributes:
        out: The output folder.
        files: Written files by kind (``model``, ``labels``, ``metrics``, ``confusion``).
        metrics: Everything in ``metrics.json``.
    """

    out: Path
    files: dict[str, Path]
    metrics: dict

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per stage."""
        return self.metrics["timings"]


@dataclass
class _Clock:
    timings: dict[str, float] = field(default_factory=dict)

    def lap(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - start
        return now


def _backend_for(embeddings: Embeddings, params: EmbedParams) -> Callable:
    from datacheck.embed.cache import Cache, default_cache_dir
    from datacheck.embed.runtime import load_backend

    with Cache(params.cache_dir or default_cache_dir()) as cache:
        artifacts = cache.artifact_path("")
    return load_backend(
        params.model,
        embeddings.image_size,
        weights=params.weights,
        runtime=params.runtime,
        artifact_dir=artifacts,
        batch_size=params.batch_size,
    )


def _train(
    data: LabelledBottlenecks, params: RetrainParams, clock: _Clock
) -> tuple[TrainedHead, keras.Model | None]:
    """Head on cached bottlenecks, then the optional augmented epochs and fine-tuning."""
    start = time.perf_counter()
    n_classes = len(data.class_names)
    y_train = data.xy(TRAIN)[1]
    validation = data.xy(VAL)
    trained = train_head(*data.xy_both(TRAIN), n_classes, params.head, data.xy_both(VAL))
    start = clock.lap("train_head", start)
    pixels = None
    if params.augment or params.fine_tune:
        pixels = decode_pixels(
            data.records_of(TRAIN), data.embeddings.image_size, params.embed.decode_workers
        )
        start = clock.lap("decode_pixels", start)
    if params.augment:
        logger.warning(
            "augmenting: every epoch runs the backbone over %d training images (the cache cannot help)",
            len(pixels),
        )
        backend = _backend_for(data.embeddings, params.embed)
        trained = continue_with_augmentation(
            trained, backend, pixels, y_train, validation, params.head, params.augment_epochs
        )
        start = clock.lap("train_augmented", start)
    if not params.fine_tune:
        return trained, None
    extractor = feature_extractor(
        params.embed.model, data.embeddings.image_size, weights=params.embed.weights, fresh=True
    )
    val_pixels = decode_pixels(data.records_of(VAL), data.embeddings.image_size, params.embed.decode_workers)
    fine_tune(extractor, trained.model, (pixels, y_train), (val_pixels, validation[1]), params)
    clock.lap("fine_tune", start)
    return trained, extractor


def _evaluate(
    data: LabelledBottlenecks, trained: TrainedHead, extractor: keras.Model | None, params: RetrainParams
) -> tuple[str, dict]:
    """Metrics on the test role (the validation role when there is no test image)."""
    role = TEST if (data.roles == TEST).any() else VAL
    if not (data.roles == role).any():
        role = TRAIN
    if role != TEST:
        logger.warning("no test images: metrics are on the %s images, which are not held out", role)
    if extractor is None:
        probs = data.proba(trained.model, role)
    else:
        pixels = decode_pixels(data.records_of(role), data.embeddings.image_size, params.embed.decode_workers)
        model = export_model(extractor, trained.model, data.embeddings.image_size, mirror=params.flip)
        probs = predict_proba(model, pixels, PIXEL_BATCH)
    y = data.xy(role)[1]
    metrics = classification_metrics(y, probs.argmax(axis=1), data.class_names)
    metrics["mistakes"] = confident_mistakes(
        probs, y, data.paths(role), data.class_names, params.top_mistakes
    )
    return role, metrics


def _params_dict(params: RetrainParams) -> dict:
    raw = dataclasses.asdict(params)
    return json.loads(json.dumps(raw, default=str))


def _write_outputs(
    out: Path,
    model: keras.Model,
    data: LabelledBottlenecks,
    metrics: dict,
) -> dict[str, Path]:
    mark(out, "model")
    files = {
        "model": out / MODEL_FILE,
        "labels": out / LABELS_FILE,
        "metrics": out / METRICS_FILE,
        "confusion": out / CONFUSION_FILE,
    }
    model.save(files["model"])
    files["labels"].write_text("".join(f"{name}\n" for name in data.class_names), encoding="utf-8")
    cm = metrics["evaluation"]["confusion_matrix"]
    title = f"{metrics['evaluated_on']} images: accuracy {metrics['evaluation']['accuracy']:.1%}"
    save_confusion_png(np.array(cm["counts"]), cm["labels"], files["confusion"], title)
    files["metrics"].write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return files


def _summary(
    data: LabelledBottlenecks, trained: TrainedHead, role: str, evaluation: dict, params: RetrainParams
) -> dict:
    emb = data.embeddings
    roles = Counter(data.roles.tolist())
    return {
        "schema_version": METRICS_SCHEMA_VERSION,
        "datacheck_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "dataset": {
            "root": str(emb.records[0].abs_path.parents[0]) if emb.records else "",
            "images": len(emb.records),
            "classes": list(data.class_names),
            "roles": {r: roles.get(r, 0) for r in (TRAIN, VAL, TEST)},
            "unreadable": len(emb.failures),
        },
        "backbone": {
            "model": emb.model_id,
            "image_size": emb.image_size,
            "dim": emb.dim,
            "cached": emb.cached,
            "computed": emb.computed,
        },
        "params": _params_dict(params),
        "training": {
            "epochs": trained.epochs,
            "best_epoch": trained.best_epoch,
            "final_val_accuracy": trained.history.get("val_accuracy", [None])[trained.best_epoch - 1]
            if "val_accuracy" in trained.history
            and trained.best_epoch <= len(trained.history["val_accuracy"])
            else None,
        },
        "evaluated_on": role,
        "evaluation": {k: v for k, v in evaluation.items() if k != "mistakes"},
        "mistakes": evaluation["mistakes"],
    }


def retrain(
    path: Path | str,
    out: Path | str,
    params: RetrainParams | None = None,
    *,
    manifest: Path | None = None,
    progress: ProgressFn | None = None,
) -> RetrainResult:
    """Train a classifier on a dataset's bottlenecks and export it with its metrics.

    Args:
        path: Dataset folder (or CSV manifest).
        out: Output folder for ``model.keras``, ``labels.txt``, ``metrics.json``, ``confusion_matrix.png``.
        params: Everything tunable; defaults from :class:`RetrainParams`.
        manifest: CSV manifest with ``path,label[,split]``.
        progress: Embedding progress callback ``(stage, done, total)``.

    Returns:
        The written files and the metrics (also in ``metrics.json``), with seconds per stage.
    """
    params = params or RetrainParams()
    clock = _Clock()
    start = time.perf_counter()
    claim(Path(out), "model", Path(path))
    claim_cache(params.embed.cache_dir, Path(path))
    dataset = discover(Path(path), manifest=manifest)
    embeddings = embed_dataset(dataset, params.embed, progress=progress)
    clock.timings.update({f"embed_{k}": v for k, v in embeddings.timings.items() if k != "total"})
    start = clock.lap("embed", start)
    data = label_bottlenecks(embeddings, params.split)
    if params.flip:
        from datacheck.train.flip import mirrored_vectors

        start = time.perf_counter()
        data = dataclasses.replace(
            data, mirrored=mirrored_vectors(embeddings, params.embed, progress=progress)
        )
        clock.lap("mirror", start)
    trained, extractor = _train(data, params, clock)
    start = time.perf_counter()
    role, evaluation = _evaluate(data, trained, extractor, params)
    start = clock.lap("evaluate", start)
    if extractor is None:
        extractor = feature_extractor(
            params.embed.model, embeddings.image_size, weights=params.embed.weights, fresh=False
        )
    model = export_model(extractor, trained.model, embeddings.image_size, mirror=params.flip)
    metrics = _summary(data, trained, role, evaluation, params)
    metrics["dataset"]["root"] = str(dataset.root)
    metrics["timings"] = clock.timings
    files = _write_outputs(Path(out), model, data, metrics)
    clock.lap("export", start)
    metrics["timings"]["total"] = sum(v for k, v in clock.timings.items() if not k.startswith("embed_"))
    files["metrics"].write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info("retrain: %s accuracy %.4f; wrote %s", role, evaluation["accuracy"], out)
    return RetrainResult(Path(out), files, metrics)
