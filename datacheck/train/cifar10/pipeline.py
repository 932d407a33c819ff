"""The input pipeline (tf.data) and the on-device augmentation.

The pipeline only gathers uint8 batches on the host and prefetches them; :func:`augment` (random crop with
4 px reflect padding, horizontal flip) runs inside the replica step, on the accelerator.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

#: Pixels of padding around each image before the random crop.
CROP_PAD = 4


def epoch_order(n: int, *, epoch: int, seed: int) -> np.ndarray:
    """The shuffled order of the training images in one epoch; the same on every worker and on resume."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def replica_batches(
    order: np.ndarray, *, global_batch: int, replicas: int, first: int, count: int
) -> np.ndarray:
    """Split an epoch into steps of ``global_batch`` and keep the slices of replicas ``first…first+count-1``.

    Args:
        order: :func:`epoch_order`; the last incomplete global batch is dropped.
        global_batch: Images per step over all replicas.
        replicas: Replicas in sync (all workers).
        first: Global index of this input pipeline's first replica.
        count: Replicas this pipeline feeds.

    Returns:
        ``int64[steps × count, global_batch / replicas]``: per step, one row per local replica, in
        replica order (the order in which a distributed dataset hands batches to its devices).
    """
    per_replica = global_batch // replicas
    steps = len(order) // global_batch
    grid = order[: steps * global_batch].reshape(steps, replicas, per_replica)
    return grid[:, first : first + count].reshape(steps * count, per_replica)


def train_dataset(x: tf.Tensor, y: tf.Tensor, index_batches: np.ndarray) -> tf.data.Dataset:
    """uint8 image batches and int32 labels gathered on the host from index rows, prefetched."""
    rows = tf.data.Dataset.from_tensor_slices(index_batches)
    batches = rows.map(
        lambda idx: (tf.gather(x, idx), tf.gather(y, idx)), num_parallel_calls=tf.data.AUTOTUNE
    )
    return batches.prefetch(tf.data.AUTOTUNE)


def test_dataset(x: np.ndarray, batch: int) -> tf.data.Dataset:
    """The test images in order, in uint8 batches, prefetched."""
    return tf.data.Dataset.from_tensor_slices(x).batch(batch).prefetch(tf.data.AUTOTUNE)


def augment(images: tf.Tensor, seed: tf.Tensor, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """Random crop (``CROP_PAD`` px reflect padding) and horizontal flip, per image, on the device.

    Args:
        images: ``[B, 32, 32, 3]`` batch (any numeric dtype).
        seed: ``int32[2]`` stateless seed; the same seed gives the same crops and flips.
        dtype: Output dtype.

    Returns:
        The augmented batch, ``dtype``.
    """
    x = tf.cast(images, dtype)
    batch, size = tf.shape(x)[0], x.shape[1]
    padded = tf.pad(x, [[0, 0], [CROP_PAD, CROP_PAD], [CROP_PAD, CROP_PAD], [0, 0]], mode="REFLECT")
    offsets = tf.random.stateless_uniform([batch, 2], seed, 0, 2 * CROP_PAD + 1, dtype=tf.int32)
    rows = offsets[:, :1] + tf.range(size)[None, :]
    cols = offsets[:, 1:] + tf.range(size)[None, :]
    x = tf.gather(padded, rows, axis=1, batch_dims=1)
    x = tf.gather(x, cols, axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform([batch], seed + 1) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
