"""Devices and ``tf.distribute`` strategy: CPU, one GPU, mirrored GPUs, or several machines.

=====================  ===============================================  =======================
``--gpus``             strategy                                         replicas
=====================  ===============================================  =======================
``0``                  ``OneDeviceStrategy("/cpu:0")``                  1
``0 --cpu-replicas N`` ``MirroredStrategy`` over N logical CPU devices  N
``1``                  ``OneDeviceStrategy("/gpu:0")``                  1
``N`` / ``all``        ``MirroredStrategy`` over the first N / all GPUs N
``--multi-worker``     ``MultiWorkerMirroredStrategy`` from TF_CONFIG   Σ local devices
=====================  ===============================================  =======================

Mirrored strategies are synchronous: each replica gets a slice of the global batch, gradients are summed by
an all-reduce, and every replica applies the same update to its copy of the variables in the same step.

:func:`select` must run before anything initialises TensorFlow's devices (it may hide GPUs or split the
CPU into logical devices), and before any other TensorFlow op for ``MultiWorkerMirroredStrategy``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import keras
import tensorflow as tf

from datacheck.errors import UsageError
from datacheck.train.cifar10.params import TrainParams

logger = logging.getLogger(__name__)

#: Compute capability from which GPUs run bfloat16 at full speed (Ampere and later).
BF16_MIN_COMPUTE_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class Devices:
    """The strategy a run uses and what it spans.

    Attributes:
        strategy: The ``tf.distribute`` strategy; build variables in ``strategy.scope()``.
        kind: ``"cpu"``, ``"gpu"``, ``"mirrored"`` or ``"multi_worker"``.
        replicas: Replicas in sync over all workers.
        devices: This worker's devices.
        precision: The Keras dtype policy set (``"float32"``, ``"mixed_float16"``, ``"mixed_bfloat16"``).
        worker: This worker's index (0 unless multi-worker).
        workers: Number of workers.
        is_chief: Whether this worker writes metrics, logs and the checkpoints others resume from.
    """

    strategy: tf.distribute.Strategy
    kind: str
    replicas: int
    devices: tuple[str, ...]
    precision: str
    worker: int = 0
    workers: int = 1
    is_chief: bool = True

    def describe(self) -> str:
        """One line, e.g. ``"mirrored: 2 replicas on /cpu:0, /cpu:1 (float32)"``."""
        where = ", ".join(self.devices)
        workers = f", worker {self.worker} of {self.workers}" if self.workers > 1 else ""
        return f"{self.kind}: {self.replicas} replica(s) on {where}{workers} ({self.precision})"


def select(params: TrainParams) -> Devices:
    """Configure devices and precision for ``params`` and build the strategy.

    Args:
        params: Uses ``gpus``, ``cpu_replicas``, ``multi_worker`` and ``precision``.

    Returns:
        The devices; the global Keras dtype policy is set to their precision.

    Raises:
        UsageError: More GPUs asked for than visible, no ``TF_CONFIG`` for multi-worker, or the CPU split
            asked for after TensorFlow initialised its devices.
    """
    if params.gpus == 0:
        _hide_gpus()
        if params.cpu_replicas > 1:
            split_cpu(params.cpu_replicas)
    gpus = _gpus(params.gpus)
    if params.multi_worker:
        devices = _multi_worker(gpus, params.precision)
    elif params.cpu_replicas > 1:
        names = tuple(f"/cpu:{i}" for i in range(params.cpu_replicas))
        strategy = tf.distribute.MirroredStrategy(list(names))
        devices = Devices(strategy, "mirrored", len(names), names, _precision(params.precision, []))
    elif not gpus:
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        devices = Devices(strategy, "cpu", 1, ("/cpu:0",), _precision(params.precision, []))
    elif len(gpus) == 1:
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0")
        devices = Devices(strategy, "gpu", 1, ("/gpu:0",), _precision(params.precision, gpus))
    else:
        names = tuple(f"/gpu:{i}" for i in range(len(gpus)))
        strategy = tf.distribute.MirroredStrategy(list(names))
        devices = Devices(strategy, "mirrored", len(names), names, _precision(params.precision, gpus))
    keras.mixed_precision.set_dtype_policy(devices.precision)
    logger.info("devices: %s", devices.describe())
    return devices


def split_cpu(n: int) -> None:
    """Present the CPU as ``n`` logical devices ``/cpu:0…/cpu:{n-1}`` (before TensorFlow initialises them).

    Raises:
        UsageError: TensorFlow already initialised fewer CPU devices.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) < n:
            raise UsageError(
                f"cannot split the CPU into {n} devices: TensorFlow already initialised its devices "
                "(start a fresh process)"
            ) from None


def _hide_gpus() -> None:
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        logger.info("TensorFlow already initialised its GPUs; the model is placed on the CPU explicitly")


def _gpus(wanted: int | str) -> list:
    visible = tf.config.list_physical_devices("GPU")
    if wanted == "all":
        if not visible:
            logger.info("no GPU visible: training on the CPU")
        return visible
    assert isinstance(wanted, int)
    if wanted > len(visible):
        raise UsageError(f"--gpus {wanted} asks for more GPUs than the {len(visible)} visible")
    if 0 < wanted < len(visible):
        try:
            tf.config.set_visible_devices(visible[:wanted], "GPU")
        except RuntimeError:
            logger.info("TensorFlow already initialised its GPUs; using the first %d", wanted)
    return visible[:wanted]


def _precision(wanted: str, gpus: list) -> str:
    if wanted != "auto":
        return wanted
    if not gpus:
        return "float32"
    capabilities = [
        tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0)) for g in gpus
    ]
    return "mixed_bfloat16" if min(capabilities) >= BF16_MIN_COMPUTE_CAPABILITY else "mixed_float16"


def read_tf_config() -> dict:
    """The parsed ``TF_CONFIG`` cluster description.

    Raises:
        UsageError: Unset, not JSON, or without ``cluster`` and ``task``.
    """
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise UsageError(
            "--multi-worker needs the TF_CONFIG environment variable: "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}} '
            "(see docs/cifar10.md)"
        )
    try:
        config = json.loads(text)
    except ValueError as err:
        raise UsageError(f"TF_CONFIG is not valid JSON: {err}") from None
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        raise UsageError("TF_CONFIG needs a 'cluster' and a 'task' entry (see docs/cifar10.md)")
    return config


def _multi_worker(gpus: list, precision: str) -> Devices:
    config = read_tf_config()
    cluster, task = config["cluster"], config["task"]
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    task_type, index = task.get("type", "worker"), int(task.get("index", 0))
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    is_chief = task_type == "chief" or (task_type == "worker" and index == 0 and "chief" not in cluster)
    worker = index + (1 if "chief" in cluster and task_type == "worker" else 0)
    local = tuple(f"/gpu:{i}" for i in range(len(gpus))) or ("/cpu:0",)
    return Devices(
        strategy,
        "multi_worker",
        strategy.num_replicas_in_sync,
        local,
        _precision(precision, gpus),
        worker=worker,
        workers=workers,
        is_chief=is_chief,
    )
