"""Throughput and fidelity of the inference runtimes for a backbone (default: the bundled EfficientNet-Lite0).

Usage::

    python bench/bench_runtime.py                          # sizes 224,128,96, batch 64, 256 images
    python bench/bench_runtime.py --sizes 224 --batch 64 --images 128 --repeats 3
    python bench/bench_runtime.py --sizes 96 --xla          # also tf.function(jit_compile=True): very slow

Prints a Markdown table: per size and variant, images/s (best of ``--repeats`` timed passes over the same
images, after one warm-up batch; the variants of a size run round-robin, so load changes hit them all),
CPU time per image (process time, all threads: robust to other load on the machine, blind to parallel
speed-up) and the largest cosine distance of its bottlenecks from the Keras reference (eager
``model(x, training=False)``). Inputs are real photographs from scikit-image, resized and jittered.

Variants:

* ``keras predict``: a naive loop calling ``model.predict(batch)`` per batch.
* ``tf.function``: :class:`datacheck.embed.runtime.TFBackend` (what ``runtime="tf"`` runs).
* ``litert xnnpack tN``: :class:`datacheck.embed.runtime.LiteRTBackend` (what ``runtime="litert"`` runs),
  fp32 flatbuffer, XNNPACK, N threads.
* ``litert xnnpack fp16-weights``: weights stored as float16 in the flatbuffer (compute stays fp32).
* ``litert xnnpack int8 dyn-range``: dynamic-range int8 weight quantisation.
* ``litert no-xnnpack``: the builtin TFLite kernels without the default XNNPACK delegate.
* ``litert xnnpack batch B``: the default model at other batch sizes.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from datacheck.embed.runtime import (
    LiteRTBackend,
    TFBackend,
    available_cores,
    convert_to_tflite,
    keras_backbone,
    min_cosine,
)

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass
class Row:
    size: int
    variant: str
    img_per_s: float
    cpu_ms_per_img: float
    max_cos_dist: float
    max_rel_err: float


def real_images(size: int, n: int) -> np.ndarray:
    """``n`` uint8 images from scikit-image's sample photographs, resized, flipped and shifted."""
    from PIL import Image
    from skimage import data

    base = [
        data.chelsea(),
        data.coffee(),
        data.astronaut(),
        data.rocket(),
        data.camera(),
        data.hubble_deep_field(),
    ]
    base = [np.stack([b] * 3, -1) if b.ndim == 2 else b[..., :3] for b in base]
    rng = np.random.default_rng(0)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = base[i % len(base)]
        h, w = img.shape[:2]
        s = int(min(h, w) * rng.uniform(0.6, 1.0))
        y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
        crop = Image.fromarray(img[y : y + s, x : x + s]).resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(crop)[:, ::-1] if rng.random() < 0.5 else np.asarray(crop)
    return out


def _in_batches(fn: Runner, x: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


@dataclass
class Variant:
    name: str
    fn: Runner
    batch: int
    best_s: float = float("inf")
    best_cpu_s: float = float("inf")
    out: np.ndarray | None = None


def measure(variants: list[Variant], x: np.ndarray, repeats: int) -> None:
    """Time every variant over all of ``x``, round-robin, keeping each one's best pass.

    Interleaving the variants spreads any change in machine load over all of them, instead of
    penalising whichever happened to run while something else was busy.
    """
    for v in variants:
        v.fn(x[: v.batch])  # warm-up: tracing, allocation, XNNPACK weight packing
    for _ in range(repeats):
        for v in variants:
            t0, c0 = time.perf_counter(), time.process_time()
            v.out = _in_batches(v.fn, x, v.batch)
            v.best_s = min(v.best_s, time.perf_counter() - t0)
            v.best_cpu_s = min(v.best_cpu_s, time.process_time() - c0)


def tflite_runner(content: bytes, *, threads: int, xnnpack: bool = True) -> Runner:
    """A bare interpreter (for the variants the library does not expose); resizes to each batch."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_content=content, num_threads=threads, experimental_op_resolver_type=resolver)
    inp = interp.get_input_details()[0]["index"]
    out = next(d["index"] for d in interp.get_output_details() if d["shape_signature"][-1] != 1000)
    state = {"n": -1}

    def run(batch: np.ndarray) -> np.ndarray:
        if len(batch) != state["n"]:
            interp.resize_tensor_input(inp, list(batch.shape))
            interp.allocate_tensors()
            state["n"] = len(batch)
        interp.set_tensor(inp, batch.astype(np.float32))
        interp.invoke()
        return interp.get_tensor(out).copy()

    return run


def bench_size(args: argparse.Namespace, size: int) -> list[Row]:
    built = keras_backbone(args.model, size)
    model = built.model
    x = real_images(size, args.images)
    reference = _in_batches(
        lambda b: np.asarray(model(b.astype(np.float32), training=False)[0]), x, args.batch
    )
    variants: list[Variant] = []

    def add(variant: str, fn: Runner, batch: int | None = None) -> None:
        variants.append(Variant(variant, fn, batch or args.batch))

    add("keras predict", lambda b: np.asarray(model.predict(b.astype(np.float32), verbose=0)[0]))
    tf_backend = TFBackend(built, cache_tag="bench", batch_size=args.batch)
    add("tf.function", lambda b: tf_backend(b)[0])
    if args.xla:
        add("tf.function jit_compile (XLA)", xla_runner(model, size))
    fp32 = convert_to_tflite(model)
    cores = available_cores()
    for threads in sorted({cores, 1}, reverse=True):
        lite = LiteRTBackend(fp32, model_id=args.model, image_size=size, cache_tag="b", threads=threads)
        add(f"litert xnnpack t{threads}", lambda b, lite=lite: lite(b)[0])
    for batch in (1, 16):
        lite = LiteRTBackend(fp32, model_id=args.model, image_size=size, cache_tag="b", batch_size=batch)
        add(f"litert xnnpack t{cores} batch {batch}", lambda b, lite=lite: lite(b)[0], batch=batch)
    add(f"litert no-xnnpack t{cores}", tflite_runner(fp32, threads=cores, xnnpack=False))
    add(
        f"litert xnnpack t{cores} fp16-weights",
        tflite_runner(convert_to_tflite(model, fp16_weights=True), threads=cores),
    )
    add(f"litert xnnpack t{cores} int8 dyn-range", tflite_runner(int8_dynamic(model), threads=cores))
    measure(variants, x, args.repeats)
    rows = [_row(size, v, len(x), reference) for v in variants]
    for r in rows:
        print(
            f"  {size:4d} px  {r.variant:36s} {r.img_per_s:8.1f} img/s  {r.cpu_ms_per_img:6.1f} CPU ms/img  "
            f"max cos dist {r.max_cos_dist:.1e}"
        )
    return rows


def _row(size: int, v: Variant, n: int, reference: np.ndarray) -> Row:
    assert v.out is not None
    rel = float(np.abs(v.out - reference).max() / np.abs(reference).max())
    return Row(size, v.name, n / v.best_s, 1e3 * v.best_cpu_s / n, 1.0 - min_cosine(v.out, reference), rel)


def xla_runner(model: object, size: int) -> Runner:
    import tensorflow as tf

    spec = [tf.TensorSpec([None, size, size, 3], tf.float32)]
    fn = tf.function(lambda b: model(b, training=False)[0], input_signature=spec, jit_compile=True)  # type: ignore[operator]
    return lambda b: np.asarray(fn(b.astype(np.float32)))


def int8_dynamic(model: object) -> bytes:
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp + "/sm", format="tf_saved_model", verbose=False)  # type: ignore[attr-defined]
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp + "/sm")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return bytes(converter.convert())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--sizes", default="224,128,96", help="comma-separated input sizes")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=256, help="images per timed pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best is reported")
    parser.add_argument("--xla", action="store_true", help="also time tf.function(jit_compile=True)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    machine = f"{platform.processor() or platform.machine()}, {available_cores()} cores"
    print(
        f"# {datetime.date.today()}  {machine}, load avg {os.getloadavg()[0]:.1f}; model {args.model}, "
        f"batch {args.batch}, {args.images} images, best of {args.repeats}",
        flush=True,
    )
    rows = [row for size in sizes for row in bench_size(args, size)]
    base = {r.size: r.img_per_s for r in rows if r.variant == "tf.function"}
    print(
        "\n| size | variant | img/s (wall) | vs tf.function | CPU ms/img | "
        "max cosine distance | max abs error / max abs |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        speedup = r.img_per_s / base[r.size]
        print(
            f"| {r.size} | {r.variant} | {r.img_per_s:.1f} | {speedup:.2f}× | {r.cpu_ms_per_img:.1f} "
            f"| {r.max_cos_dist:.1e} | {r.max_rel_err:.1e} |"
        )
    print(f"\nload avg at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
