"""One run on one worker: model, optimiser, the epoch loop, checkpoints, state.json and TensorBoard.

After each epoch the chief evaluates the model on the whole test set and on the leak-free part of it, and
every worker writes a checkpoint, so ``resume`` continues an interrupted run from its last finished epoch
with the same data order.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from datacheck.errors import UsageError
from datacheck.train.cifar10 import pipeline, strategy
from datacheck.train.cifar10.arrays import Cifar10Arrays, Progress
from datacheck.train.cifar10.leaks import LeakFreeTest
from datacheck.train.cifar10.params import TrainParams
from datacheck.train.cifar10.plan import Plan
from datacheck.train.cifar10.steps import build_training, evaluate, make_predict, make_train_step

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
#: Checkpoints kept (the newest ones).
KEEP_CHECKPOINTS = 2
#: Per-epoch values logged for TensorBoard.
TENSORBOARD_SCALARS = (
    "loss", "train_accuracy", "test_accuracy", "test_accuracy_leak_free", "images_per_second", "lr_end",
)  # fmt: skip

# TensorBoard's scalar plugin reads float32 scalars tagged with this metadata. They are written with the
# low-level ``tf.summary.write``, so logging needs no ``tensorboard`` package (TensorFlow 2.21 does not
# depend on it; ``tf.summary.scalar`` does).
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
)


@dataclass
class History:
    """Per-epoch records and the throughput counters of a run."""

    epochs: list[dict] = field(default_factory=list)
    images: int = 0
    seconds: float = 0.0
    first_step_seconds: float | None = None


class Session:
    """Model, optimiser, checkpoints and logs of one run on one worker."""

    def __init__(
        self,
        params: TrainParams,
        plan: Plan,
        devices: strategy.Devices,
        arrays: Cifar10Arrays,
        leak_free: LeakFreeTest,
    ) -> None:
        self.params, self.plan, self.devices = params, plan, devices
        self.arrays, self.leak_free = arrays, leak_free
        self.identity = _identity(plan, arrays)
        _check_resumable(params, self.identity)
        self.out = (
            params.out
            if devices.is_chief
            else Path(tempfile.mkdtemp(prefix=f"cifar10-worker{devices.worker}-"))
        )
        num_classes = len(arrays.classes)
        self.model, self.optimizer = build_training(
            devices,
            plan,
            num_classes=num_classes,
            sync_bn=params.sync_bn and plan.replicas > 1,
            seed=params.seed,
        )
        self.step = make_train_step(
            devices.strategy,
            self.model,
            self.optimizer,
            plan,
            num_classes=num_classes,
            augment_seed=params.seed if params.augment else None,
        )
        self.predict = make_predict(self.model, tta=params.tta)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(self.out / CHECKPOINT_DIR), KEEP_CHECKPOINTS
        )
        self.writer = (
            tf.summary.create_file_writer(str(self.out / TENSORBOARD_DIR))
            if devices.is_chief
            else tf.summary.create_noop_writer()
        )
        with tf.device("/cpu:0"):  # the input pipeline gathers batches on the host
            self.x_train = tf.constant(arrays.x_train)
            self.y_train = tf.constant(arrays.y_train)
        self.history = History()
        self.resumed_from = self._restore()

    def _restore(self) -> int:
        if not self.params.resume:
            return 0
        latest = tf.train.latest_checkpoint(str(self.params.out / CHECKPOINT_DIR))
        if latest is None:
            logger.warning("--resume: no checkpoint in %s; starting from scratch", self.params.out)
            return 0
        self.checkpoint.restore(latest).expect_partial()
        state = _read_state(self.params.out)
        done = int(self.epoch.numpy())
        self.history.epochs = [e for e in state.get("history", []) if e["epoch"] <= done]
        if state.get("epochs") not in (None, self.plan.epochs):
            logger.warning(
                "resuming a %s-epoch run with %d epochs: the LR schedule changes",
                state["epochs"],
                self.plan.epochs,
            )
        logger.info("resumed from %s (epoch %d)", latest, done)
        return done

    def run(self, progress: Progress | None) -> History:
        """Train the epochs left, evaluating (chief) and checkpointing after each; the history."""
        first = int(self.epoch.numpy()) + 1
        for epoch in range(first, self.plan.epochs + 1):
            record = self._train_epoch(epoch, progress)
            if self.devices.is_chief:
                record.update(self._evaluate())
            self.history.epochs.append(record)
            self._log(record)
            self.epoch.assign(epoch)
            # every worker saves (saving is collective); the others write to their temporary folder
            self.manager.save(checkpoint_number=epoch)
            if self.devices.is_chief:
                state = {**self.identity, "epochs": self.plan.epochs, "history": self.history.epochs}
                write_json(self.out / STATE_FILE, state)
        if first > self.plan.epochs and self.devices.is_chief:
            self._evaluate_again()
        return self.history

    def _evaluate_again(self) -> None:
        """A resumed run with nothing left to train: evaluate the model now (e.g. with a new leak report)."""
        record = {"epoch": int(self.epoch.numpy()), **self._evaluate()}
        if self.history.epochs and self.history.epochs[-1]["epoch"] == record["epoch"]:
            self.history.epochs[-1] = {**self.history.epochs[-1], **record}
        else:
            self.history.epochs.append(record)
        logger.info("nothing left to train: evaluated the epoch-%d model again", record["epoch"])

    def _train_epoch(self, epoch: int, progress: Progress | None) -> dict:
        plan = self.plan
        batches = self.devices.strategy.distribute_datasets_from_function(self._dataset_fn(epoch))
        total = plan.steps_per_epoch * plan.global_batch
        losses, correct = [], []
        started = time.perf_counter()
        first_step_at = None
        for i, batch in enumerate(batches):
            loss, hits = self.step(batch, tf.constant((epoch - 1) * plan.steps_per_epoch + i, tf.int64))
            losses.append(loss)
            correct.append(hits)
            if first_step_at is None and self.history.first_step_seconds is None:
                loss.numpy()  # waits for the first step, which traces and compiles
                first_step_at = time.perf_counter()
            if progress is not None:
                progress(f"epoch {epoch}/{plan.epochs}", (i + 1) * plan.global_batch, total)
        mean_loss = float(tf.add_n(losses).numpy()) / len(losses)
        seconds = time.perf_counter() - started
        return self._account(
            epoch, mean_loss, float(tf.add_n(correct).numpy()) / total, seconds, first_step_at, started
        )

    def _account(
        self,
        epoch: int,
        loss: float,
        accuracy: float,
        seconds: float,
        first_step_at: float | None,
        started: float,
    ) -> dict:
        plan, history = self.plan, self.history
        images = plan.steps_per_epoch * plan.global_batch
        if first_step_at is not None:  # the first step traces and compiles: keep it out of the throughput
            history.first_step_seconds = first_step_at - started
            history.images += images - plan.global_batch
            history.seconds += seconds - history.first_step_seconds
        else:
            history.images += images
            history.seconds += seconds
        previous = self.history.epochs[-1]["elapsed_train_seconds"] if self.history.epochs else 0.0
        return {
            "epoch": epoch,
            "loss": loss,
            "train_accuracy": accuracy,
            "train_seconds": seconds,
            "elapsed_train_seconds": previous + seconds,
            "images_per_second": images / seconds,
            "lr_end": float(self.optimizer.learning_rate.numpy()),
        }

    def _dataset_fn(self, epoch: int) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
        order = pipeline.epoch_order(len(self.arrays.y_train), epoch=epoch, seed=self.params.seed)

        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            local = context.num_replicas_in_sync // context.num_input_pipelines
            rows = pipeline.replica_batches(
                order,
                global_batch=self.plan.global_batch,
                replicas=self.plan.replicas,
                first=context.input_pipeline_id * local,
                count=local,
            )
            return pipeline.train_dataset(self.x_train, self.y_train, rows)

        return dataset_fn

    def _evaluate(self) -> dict:
        full, leak_free = evaluate(self.predict, self.arrays.x_test, self.arrays.y_test, self.leak_free.keep)
        return {"test_accuracy": full, "test_accuracy_leak_free": leak_free}

    def _log(self, record: dict) -> None:
        logger.info(
            "epoch %d/%d: loss %.4f, train %.3f, test %s, leak-free %s, %.0f img/s",
            record["epoch"],
            self.plan.epochs,
            record["loss"],
            record["train_accuracy"],
            _fmt(record.get("test_accuracy")),
            _fmt(record.get("test_accuracy_leak_free")),
            record["images_per_second"],
        )
        with self.writer.as_default(step=record["epoch"]):
            for name in TENSORBOARD_SCALARS:
                if record.get(name) is not None:
                    tf.summary.write(name, tf.constant(record[name], tf.float32), metadata=_SCALAR_METADATA)
        self.writer.flush()

    def close(self) -> None:
        """Flush the logs; a non-chief worker's temporary folder is removed."""
        self.writer.close()
        if not self.devices.is_chief:
            shutil.rmtree(self.out, ignore_errors=True)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _identity(plan: Plan, arrays: Cifar10Arrays) -> dict:
    """What must not change between a run and its resumption."""
    return {
        "model": plan.model,
        "global_batch": plan.global_batch,
        "train_images": len(arrays.y_train),
        "test_images": len(arrays.y_test),
        "classes": list(arrays.classes),
    }


def refuse_existing_run(params: TrainParams) -> None:
    """Without ``resume``, never overwrite a run (checked before any device or data work)."""
    latest = tf.train.latest_checkpoint(str(params.out / CHECKPOINT_DIR))
    if latest is not None and not params.resume:
        raise UsageError(
            f"{params.out} already holds a run (checkpoint {Path(latest).name}); "
            "pass --resume to continue it or choose another --out"
        )


def _check_resumable(params: TrainParams, identity: dict) -> None:
    if not params.resume or tf.train.latest_checkpoint(str(params.out / CHECKPOINT_DIR)) is None:
        return
    state = _read_state(params.out)
    changed = [k for k, v in identity.items() if k in state and state[k] != v]
    if changed:
        raise UsageError(
            f"cannot resume the run in {params.out}: {', '.join(changed)} changed "
            f"(was {', '.join(str(state[k]) for k in changed)}); use another --out"
        )


def _read_state(out: Path) -> dict:
    try:
        return json.loads((out / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_json(path: Path, doc: dict) -> None:
    """Write ``doc`` as indented UTF-8 JSON, atomically (through a temporary file beside ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
