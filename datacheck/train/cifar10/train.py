"""The training loop: synchronous data-parallel SGD, a checkpoint each epoch, metrics.json, TensorBoard.

One step, on every replica: gather the replica's slice of the global batch (uint8, host), augment it on the
device (:func:`datacheck.train.cifar10.pipeline.augment`), compute the loss divided by the *global* batch
size (plus the L2 penalty divided by the number of replicas), and hand the gradients to the Keras optimizer,
which sums them over all replicas (all-reduce) and applies the same update everywhere. The learning rate
follows a piecewise-linear one-cycle schedule whose peak is scaled linearly with the global batch:
``peak = lr × global_batch / recipe_batch``.

After each epoch the model is evaluated on the whole test set (with flip test-time augmentation) and on
the leak-free part of it — the test set minus the images whose pixels equal a training image's and minus
those a ``report.json`` names in ``leak`` findings — and a checkpoint is written, so ``resume`` continues
an interrupted run from its last finished epoch with the same data order.

This module holds :func:`train` and metrics.json; the plan and LR schedule are in
:mod:`~datacheck.train.cifar10.plan`, the model, step and evaluation in :mod:`~datacheck.train.cifar10.steps`,
the epoch loop, checkpoints and TensorBoard in :mod:`~datacheck.train.cifar10.session`, the leak-free test
set in :mod:`~datacheck.train.cifar10.leaks`; their names are re-exported here.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from datacheck.embed.cache import default_cache_dir
from datacheck.train.cifar10 import data, strategy
from datacheck.train.cifar10.arrays import Cifar10Arrays, Progress
from datacheck.train.cifar10.leaks import LeakFreeTest, exact_duplicates, leak_free_test
from datacheck.train.cifar10.params import TrainParams
from datacheck.train.cifar10.plan import PiecewiseLinear, Plan
from datacheck.train.cifar10.session import (
    CHECKPOINT_DIR,
    KEEP_CHECKPOINTS,
    STATE_FILE,
    TENSORBOARD_DIR,
    TENSORBOARD_SCALARS,
    History,
    Session,
    refuse_existing_run,
    write_json,
)
from datacheck.train.cifar10.steps import (
    EVAL_BATCH,
    build_training,
    evaluate,
    make_predict,
    make_train_step,
    weights_fingerprint,
)

__all__ = [
    "CHECKPOINT_DIR",
    "EVAL_BATCH",
    "KEEP_CHECKPOINTS",
    "METRICS_FILE",
    "METRICS_VERSION",
    "STATE_FILE",
    "TENSORBOARD_DIR",
    "TENSORBOARD_SCALARS",
    "LeakFreeTest",
    "PiecewiseLinear",
    "Plan",
    "Progress",
    "TrainResult",
    "build_training",
    "evaluate",
    "exact_duplicates",
    "leak_free_test",
    "make_predict",
    "make_train_step",
    "train",
    "weights_fingerprint",
]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
#: Version of metrics.json; fields are only ever added.
METRICS_VERSION = 1


@dataclass(frozen=True)
class TrainResult:
    """What a run produced.

    Attributes:
        metrics: The content of metrics.json (also for non-chief workers, who do not write it).
        out: The output folder (a temporary one, removed, for non-chief workers).
        metrics_path: Where metrics.json was written; ``None`` on non-chief workers.
    """

    metrics: dict
    out: Path
    metrics_path: Path | None


def train(params: TrainParams, progress: Progress | None = None) -> TrainResult:
    """Train a CIFAR-10 classifier and report its test accuracy (full and leak-free).

    Args:
        params: What to train and where; see :class:`TrainParams`.
        progress: ``progress(stage, done, total)``: ``"decode"`` while images are decoded, then
            ``"epoch i/n"`` in training images.

    Returns:
        The metrics (as written to ``out/metrics.json``).

    Raises:
        UsageError: Bad combination of options, an existing run in ``out`` without ``resume``, a resume
            with a different model, batch or data.
        DatasetUnreadableError: The data cannot be read.
    """
    started = time.perf_counter()
    refuse_existing_run(params)
    devices = strategy.select(params)  # first: it configures devices before TensorFlow initialises them
    cache_dir = params.cache_dir or default_cache_dir()
    arrays = data.load_cifar10(
        params.data, download=params.download, limit=params.limit, cache_dir=cache_dir, progress=progress
    )
    leak_free = leak_free_test(arrays, params.exclude_leaks, None if params.download else params.data)
    plan = Plan.make(params, devices.replicas, len(arrays.y_train))
    logger.info(
        "%s: %d epochs × %d steps, global batch %d (%d × %d), peak LR %.4g, %s",
        plan.model,
        plan.epochs,
        plan.steps_per_epoch,
        plan.global_batch,
        plan.per_replica_batch,
        plan.replicas,
        plan.peak_lr,
        devices.describe(),
    )
    session = Session(params, plan, devices, arrays, leak_free)
    try:
        history = session.run(progress)
        metrics = _metrics(params, plan, devices, arrays, leak_free, history, time.perf_counter() - started)
        metrics["resumed_from_epoch"] = session.resumed_from
        metrics["weights_sha256"] = weights_fingerprint(session.model)
        metrics["optimizer_steps"] = int(session.optimizer.iterations.numpy())
        if devices.is_chief:
            write_json(params.out / METRICS_FILE, metrics)
    finally:
        session.close()
    return TrainResult(metrics, session.out, params.out / METRICS_FILE if devices.is_chief else None)


def _metrics(
    params: TrainParams,
    plan: Plan,
    devices: strategy.Devices,
    arrays: Cifar10Arrays,
    leak_free: LeakFreeTest,
    history: History,
    wall_seconds: float,
) -> dict:
    last = history.epochs[-1] if history.epochs else {}
    return {
        "metrics_version": METRICS_VERSION,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": plan.model,
        "epochs": plan.epochs,
        "test_accuracy": last.get("test_accuracy"),
        "test_accuracy_leak_free": last.get("test_accuracy_leak_free"),
        "test_images": len(arrays.y_test),
        "test_images_leak_free": int(leak_free.keep.sum()),
        "leaks": {
            "exact_copies_of_train_images": leak_free.exact,
            "named_by_report": leak_free.from_report,
            "report": None if leak_free.report is None else str(leak_free.report),
        },
        "train_images": len(arrays.y_train),
        "images_per_second": history.images / history.seconds if history.seconds > 0 else None,
        "first_step_seconds": history.first_step_seconds,
        "train_seconds": sum(e.get("train_seconds", 0.0) for e in history.epochs),
        "wall_seconds": wall_seconds,
        "tta": params.tta,
        "devices": {
            "strategy": devices.kind,
            "replicas": devices.replicas,
            "devices": list(devices.devices),
            "workers": devices.workers,
            "precision": devices.precision,
            "sync_bn": params.sync_bn and devices.replicas > 1 and plan.model == "resnet9",
        },
        "batch": {
            "per_replica": plan.per_replica_batch,
            "global": plan.global_batch,
            "steps_per_epoch": plan.steps_per_epoch,
        },
        "optimizer": {
            "name": "SGD, Nesterov momentum",
            "momentum": plan.recipe.momentum,
            "peak_lr": plan.peak_lr,
            "lr_rule": f"peak_lr = lr × global_batch / {plan.recipe.batch_size}",
            "warmup_steps": plan.warmup_steps,
            "total_steps": plan.total_steps,
            "weight_decay": plan.recipe.weight_decay,
            "label_smoothing": plan.recipe.label_smoothing,
        },
        "data": {"source": arrays.source, "classes": list(arrays.classes), "limit": params.limit},
        "out": str(params.out),
        "checkpoints": str(params.out / CHECKPOINT_DIR),
        "tensorboard": str(params.out / TENSORBOARD_DIR),
        "history": history.epochs,
    }
