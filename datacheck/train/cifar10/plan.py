"""Batch sizes, step counts and the learning-rate schedule of a run.

The learning rate follows a piecewise-linear one-cycle schedule whose peak is scaled linearly with the
global batch: ``peak = lr × global_batch / recipe_batch``.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf

from datacheck.errors import UsageError
from datacheck.train.cifar10.models import RECIPES, Recipe
from datacheck.train.cifar10.params import TrainParams


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
