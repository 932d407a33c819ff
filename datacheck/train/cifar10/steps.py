"""Model and optimiser in the strategy's scope, the synchronous replica step, prediction and evaluation.

The step's maths (global-batch loss, all-reduced gradients, on-device augmentation) are described in
:mod:`datacheck.train.cifar10.train`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from datacheck.train.cifar10 import pipeline, strategy
from datacheck.train.cifar10.models import build_model, kernels
from datacheck.train.cifar10.plan import Plan

#: Test images per forward pass during evaluation.
EVAL_BATCH = 500


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
            x = pipeline.augment(images, tf.stack([tf.constant(augment_seed, tf.int32), stream]))
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
        [predict(batch).numpy().argmax(-1) for batch in pipeline.test_dataset(x, EVAL_BATCH)]
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
