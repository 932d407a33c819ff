"""Embedding throughput: in-process vs ``--engine ray`` on a local Ray instance (issue 21, part b).

Usage::

    pip install -e ".[dev]"                 # includes the ray extra
    python bench/bench_scale.py --images 20000 [--repeat 2]

``--images`` CIFAR-10 training JPEGs (unpacked from ``../shared/datasets/cifar10-jpeg.tar.gz`` into a temp
folder) are embedded at ``--image-size`` (96) from an empty cache, each configuration in a fresh process:
in-process (the default engine), then Ray with 1 and with 2 embedding actors on a local instance of
``--cpus`` CPUs. Reported: wall seconds, images per second, and the driver's peak RSS. Ray's start-up
(``ray.init``, ~5-10 s) is included, as a user pays it.

By default each run is ``embed_dataset`` (what an audit runs: the vectors are gathered in the driver);
``--fill`` runs ``fill_cache`` instead (what ``datacheck embed`` runs: counts only). Several ``--images``
sizes show how the driver's memory grows with N.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child import run_child


def unpack(archive: Path, out: Path, n: int) -> Path:
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and "/train/" in f"/{m.name}"][:n]
        tar.extractall(out, members=members, filter="data")
    return out


def child(data: Path, cache: Path, engine: str, actors: int, cpus: int, image_size: int, fill: bool) -> None:
    from datacheck.dataset import discover
    from datacheck.embed.pipeline import embed_dataset, fill_cache
    from datacheck.params import EmbedParams

    if engine == "ray":
        import ray

        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    start = time.perf_counter()
    params = EmbedParams(cache_dir=cache, image_size=image_size, engine=engine, ray_actors=actors)
    if fill:
        images = fill_cache(discover(data), params).images
    else:
        images = len(embed_dataset(discover(data), params).records)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "images": images, "peak_mb": peak}))


def run(data: Path, cache: Path, engine: str, actors: int, cpus: int, image_size: int, fill: bool) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--data",
        str(data),
        "--cache",
        str(cache),
        "--engine",
        engine,
    ]
    cmd += ["--actors", str(actors), "--cpus", str(cpus), "--image-size", str(image_size)]
    return run_child(cmd + ["--fill"] * fill)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archive", type=Path, default=Path("../shared/datasets/cifar10-jpeg.tar.gz"))
    parser.add_argument("--images", type=int, nargs="+", default=[20_000])
    parser.add_argument("--fill", action="store_true", help="fill_cache (datacheck embed), not embed_dataset")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--engine", default="local")
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration; the fastest is shown")
    args = parser.parse_args()
    if args.child:
        child(args.data, args.cache, args.engine, args.actors, args.cpus, args.image_size, args.fill)
        return
    configs = [("in-process", "local", 1), ("ray, 1 actor", "ray", 1), ("ray, 2 actors", "ray", 2)]
    what = "fill_cache (datacheck embed)" if args.fill else "embed_dataset (an audit's embedding)"
    print(f"CIFAR-10 images at {args.image_size} px, empty cache, {args.cpus} CPUs, {what}", flush=True)
    print("| engine | images | seconds | images/s | vs in-process | driver peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.images:
            data = unpack(args.archive, Path(tmp) / f"data{n}", n)
            base = None
            for name, engine, actors in configs:
                tries = []
                for attempt in range(args.repeat):  # each from an empty cache, in a fresh process
                    cache = Path(tmp) / f"{n}-{engine}{actors}-{attempt}"
                    tries.append(run(data, cache, engine, actors, args.cpus, args.image_size, args.fill))
                best = min(tries, key=lambda r: r["seconds"])
                rate = best["images"] / best["seconds"]
                base = base or rate
                cells = [name, best["images"], f"{best['seconds']:.1f}", f"{rate:.0f}", f"{rate / base:.2f}"]
                cells.append(f"{best['peak_mb']:.0f}")
                print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
