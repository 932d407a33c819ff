"""Synchronous data-parallel training on the CPU, for real: MirroredStrategy and MultiWorkerMirroredStrategy.

TensorFlow fixes its logical devices when it first initialises them, so every scenario runs in a fresh
Python process: this file is also the script those processes run (``python tests/test_distributed.py
MODE …``), and the tests assert on the JSON the scripts write.

* ``mirrored``: the CPU split into 2 logical devices.
  - The ``small`` model trains 3 steps (augmentation on, through the real input pipeline); after *each*
    step every variable — weights and optimiser slots — is bit-identical on both replicas. Again in
    ``mixed_float16`` with the loss-scale optimiser (the GPU path before bfloat16 hardware).
  - Equivalence, BN-free: one step with 2 replicas × 8 images equals one step with 1 replica × 16 images
    (``small`` has no batch norm, so the only difference is the order of the gradient sums).
  - Equivalence with batch norm: ``resnet9`` with *synchronised* batch norm, 2 × 4 vs 1 × 8, including
    the moving statistics; the same comparison without synchronisation differs, which is why the
    multi-replica path synchronises batch norm.
  - Both equivalences run in float32 (what training uses) and in float64 (the same maths with rounding
    2^29 times smaller). The bound comes from the arithmetic (:func:`_rounding_bound`), not from one CPU's
    output: other kernels sum in another order, and float32 batch norm amplifies that (1.6e-4 on an
    AVX-512 Xeon, 4.8e-7 on an AMD EPYC, for the same step). Float64 shows that the maths are identical
    (~1e-15) and that dropping the synchronisation is caught by many orders of magnitude.
* ``worker``: one of two local workers (TF_CONFIG on 127.0.0.1 ports) running ``train`` with
  ``multi_worker=True``; both must end with the same weights fingerprint.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240


# ----------------------------------------------------------------------------------------- scripts


def _mirrored_script(out: Path) -> None:
    import dataclasses

    import keras
    import tensorflow as tf

    from datacheck.train.cifar10 import strategy
    from datacheck.train.cifar10.params import TrainParams

    two = strategy.select(TrainParams(data=Path("."), gpus=0, cpu_replicas=2))
    one = strategy.Devices(tf.distribute.OneDeviceStrategy("/cpu:0"), "cpu", 1, ("/cpu:0",), "float32")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 64).astype(np.int32)
    result = {
        "replicas": two.replicas,
        "devices": list(two.devices),
        "per_step": _per_step_identity(two, x, y),
    }
    keras.mixed_precision.set_dtype_policy("mixed_float16")  # the loss-scaled GPU path, run on the CPU
    result["per_step_float16"] = _per_step_identity(
        dataclasses.replace(two, precision="mixed_float16"), x, y, 2
    )
    for precision in ("float32", "float64"):  # float64: the same maths with rounding 2^29 times smaller
        keras.mixed_precision.set_dtype_policy(precision)
        keras.config.set_floatx(precision)
        result[precision] = {
            "small": _equivalence(one, two, "small", False, 16, x, y),
            "resnet9_sync_bn": _equivalence(one, two, "resnet9", True, 8, x, y),
            "resnet9": _equivalence(one, two, "resnet9", False, 8, x, y),
        }
    out.write_text(json.dumps(result))


def _plan(model: str, per_replica: int, replicas: int, n: int):
    from datacheck.train.cifar10.params import TrainParams
    from datacheck.train.cifar10.train import Plan

    params = TrainParams(data=Path("."), model=model, batch_size=per_replica, epochs=1)
    return Plan.make(params, replicas, n)


def _replica_values(dist, variables) -> list[list[np.ndarray]]:
    """Per variable, its value on each replica."""
    return [[np.asarray(t) for t in dist.experimental_local_results(v.value)] for v in variables]


def _per_step_identity(devices, x, y, steps: int = 3) -> list[dict]:
    """``steps`` steps of ``small`` (augmented, real input pipeline), comparing replicas after each."""
    import tensorflow as tf

    from datacheck.train.cifar10 import data
    from datacheck.train.cifar10.train import build_training, make_train_step

    plan = _plan("small", 8, devices.replicas, len(y))
    model, optimizer = build_training(devices, plan, num_classes=10, sync_bn=True, seed=1)
    step = make_train_step(devices.strategy, model, optimizer, plan, num_classes=10, augment_seed=7)
    with tf.device("/cpu:0"):
        xs, ys = tf.constant(x), tf.constant(y)
    order = data.epoch_order(len(y), epoch=1, seed=0)

    def dataset_fn(context):
        rows = data.replica_batches(order, global_batch=plan.global_batch, replicas=2, first=0, count=2)
        return data.train_dataset(xs, ys, rows)

    batches = devices.strategy.distribute_datasets_from_function(dataset_fn)
    variables = list(model.variables) + list(optimizer.variables)
    records = []
    for i, batch in enumerate(batches):
        if i == steps:
            break
        loss, _ = step(batch, tf.constant(i, tf.int64))
        per_replica = _replica_values(devices.strategy, variables)
        records.append(
            {
                "step": i,
                "loss": float(loss),
                "variables": len(variables),
                "copies": min(len(v) for v in per_replica),
                "max_abs_difference": max(float(np.max(np.abs(v[0] - v[1]))) for v in per_replica),
                "bit_identical": all(np.array_equal(v[0], v[1]) for v in per_replica),
            }
        )
    return records


def _one_step(devices, model_name: str, sync_bn: bool, per_replica: int, x, y, init):
    """One step on ``x[:per_replica × replicas]`` from variables ``init`` (or fresh ones), no augmentation.

    Returns:
        The starting variables, the variable paths, and per variable its value on each replica.
    """
    import tensorflow as tf

    from datacheck.train.cifar10.train import build_training, make_train_step

    n = per_replica * devices.replicas
    plan = _plan(model_name, per_replica, devices.replicas, n)
    model, optimizer = build_training(
        devices, plan, num_classes=10, sync_bn=sync_bn, seed=3, learning_rate=0.05
    )
    if init is not None:
        for variable, value in zip(model.variables, init, strict=True):
            variable.assign(value)
    start = [np.asarray(v.numpy()) for v in model.variables]
    step = make_train_step(devices.strategy, model, optimizer, plan, num_classes=10, augment_seed=None)
    images, labels = x[:n], y[:n]

    def value_fn(context):
        sl = slice(
            context.replica_id_in_sync_group * per_replica,
            (context.replica_id_in_sync_group + 1) * per_replica,
        )
        return tf.constant(images[sl]), tf.constant(labels[sl])

    step(devices.strategy.experimental_distribute_values_from_function(value_fn), tf.constant(0, tf.int64))
    return start, [v.path for v in model.variables], _replica_values(devices.strategy, model.variables)


def _equivalence(one, two, model_name: str, sync_bn: bool, batch: int, x, y) -> dict:
    """1 replica × ``batch`` vs 2 replicas × ``batch / 2`` from the same weights on the same images.

    With batch norm, the reference uses the synchronised layer's moment formula (E[x²] − E[x]²; over one
    replica the all-reduce is the identity), so only the order of the sums differs.
    """
    start, names, single = _one_step(one, model_name, True, batch, x, y, None)
    _, _, mirrored = _one_step(two, model_name, sync_bn, batch // 2, x, y, start)
    diffs = {
        name: float(np.max(np.abs(s[0] - m[0]))) for name, s, m in zip(names, single, mirrored, strict=True)
    }
    worst = max(diffs, key=diffs.get)
    return {
        "max_abs_difference": diffs[worst],
        "worst_variable": worst,
        "moving_stats_difference": max([d for n, d in diffs.items() if "moving" in n], default=0.0),
        "largest_weight": max(float(np.max(np.abs(s[0]))) for s in single),
        "largest_update": max(float(np.max(np.abs(s[0] - w))) for s, w in zip(single, start, strict=True)),
        "replicas_identical": all(np.array_equal(m[0], m[1]) for m in mirrored),
    }


def _worker_script(data_dir: Path, out_dir: Path, result: Path) -> None:
    from datacheck.train.cifar10.params import TrainParams
    from datacheck.train.cifar10.train import train

    params = TrainParams(
        data=data_dir,
        model="small",
        epochs=1,
        batch_size=16,
        gpus=0,
        multi_worker=True,
        out=out_dir,
        cache_dir=out_dir.parent / f"cache-{os.environ['WORKER_INDEX']}",
    )
    outcome = train(params)
    result.write_text(json.dumps({**outcome.metrics, "metrics_path": str(outcome.metrics_path)}))


# ----------------------------------------------------------------------------------------- helpers


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    return env


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _write_fake_batches(folder: Path, per_batch: int, seed: int = 0) -> None:
    """A tiny ``cifar-10-batches-py`` in the original format (generated pixels, class-dependent tint)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [n.encode() for n in names]}, handle, protocol=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, per_batch)
        pixels = rng.integers(0, 128, (per_batch, 3, 32, 32)) + (labels * 12)[:, None, None, None]
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in labels],
            b"data": pixels.astype(np.uint8).reshape(per_batch, 3072),
            b"filenames": [f"{name}_{i:04d}.png".encode() for i in range(per_batch)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)


# ----------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module", autouse=True)
def mirrored_process(tmp_path_factory):
    """The ``mirrored`` script, started when the module starts so it runs while the worker test does."""
    out = tmp_path_factory.mktemp("mirrored") / "result.json"
    args = [sys.executable, __file__, "mirrored", str(out)]
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    yield proc, out
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def mirrored(mirrored_process) -> dict:
    proc, out = mirrored_process
    _, stderr = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, stderr[-4000:]
    return json.loads(out.read_text())


def test_two_workers_with_tf_config_end_with_identical_weights(tmp_path):
    data_dir = tmp_path / "cifar-10-batches-py"
    _write_fake_batches(data_dir, per_batch=32)
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, results = [], []
    for index in range(2):
        env = _env()
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        env["WORKER_INDEX"] = str(index)
        results.append(tmp_path / f"worker{index}.json")
        args = [sys.executable, __file__, "worker", str(data_dir), str(tmp_path / "run"), str(results[-1])]
        procs.append(
            subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    errors = []
    try:
        for index, proc in enumerate(procs):
            _, stderr = proc.communicate(timeout=TIMEOUT_S)
            if proc.returncode != 0:
                errors.append(f"worker {index} exited {proc.returncode}:\n{stderr[-3000:]}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert not errors, "\n".join(errors)
    chief, other = (json.loads(r.read_text()) for r in results)
    assert chief["devices"]["strategy"] == "multi_worker" and chief["devices"]["workers"] == 2
    assert chief["devices"]["replicas"] == 2
    assert chief["batch"]["global"] == 32 and chief["batch"]["steps_per_epoch"] == 5  # 160 images / 32
    assert chief["weights_sha256"] == other["weights_sha256"]
    # only the chief writes metrics, checkpoints and logs
    assert Path(chief["metrics_path"]).is_file() and other["metrics_path"] == "None"
    assert (tmp_path / "run" / "checkpoints").is_dir() and chief["test_accuracy"] is not None


def test_two_logical_cpus_are_two_replicas(mirrored):
    assert mirrored["replicas"] == 2
    assert mirrored["devices"] == ["/cpu:0", "/cpu:1"]


@pytest.mark.parametrize("run", ["per_step", "per_step_float16"])
def test_replicas_are_identical_after_every_step(mirrored, run):
    steps = mirrored[run]
    assert len(steps) == (3 if run == "per_step" else 2)
    for record in steps:
        assert record["copies"] == 2, "variables should be mirrored on both logical devices"
        assert record["bit_identical"], record
        assert np.isfinite(record["loss"])


#: Rounding bound for one step. A sum of n floating-point terms is off by at most n·eps relative to the
#: sum of magnitudes (Higham, *Accuracy and Stability of Numerical Algorithms*, §4.2), whatever order a
#: CPU's kernels add in; batch norm's backward pass divides by the batch's standard deviation, which may
#: amplify that error further, allowed for by this factor.
CONDITIONING = 10.0

#: Per model: the global batch of the equivalence step (see ``_mirrored_script``).
EQUIVALENCE_BATCH = {"small": 16, "resnet9_sync_bn": 8, "resnet9": 8}


def _rounding_bound(record: dict, precision: str, run: str) -> float:
    """Largest difference that summation order alone can explain for this step, in ``precision``.

    The longest sum in a step is a convolution kernel's gradient over batch × 32 × 32 positions; the
    weights change by at most ``largest_update``, so the two step results can differ by at most about
    n·eps of it (times the batch-norm conditioning allowance).
    """
    terms = EQUIVALENCE_BATCH[run] * 32 * 32
    return CONDITIONING * terms * float(np.finfo(precision).eps) * record["largest_update"]


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("run", ["small", "resnet9_sync_bn"])
def test_two_replicas_half_batch_equal_one_replica_full_batch(mirrored, precision, run):
    """``small`` has no batch norm; ``resnet9`` synchronises it. Only the order of the sums may differ."""
    record = mirrored[precision][run]
    assert record["replicas_identical"], "replicas must hold the same variables (moving statistics too)"
    assert record["largest_update"] > 1e-4, "the step should really change the weights"
    assert record["max_abs_difference"] <= _rounding_bound(record, precision, run), record


def test_without_synchronised_batch_norm_the_steps_differ_beyond_rounding(mirrored):
    """The equivalence test can fail: each replica normalising with its own half batch is other maths."""
    for precision in ("float32", "float64"):
        local = mirrored[precision]["resnet9"]
        assert not local["replicas_identical"]
    # In float64 the rounding bound is ~1e-11 of a ~0.3 update; unsynchronised statistics move it by ~1e-2.
    local = mirrored["float64"]["resnet9"]
    assert local["max_abs_difference"] > 1e3 * _rounding_bound(local, "float64", "resnet9"), local
    assert local["moving_stats_difference"] > 1e3 * _rounding_bound(local, "float64", "resnet9"), local


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "mirrored":
        _mirrored_script(Path(rest[0]))
    elif mode == "worker":
        _worker_script(Path(rest[0]), Path(rest[1]), Path(rest[2]))
    else:
        raise SystemExit(f"unknown mode {mode}")
