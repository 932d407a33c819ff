"""CIFAR-10 training speed: the cost of synchronous replicas, and the small model's accuracy on this CPU.

Usage::

    python bench/bench_cifar10.py replicas                   # small, global batch 128, 40 steps, 2 rounds
    python bench/bench_cifar10.py replicas --model resnet9 --batch 32 --steps 4
    python bench/bench_cifar10.py train --epochs 3           # the small model on all of CIFAR-10
    python bench/bench_cifar10.py replicas --gpus 1          # on a GPU machine: 1 GPU vs 2 logical GPUs on it

``replicas`` times the training step (augmentation and the input pipeline included) with the *same global
batch* under three strategies, each in a fresh process because TensorFlow fixes its logical devices once:

* ``one-device``: ``OneDeviceStrategy`` — no replicas, no all-reduce (what ``--gpus 0`` runs);
* ``mirrored x1``: ``MirroredStrategy`` over one device — the strategy's own overhead;
* ``mirrored x2``: ``MirroredStrategy`` over 2 logical devices (the CPU split in two, or with ``--gpus 1``
  the GPU split in two), each replica half the batch, gradients all-reduced every step.

The logical devices share the same cores, so ``x2`` cannot be faster: the difference is the price of
synchronisation. Configurations run round-robin (``--rounds``) so load changes hit them all; the table
shows the best round's wall-clock images/s and the process CPU time per image (robust to other load).

``train`` runs the real command on the whole dataset and reports its metrics.json. Both print the load
average: on a shared machine wall-clock figures are pessimistic.

``--data`` defaults to ``../shared/datasets/cifar10-jpeg.tar.gz`` beside the repository, unpacked into a
temporary folder (never into the repository).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
CONFIGS = ("one-device", "mirrored x1", "mirrored x2")


def _data_folder(given: str | None) -> Path:
    if given:
        return Path(given)
    if not ARCHIVE.is_file():
        raise SystemExit(f"no --data and no archive at {ARCHIVE}")
    target = Path(tempfile.mkdtemp(prefix="bench-cifar10-"))
    with tarfile.open(ARCHIVE, "r:gz") as tar:
        tar.extractall(target, filter="data")
    return target


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} CPUs"


# ----------------------------------------------------------------------------------------- replicas


def _measure(config: str, model: str, batch: int, steps: int, gpus: int, data_dir: str) -> dict:
    """Runs in a fresh process: time ``steps`` training steps of ``config`` after one warm-up step."""
    import numpy as np
    import tensorflow as tf

    from datacheck.embed.cache import default_cache_dir
    from datacheck.train.cifar10 import data, strategy
    from datacheck.train.cifar10.params import TrainParams
    from datacheck.train.cifar10.train import Plan, build_training, make_train_step

    replicas = 2 if config == "mirrored x2" else 1
    device = "gpu" if gpus else "cpu"
    if replicas == 2:
        if gpus:
            physical = tf.config.list_physical_devices("GPU")[0]
            tf.config.set_logical_device_configuration(
                physical, [tf.config.LogicalDeviceConfiguration(memory_limit=20_000)] * 2
            )
        else:
            strategy.split_cpu(2)
    if config == "one-device":
        dist = tf.distribute.OneDeviceStrategy(f"/{device}:0")
    else:
        dist = tf.distribute.MirroredStrategy([f"/{device}:{i}" for i in range(replicas)])
    precision = "mixed_bfloat16" if gpus else "float32"
    import keras

    keras.mixed_precision.set_dtype_policy(precision)
    devices = strategy.Devices(dist, config, replicas, (f"/{device}:0",), precision)
    arrays = data.load_cifar10(Path(data_dir), limit=batch * (steps + 1), cache_dir=default_cache_dir())
    params = TrainParams(data=Path(data_dir), model=model, batch_size=batch // replicas, epochs=1)
    plan = Plan.make(params, replicas, len(arrays.y_train))
    model_, optimizer = build_training(devices, plan, num_classes=10, sync_bn=replicas > 1, seed=0)
    step = make_train_step(dist, model_, optimizer, plan, num_classes=10, augment_seed=0)
    with tf.device("/cpu:0"):
        xs, ys = tf.constant(arrays.x_train), tf.constant(arrays.y_train)
    order = data.epoch_order(len(ys), epoch=1, seed=0)

    def dataset_fn(context):
        rows = data.replica_batches(
            order, global_batch=plan.global_batch, replicas=replicas, first=0, count=replicas
        )
        return data.train_dataset(xs, ys, rows)

    batches = iter(dist.distribute_datasets_from_function(dataset_fn))
    float(step(next(batches), tf.constant(0, tf.int64))[0])  # trace, compile, warm up
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(steps):
        loss, _ = step(next(batches), tf.constant(i + 1, tf.int64))
    float(loss)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = steps * plan.global_batch
    return {
        "config": config,
        "images_per_second": images / wall,
        "cpu_ms_per_image": 1000 * cpu / images,
        "loss_finite": bool(np.isfinite(float(loss))),
    }


def bench_replicas(args: argparse.Namespace) -> None:
    data_dir = str(_data_folder(args.data))
    best: dict[str, dict] = {}
    load_before = _load()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    if not args.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    for _ in range(args.rounds):
        for config in CONFIGS:
            spec = json.dumps([config, args.model, args.batch, args.steps, args.gpus, data_dir])
            proc = subprocess.run(
                [sys.executable, __file__, "_measure", spec], env=env, capture_output=True, text=True
            )
            if proc.returncode != 0:
                raise SystemExit(f"{config} failed:\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            if config not in best or row["images_per_second"] > best[config]["images_per_second"]:
                best[config] = row
    machine = platform.processor() or platform.machine()
    print(f"\n{datetime.date.today()}, {machine}, load before {load_before}, after {_load()}")
    print(
        f"model {args.model}, global batch {args.batch}, {args.steps} timed steps, "
        f"best of {args.rounds} rounds\n"
    )
    base = best["one-device"]["images_per_second"]
    print("| strategy | replicas × batch | img/s (wall) | vs one-device | CPU ms/img |")
    print("|---|---|---:|---:|---:|")
    for config in CONFIGS:
        row, replicas = best[config], 2 if config == "mirrored x2" else 1
        print(
            f"| {config} | {replicas} × {args.batch // replicas} | {row['images_per_second']:,.0f} | "
            f"{row['images_per_second'] / base:.2f}× | {row['cpu_ms_per_image']:.2f} |"
        )


# ----------------------------------------------------------------------------------------- train


def bench_train(args: argparse.Namespace) -> None:
    data_dir = _data_folder(args.data)
    out = Path(tempfile.mkdtemp(prefix="bench-cifar10-run-"))
    command = [
        "datacheck",
        "cifar10",
        "train",
        "--data",
        str(data_dir),
        "--model",
        "small",
        "--epochs",
        str(args.epochs),
        "--gpus",
        str(args.gpus),
        "--out",
        str(out / "run"),
        "-q",
    ]
    load_before = _load()
    started = time.perf_counter()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "datacheck", *command[1:]], env=env, check=True)
    seconds = time.perf_counter() - started
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    print(f"\n$ {' '.join(command)}")
    print(
        f"{datetime.date.today()}, load before {load_before}, after {_load()}, {seconds:.0f} s end to end\n"
    )
    print("| epoch | train loss | train acc | test acc | leak-free test acc | img/s | elapsed train s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for e in metrics["history"]:
        print(
            f"| {e['epoch']} | {e['loss']:.3f} | {e['train_accuracy']:.3f} | {e['test_accuracy']:.4f} | "
            f"{e['test_accuracy_leak_free']:.4f} | {e['images_per_second']:,.0f} | "
            f"{e['elapsed_train_seconds']:.0f} |"
        )
    print(
        f"\noverall {metrics['images_per_second']:,.0f} img/s (first step excluded), "
        f"wall {metrics['wall_seconds']:.0f} s; leak-free test set {metrics['test_images_leak_free']} of "
        f"{metrics['test_images']} images"
    )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_measure":
        print(json.dumps(_measure(*json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    replicas = sub.add_parser("replicas", help="images/s with 1 vs 2 replicas at the same global batch")
    replicas.add_argument("--model", default="small", choices=("small", "resnet9"))
    replicas.add_argument("--batch", type=int, default=128, help="global batch")
    replicas.add_argument("--steps", type=int, default=40)
    replicas.add_argument("--rounds", type=int, default=2)
    replicas.add_argument("--gpus", type=int, default=0, choices=(0, 1))
    replicas.add_argument("--data")
    train = sub.add_parser("train", help="the small model on all of CIFAR-10")
    train.add_argument("--epochs", type=int, default=3)
    train.add_argument("--gpus", type=int, default=0)
    train.add_argument("--data")
    args = parser.parse_args()
    if args.what == "replicas":
        bench_replicas(args)
    else:
        bench_train(args)


if __name__ == "__main__":
    main()
