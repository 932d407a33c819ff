"""Speed and accuracy of ``datacheck retrain`` (issue 7): head on cached bottlenecks, end to end, CIFAR-10.

Usage::

    python bench/bench_retrain.py head    --cifar /tmp/cifar --cache /tmp/c --size 96   # 10,000 vectors
    python bench/bench_retrain.py e2e     --cifar /tmp/cifar --size 224                 # 5 classes, no cache
    python bench/bench_retrain.py cifar10 --cifar /tmp/cifar --cache /tmp/c --size 224  # full train set

``--cifar`` is an unpacked CIFAR-10 JPEG tree (``train/<class>/NNNN.jpg``, ``test/<class>/…``), e.g. from
``../shared/datasets/cifar10-jpeg.tar.gz``. ``head`` and ``cifar10`` need the bottlenecks in ``--cache`` at
``--size`` (``datacheck embed CIFAR --image-size S --cache C`` fills it; they embed what is missing).

The machine these numbers come from is shared, so every part reports the load average and process CPU time
next to the wall-clock time, and runs a baseline in the same process on the same data: scikit-learn's
``LogisticRegression`` (the reference the issue quotes) for ``head`` and ``cifar10``; for ``e2e`` the time
split shows which stage the load hit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

E2E_CLASSES = ("airplane", "automobile", "bird", "cat", "deer")


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def _bottlenecks(cifar: Path, cache: Path, size: int) -> tuple[Any, Any]:
    """Labelled bottlenecks of the CIFAR tree with train/val/test roles (val: 10 % of train by hash)."""
    from datacheck.dataset import discover
    from datacheck.embed.pipeline import embed_dataset
    from datacheck.params import EmbedParams
    from datacheck.train.retrain import label_bottlenecks
    from datacheck.train.splits import SplitParams

    emb = embed_dataset(discover(cifar), EmbedParams(image_size=size, cache_dir=cache))
    return label_bottlenecks(emb, SplitParams()), emb


def _logistic_regression(
    x: np.ndarray, y: np.ndarray, xs: np.ndarray, ys: np.ndarray
) -> tuple[float, float, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def fit() -> Any:
        scaler = StandardScaler().fit(x)
        model = LogisticRegression(C=0.01, max_iter=300).fit(scaler.transform(x), y)
        return scaler, model

    wall, cpu, (scaler, model) = _timed(fit)
    return wall, cpu, float((model.predict(scaler.transform(xs)) == ys).mean())


def _head_row(name: str, data: Any, params: Any, mirrored: bool, rows: np.ndarray | None = None) -> dict:
    """Train on the training role (``rows`` of it when given) and test on the test role."""
    from datacheck.train.head import train_head
    from datacheck.train.splits import TEST, TRAIN, VAL

    use = data if mirrored else dataclasses.replace(data, mirrored=None)
    x, y = use.xy_both(TRAIN)
    if rows is not None:
        x, y = x[rows], y[rows]
    n_classes = len(data.class_names)
    wall, cpu, trained = _timed(lambda: train_head(x, y, n_classes, params, use.xy_both(VAL)))
    acc = float((use.proba(trained.model, TEST).argmax(1) == data.xy(TEST)[1]).mean())
    return {
        "variant": name,
        "images": len(x),
        "epochs": trained.epochs,
        "wall_s": wall,
        "cpu_s": cpu,
        "test_acc": acc,
    }


#: The ``cifar10`` variants: name, head parameters, whether mirror images are used.
def _cifar_variants(flip: bool) -> list[tuple[str, Any, bool]]:
    from datacheck.train.params import HeadParams

    out = [("defaults", HeadParams(), False), ("--hidden 1024", HeadParams(hidden=1024), False)]
    if flip:
        slow = HeadParams(hidden=1024, learning_rate=3e-4, patience=8)
        out += [
            ("--flip", HeadParams(), True),
            ("--flip --hidden 1024 --learning-rate 3e-4 --patience 8", slow, True),
            ("--flip --hidden 1024 --learning-rate 3e-4 --patience 8 --l2 1e-4", slow.replace(l2=1e-4), True),
        ]
    return out


def _print_rows(title: str, rows: list[dict]) -> None:
    print(f"\n{title}\n")
    print("| variant | train images | epochs | wall s | CPU s | test accuracy |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['images']:,} | {r.get('epochs', '–')} | {r['wall_s']:.1f} | "
            f"{r['cpu_s']:.1f} | {r['test_acc']:.2%} |"
        )
    print("\n" + json.dumps(rows))


def bench_head(args: argparse.Namespace) -> None:
    """Head training on 10,000 cached bottlenecks (a random sample of the training role)."""
    from datacheck.train.params import HeadParams
    from datacheck.train.splits import TEST, TRAIN

    data, _ = _bottlenecks(args.cifar, args.cache, args.size)
    n_train = len(data.rows(TRAIN))
    rows = np.random.default_rng(0).choice(n_train, size=min(args.n, n_train), replace=False)
    print(f"size {args.size} px; load average before: {_load()}")
    variants = [("datacheck head, defaults", HeadParams())]
    if args.hidden:
        variants.append(("datacheck head, --hidden 1024", HeadParams(hidden=1024)))
    out = [_head_row(name, data, params, False, rows) for name, params in variants]
    x, y = data.xy(TRAIN)
    wall, cpu, acc = _logistic_regression(x[rows], y[rows], *data.xy(TEST))
    out.append(_baseline_row(len(rows), wall, cpu, acc))
    _print_rows(f"head on {len(rows):,} cached bottlenecks ({args.size} px), load after: {_load()}", out)


def _baseline_row(n: int, wall: float, cpu: float, acc: float) -> dict:
    return {
        "variant": "baseline: sklearn LogisticRegression",
        "images": n,
        "wall_s": wall,
        "cpu_s": cpu,
        "test_acc": acc,
    }


def bench_cifar10(args: argparse.Namespace) -> None:
    """Full CIFAR-10 train set (minus the 10 % validation share), head only, test accuracy on the test set."""
    from datacheck.params import EmbedParams
    from datacheck.train.flip import mirrored_vectors
    from datacheck.train.splits import TEST, TRAIN

    data, emb = _bottlenecks(args.cifar, args.cache, args.size)
    if args.flip:
        params = EmbedParams(image_size=args.size, cache_dir=args.cache)
        wall, _, mirrored = _timed(lambda: mirrored_vectors(emb, params))
        print(f"mirror-image bottlenecks ready in {wall:.1f} s")
        data = dataclasses.replace(data, mirrored=mirrored)
    print(f"size {args.size} px; load average before: {_load()}")
    out = [_head_row(name, data, params, mirrored) for name, params, mirrored in _cifar_variants(args.flip)]
    wall, cpu, acc = _logistic_regression(*data.xy(TRAIN), *data.xy(TEST))
    out.append(_baseline_row(len(data.rows(TRAIN)), wall, cpu, acc))
    _print_rows(f"CIFAR-10 at {args.size} px, head only, load after: {_load()}", out)


def _e2e_tree(cifar: Path, root: Path, train: int, test: int) -> int:
    n = 0
    for split, count in (("train", train), ("test", test)):
        for label in E2E_CLASSES:
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                shutil.copy(cifar / split / label / f"{i:04d}.jpg", root / split / label / f"{i:04d}.jpg")
                n += 1
    return n


def bench_e2e(args: argparse.Namespace) -> None:
    """``datacheck retrain`` in a fresh process with an empty cache (no bottlenecks, no converted model)."""
    with tempfile.TemporaryDirectory(prefix="bench-retrain-") as tmp:
        root, cache, out = Path(tmp) / "data", Path(tmp) / "cache", Path(tmp) / "model"
        n = _e2e_tree(args.cifar, root, args.train_per_class, args.test_per_class)
        cmd = [
            sys.executable,
            "-m",
            "datacheck",
            "retrain",
            str(root),
            "--out",
            str(out),
            "--cache",
            str(cache),
        ]
        cmd += ["--image-size", str(args.size), "--quiet"]
        print(f"{n:,} images, 5 classes, {args.size} px; load average before: {_load()}")
        wall = time.perf_counter()
        done = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        )
        wall = time.perf_counter() - wall
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        metrics = json.loads((out / "metrics.json").read_text())
        t = metrics["timings"]
        print(f"load average after: {_load()}\n")
        print("| stage | seconds |\n|---|---:|")
        print(f"| process wall clock (import, everything) | {wall:.1f} |")
        stages = {
            "embed (all of it)": t["embed"],
            "  model load (build, convert to LiteRT, self-check)": t.get("embed_model_load", 0.0),
            "  inference": t.get("embed_model", 0.0) - t.get("embed_model_load", 0.0),
            "  waiting for decoding": t.get("embed_decode_wait", 0.0),
            "train head": t["train_head"],
            "evaluate": t["evaluate"],
            "export": t["export"],
        }
        for key, value in stages.items():
            print(f"| {key} | {value:.1f} |")
        evaluation = metrics["evaluation"]
        print(f"\ntest accuracy {evaluation['accuracy']:.2%} on {evaluation['images']} images")
        print(json.dumps({"wall_s": wall, "timings": t, "accuracy": metrics["evaluation"]["accuracy"]}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", choices=("head", "e2e", "cifar10"))
    parser.add_argument("--cifar", type=Path, required=True, help="Unpacked CIFAR-10 JPEG tree.")
    parser.add_argument(
        "--cache", type=Path, default=None, help="Cache with the bottlenecks (head, cifar10)."
    )
    parser.add_argument("--size", type=int, default=96, help="Model input size in px.")
    parser.add_argument("--n", type=int, default=10_000, help="Training bottlenecks for `head`.")
    parser.add_argument(
        "--hidden", action="store_true", help="head: also time a head with a 1024-unit hidden layer."
    )
    parser.add_argument("--flip", action="store_true", help="cifar10: also the --flip variants.")
    parser.add_argument("--train-per-class", type=int, default=600, help="e2e: training images per class.")
    parser.add_argument("--test-per-class", type=int, default=100, help="e2e: test images per class.")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    {"head": bench_head, "e2e": bench_e2e, "cifar10": bench_cifar10}[args.part](args)


if __name__ == "__main__":
    main()
