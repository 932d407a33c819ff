"""Embedding throughput: bare model forward vs the full pipeline (decode + embed + cache), same run.

    python bench/bench_embed.py [--data DIR] [--limit N] [--sizes 224,96] [--runtimes litert,tf]

Without ``--data`` it unpacks ``../shared/datasets/cifar10-jpeg.tar.gz`` to a temp folder and uses its
``test/`` split (10,000 images). For each size and runtime it prints:

* ``bare``: the backend alone on pre-decoded uint8 arrays (the ceiling);
* ``pipeline``: ``embed_dataset`` from an empty cache (read + hash + decode + forward + cache writes);
* ``cached``: the same command again, in a fresh process, served from the cache (includes start-up);
* peak RSS of the pipeline process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child import run_child

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def unpack_cifar(target: Path) -> Path:
    if not (target / "test").exists():
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(target, filter="data")
    return target


def _child(args: argparse.Namespace) -> None:
    """Run one measurement in this (fresh) process and print a JSON line."""
    import numpy as np

    from datacheck.dataset import discover
    from datacheck.embed.pipeline import decode_batch, embed_dataset
    from datacheck.embed.runtime import load_backend
    from datacheck.params import EmbedParams

    data, size, cache = Path(args.data), int(args.size), Path(args.cache)
    dataset = discover(data)
    if args.limit:
        dataset = type(dataset)(dataset.root, dataset.layout, dataset.records[: args.limit], ())
    out: dict[str, float | str] = {}
    if args.mode == "bare":
        backend = load_backend(args.model, size, runtime=args.runtime, artifact_dir=cache / "artifacts")
        items = [(r.path, r.abs_path.read_bytes()) for r in dataset.records]
        pixels = np.stack([d.pixels for d in decode_batch(items, size) if not isinstance(d, str)])
        backend(pixels[: args.batch])  # warm-up
        start = time.perf_counter()
        for i in range(0, len(pixels), args.batch):
            backend(pixels[i : i + args.batch])
        out["img_s"] = len(pixels) / (time.perf_counter() - start)
        out["runtime"] = backend.runtime
    else:
        params = EmbedParams(
            model=args.model, image_size=size, runtime=args.runtime, cache_dir=cache, batch_size=args.batch
        )
        start = time.perf_counter()
        emb = embed_dataset(dataset, params)
        seconds = time.perf_counter() - start
        out.update(
            seconds=seconds,
            img_s=len(emb.records) / seconds,
            computed=emb.computed,
            cached=emb.cached,
            runtime=emb.runtime,
            model_load=emb.timings.get("model_load", 0.0),
        )
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def _run(mode: str, data: Path, size: int, runtime: str, cache: Path, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--data",
        str(data),
        "--size",
        str(size),
        "--runtime",
        runtime,
        "--cache",
        str(cache),
        "--batch",
        str(args.batch),
        "--model",
        args.model,
        "--limit",
        str(args.limit or 0),
    ]
    return run_child(cmd)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--sizes", default="224,96")
    parser.add_argument("--runtimes", default="litert,tf")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--child")
    parser.add_argument("--size")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--cache")
    args = parser.parse_args()
    if args.child:
        args.mode = args.child
        _child(args)
        return
    tmp = Path(tempfile.mkdtemp(prefix="dc-bench-"))
    data = args.data or unpack_cifar(tmp / "cifar") / "test"
    artifacts = tmp / "artifacts-cache"  # converted models survive between rows; embeddings do not
    print(f"data: {data}  cpus: {os.cpu_count()}  batch: {args.batch}")
    header = (
        f"{'size':>4} {'runtime':8} {'bare img/s':>10} {'pipeline img/s':>14} {'vs bare':>7} "
        f"{'cached s':>8} {'peak MB':>8}"
    )
    print(header)
    for size in (int(s) for s in args.sizes.split(",")):
        for runtime in args.runtimes.split(","):
            cache = tmp / f"cache-{size}-{runtime}"
            cache.mkdir()
            (artifacts).mkdir(exist_ok=True)
            os.symlink(artifacts, cache / "artifacts")
            bare = _run("bare", data, size, runtime, cache, args)
            first = _run("pipeline", data, size, runtime, cache, args)
            again = _run("pipeline", data, size, runtime, cache, args)
            assert again["computed"] == 0, again
            print(
                f"{size:>4} {first['runtime']:8} {bare['img_s']:>10.0f} {first['img_s']:>14.0f} "
                f"{first['img_s'] / bare['img_s']:>7.0%} {again['wall_s']:>8.2f} "
                f"{max(first['peak_rss_mb'], again['peak_rss_mb']):>8.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
