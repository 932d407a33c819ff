"""The training loop: synchronous data-parallel SGD, a checkpoint each epoch, metrics.json, TensorBoard.

One step, on every replica: gather the replica's slice of the global batch (uint8, host), augment it on the
device (:func:`datacheck.train.cifar10.data.augment`), compute the loss divided by the *global* batch size
(plus the L2 penalty divided by the number of replicas), and hand the gradients to the Keras optimizer,
which sums them over all replicas (all-reduce) and applies the same update everywhere. The learning rate
follows a piecewise-linear one-cycle schedule whose peak is scaled linearly with the global batch:
``peak = lr × global_batch / recipe_batch``.

After each epoch the model is evaluated on the whole test set (with flip test-time augmentation) and on
the leak-free part of it — the test set minus the images whose pixels equal a training image's and minus
those a ``report.json`` names in ``leak`` findings — and a checkpoint is written, so ``resume`` continues
an interrupted run from its last finished epoch with the same data order.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from datacheck.embed.cache import default_cache_dir
from datacheck.errors import UsageError
from datacheck.train.cifar10 import data, strategy
from datacheck.train.cifar10.models import RECIPES, Recipe, build_model, kernels
from datacheck.train.cifar10.params import TrainParams

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

METRICS_FILE = "metrics.json"
STATE_FILE = "state.json"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
#: Checkpoints kept (the newest ones).
KEEP_CHECKPOINTS = 2
#: Test images per forward pass during evaluation.
EVAL_BATCH = 500
#: Version of metrics.json; fields are only ever added.
METRICS_VERSION = 1
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


# ------------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class Plan:
    """Batch sizes, step counts and the optimiser settings of a run.

    Attributes:
        model: Model name.
        epochs: Epochs to reach.
        per_replica_batch: Images per replica per step.
        replicas: Replicas in sync.
        global_batch: ``per_replica_batch × replicas``.
        steps_per_epoch: ``train_images // global_batch`` (the remainder is dropped each epoch, in a
            different random order every epoch).
        peak_lr: ``lr × global_batch / recipe.batch_size``.
        warmup_steps: Steps of the linear rise to ``peak_lr``.
        recipe: The model's recipe.
    """

    model: str
    epochs: int
    per_replica_batch: int
    replicas: int
    global_batch: int
    steps_per_epoch: int
    peak_lr: float
    warmup_steps: int
    recipe: Recipe

    @property
    def total_steps(self) -> int:
        """Steps of the whole run."""
        return self.epochs * self.steps_per_epoch

    @classmethod
    def make(cls, params: TrainParams, replicas: int, train_images: int) -> Plan:
        """The plan for ``params`` on ``replicas`` replicas and ``train_images`` images.

        Raises:
            UsageError: Fewer training images than one global batch.
        """
        recipe = RECIPES[params.model]
        per_replica = params.batch_size or recipe.batch_size
        global_batch = per_replica * replicas
        steps = train_images // global_batch
        if steps < 1:
            raise UsageError(
                f"{train_images} training images are fewer than one global batch of {global_batch} "
                f"({per_replica} × {replicas} replicas); lower --batch-size or raise --limit"
            )
        epochs = params.epochs or recipe.epochs
        peak = (params.lr or recipe.lr) * global_batch / recipe.batch_size
        warmup = max(1, round(recipe.warmup * epochs * steps))
        return cls(params.model, epochs, per_replica, replicas, global_batch, steps, peak, warmup, recipe)

    def schedule(self) -> PiecewiseLinear:
        """0 → ``peak_lr`` over the warm-up steps, then linearly back to 0 at the last step."""
        return PiecewiseLinear(
            (0.0, float(self.warmup_steps), float(self.total_steps)), (0.0, self.peak_lr, 0.0)
        )


class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Linear interpolation between ``(step, value)`` knots, evaluated mid-step (so no step gets LR 0)."""

    def __init__(self, steps: tuple[float, ...], values: tuple[float, ...]) -> None:
        super().__init__()
        self.steps, self.values = tuple(steps), tuple(values)

    def __call__(self, step):
        """The learning rate of optimiser step ``step`` (0-based)."""
        x = tf.cast(step, tf.float32) + 0.5
        knots, values = tf.constant(self.steps, tf.float32), tf.constant(self.values, tf.float32)
        i = tf.clip_by_value(
            tf.searchsorted(knots, tf.reshape(x, [1]), side="right")[0], 1, len(self.steps) - 1
        )
        t = tf.clip_by_value((x - knots[i - 1]) / tf.maximum(knots[i] - knots[i - 1], 1e-9), 0.0, 1.0)
        return values[i - 1] + t * (values[i] - values[i - 1])

    def get_config(self) -> dict:
        """Keras serialisation."""
        return {"steps": list(self.steps), "values": list(self.values)}


# ------------------------------------------------------------------------------------------ model + steps


def build_training(
    devices: strategy.Devices, plan: Plan, *, num_classes: int, sync_bn: bool, seed: int, learning_rate=None
) -> tuple[keras.Model, keras.optimizers.Optimizer]:
    """Model and optimiser, created in the strategy's scope (mirrored variables), optimiser built.

    Args:
        devices: From :func:`strategy.select`.
        plan: Batch and optimiser settings.
        num_classes: Model outputs.
        sync_bn: Batch-norm statistics over all replicas (an all-reduce per layer; with one replica it
            only changes how the variance is computed: ``E[x²] − E[x]²``).
        seed: Weight initialisation.
        learning_rate: Overrides the plan's schedule (a float or a schedule; tests use a constant).

    Returns:
        ``(model, optimizer)``; with ``mixed_float16`` the optimiser is a ``LossScaleOptimizer``.
    """
    with devices.strategy.scope():
        model = build_model(plan.model, num_classes=num_classes, sync_bn=sync_bn, seed=seed)
        optimizer: keras.optimizers.Optimizer = keras.optimizers.SGD(
            learning_rate=plan.schedule() if learning_rate is None else learning_rate,
            momentum=plan.recipe.momentum,
            nesterov=True,
        )
        if devices.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    return model, optimizer


def make_train_step(
    dist: tf.distribute.Strategy,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    plan: Plan,
    *,
    num_classes: int,
    augment_seed: int | None,
) -> Callable:
    """A ``tf.function`` running one synchronous step on every replica.

    Args:
        dist: The strategy the model was built in.
        model: The model.
        optimizer: From :func:`build_training` (it all-reduces the gradients).
        plan: Global batch, label smoothing, weight decay.
        num_classes: For the one-hot labels.
        augment_seed: Seed of the on-device augmentation; ``None`` trains on the images as they are.

    Returns:
        ``step(batch, step_number) -> (loss, correct)``: ``batch`` from a distributed dataset, the loss
        averaged over the global batch (plus the L2 term) and the number of correct training predictions,
        both summed over replicas.
    """
    weights = kernels(model)
    loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    recipe = plan.recipe

    def replica_step(images: tf.Tensor, labels: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        context = tf.distribute.get_replica_context()
        if augment_seed is None:
            x = tf.cast(images, tf.float32)
        else:
            stream = tf.cast(step, tf.int32) * plan.replicas + tf.cast(
                context.replica_id_in_sync_group, tf.int32
            )
            x = data.augment(images, tf.stack([tf.constant(augment_seed, tf.int32), stream]))
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            per_example = keras.losses.categorical_crossentropy(
                tf.one_hot(labels, num_classes),
                logits,
                from_logits=True,
                label_smoothing=recipe.label_smoothing,
            )
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=plan.global_batch)
            if recipe.weight_decay and weights:
                l2 = tf.add_n([tf.reduce_sum(tf.square(tf.cast(w, loss.dtype))) for w in weights])
                loss += tf.nn.scale_regularization_loss(0.5 * recipe.weight_decay * l2)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        if loss_scaling:
            grads = _agree_on_overflow(context, grads)
        optimizer.apply(grads, model.trainable_variables)
        correct = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
        )
        return loss, correct

    @tf.function
    def step(batch: tuple[tf.Tensor, tf.Tensor], step_number: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = batch
        loss, correct = dist.run(replica_step, args=(images, labels, step_number))
        return (
            dist.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
            dist.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None),
        )

    return step


def _agree_on_overflow(context: tf.distribute.ReplicaContext, grads: list) -> list:
    """Make every replica see a non-finite gradient when any replica has one.

    Keras' ``LossScaleOptimizer`` decides whether to skip a step from the *first* replica's gradients
    before they are all-reduced; without this, an overflow on another replica would reach the weights.
    """
    local_bad = tf.cast(
        tf.logical_not(tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])), tf.float32
    )
    any_bad = context.all_reduce(tf.distribute.ReduceOp.SUM, local_bad) > 0
    poison = tf.where(any_bad, tf.constant(np.nan, grads[0].dtype), tf.zeros([], grads[0].dtype))
    return [grads[0] + poison, *grads[1:]]


def make_predict(model: keras.Model, *, tta: bool) -> Callable:
    """``predict(uint8 images) -> float32 logits``, averaged with the mirrored images' when ``tta``."""

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.uint8)])
    def predict(images: tf.Tensor) -> tf.Tensor:
        x = tf.cast(images, tf.float32)
        logits = tf.cast(model(x, training=False), tf.float32)
        if tta:
            logits = 0.5 * (logits + tf.cast(model(tf.reverse(x, axis=[2]), training=False), tf.float32))
        return logits

    return predict


def evaluate(predict: Callable, x: np.ndarray, y: np.ndarray, keep: np.ndarray) -> tuple[float, float | None]:
    """Accuracy on all test images and on those where ``keep`` is true (``None`` when none are)."""
    predicted = np.concatenate(
        [predict(batch).numpy().argmax(-1) for batch in data.test_dataset(x, EVAL_BATCH)]
    )
    hits = predicted == y
    return float(hits.mean()), (float(hits[keep].mean()) if keep.any() else None)


def weights_fingerprint(model: keras.Model) -> str:
    """SHA-256 over every model variable (trainable or not, this worker's copy), in path order.

    Workers of a synchronous run end with the same fingerprint; metrics.json records it.
    """
    digest = hashlib.sha256()
    for variable in sorted(model.variables, key=lambda v: v.path):
        digest.update(variable.path.encode("utf-8"))
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(variable)).tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ leaks


@dataclass(frozen=True)
class LeakFreeTest:
    """Which test images the leak-free accuracy uses.

    Attributes:
        keep: Boolean mask over the test images.
        exact: Test images whose pixels equal a training image's.
        from_report: Test images named by the report's ``leak`` findings (and present in this test set).
        report: The report read, if any.
    """

    keep: np.ndarray
    exact: int
    from_report: int
    report: Path | None


def exact_duplicates(x_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """``True`` for test images whose pixels equal some training image's (byte for byte)."""
    seen = {hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in x_train}
    return np.array(
        [hashlib.blake2b(image.tobytes(), digest_size=16).digest() in seen for image in x_test], bool
    )


def leak_free_test(arrays: data.Cifar10Arrays, report: Path | None, data_root: Path | None) -> LeakFreeTest:
    """The leak-free test subset: no exact pixel copies of training images, nothing the report names."""
    exact = exact_duplicates(arrays.x_train, arrays.x_test)
    keep = ~exact
    named = 0
    if report is not None:
        listed = data.leak_free_mask(arrays.test_paths, data.read_leaks(report), data_root)
        named = int((~listed).sum())
        keep &= listed
    logger.info(
        "leak-free test set: %d of %d images (%d exact copies, %d from the report)",
        int(keep.sum()),
        len(keep),
        int(exact.sum()),
        named,
    )
    return LeakFreeTest(keep, int(exact.sum()), named, report)


# ------------------------------------------------------------------------------------------ the run


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


@dataclass
class _History:
    epochs: list[dict] = field(default_factory=list)
    images: int = 0
    seconds: float = 0.0
    first_step_seconds: float | None = None


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
    _refuse_existing_run(params)
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
    session = _Session(params, plan, devices, arrays, leak_free)
    try:
        history = session.run(progress)
        metrics = _metrics(params, plan, devices, arrays, leak_free, history, time.perf_counter() - started)
        metrics["resumed_from_epoch"] = session.resumed_from
        metrics["weights_sha256"] = weights_fingerprint(session.model)
        metrics["optimizer_steps"] = int(session.optimizer.iterations.numpy())
        if devices.is_chief:
            _write_json(params.out / METRICS_FILE, metrics)
    finally:
        session.close()
    return TrainResult(metrics, session.out, params.out / METRICS_FILE if devices.is_chief else None)


class _Session:
    """Model, optimiser, checkpoints and logs of one run on one worker."""

    def __init__(
        self,
        params: TrainParams,
        plan: Plan,
        devices: strategy.Devices,
        arrays: data.Cifar10Arrays,
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
        self.history = _History()
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

    def run(self, progress: Progress | None) -> _History:
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
                _write_json(self.out / STATE_FILE, state)
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
        order = data.epoch_order(len(self.arrays.y_train), epoch=epoch, seed=self.params.seed)

        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            local = context.num_replicas_in_sync // context.num_input_pipelines
            rows = data.replica_batches(
                order,
                global_batch=self.plan.global_batch,
                replicas=self.plan.replicas,
                first=context.input_pipeline_id * local,
                count=local,
            )
            return data.train_dataset(self.x_train, self.y_train, rows)

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


def _identity(plan: Plan, arrays: data.Cifar10Arrays) -> dict:
    """What must not change between a run and its resumption."""
    return {
        "model": plan.model,
        "global_batch": plan.global_batch,
        "train_images": len(arrays.y_train),
        "test_images": len(arrays.y_test),
        "classes": list(arrays.classes),
    }


def _refuse_existing_run(params: TrainParams) -> None:
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


def _write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _metrics(
    params: TrainParams,
    plan: Plan,
    devices: strategy.Devices,
    arrays: data.Cifar10Arrays,
    leak_free: LeakFreeTest,
    history: _History,
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
