"""Full audit of CIFAR-10 (train + test, 60,000 images): empty cache, then warm cache, with the time split.

    python bench/bench_audit.py [--data DIR] [--image-size auto] [--add N] [--relabel N] [--remove N]

Without ``--data`` it unpacks ``../shared/datasets/cifar10-jpeg.tar.gz`` to a temp folder. Each run is a
fresh process (start-up included). After the empty-cache run (skipped with ``--no-cold``, for a cache filled
before) and a warm run, the daily cases, each undone before the next: ``--add N`` new images (mirrored test
airplanes as PNG with a corner pixel set per run: new content in every run, so only those are embedded, and
they are, whatever ran before), ``--relabel N`` training cats moved into the dog folder, ``--remove N``
training images moved out of the dataset.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child import run_child
from bench_embed import unpack_cifar


def _child(data: Path, cache: Path, image_size: str) -> None:
    from datacheck.api import audit

    start = time.perf_counter()
    report = audit(data, cache_dir=cache, image_size=image_size if image_size == "auto" else int(image_size))
    out = {
        "seconds": time.perf_counter() - start,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "timings": report.timings,
        "embedding": report.embedding,
        "statuses": {c.id: str(c.status) for c in report.checks},
        "findings": {c.id: len(c.findings) for c in report.checks},
    }
    print(json.dumps(out))


def _run(data: Path, cache: Path, image_size: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--data",
        str(data),
        "--cache",
        str(cache),
        "--image-size",
        image_size,
    ]
    return run_child(cmd)


def _print(label: str, run: dict) -> None:
    emb = run["embedding"]
    print(
        f"\n{label}: {run['wall_s']:.1f} s wall (audit() {run['seconds']:.1f} s), "
        f"peak RSS {run['peak_mb']:.0f} MB, "
        f"{emb['computed']} computed / {emb['cached']} cached at {emb['image_size']} px ({emb['runtime']})"
    )
    for stage, seconds in sorted(run["timings"].items(), key=lambda kv: -kv[1]):
        if seconds >= 0.05:
            print(f"  {stage:28s} {seconds:7.2f} s")
    print("  statuses: " + ", ".join(f"{k}={v}({run['findings'][k]})" for k, v in run["statuses"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--image-size", default="auto")
    parser.add_argument("--add", type=int, default=0)
    parser.add_argument("--relabel", type=int, default=0)
    parser.add_argument("--remove", type=int, default=0)
    parser.add_argument("--no-cold", action="store_true")
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        _child(args.data, args.cache, args.image_size)
        return
    tmp = Path(tempfile.mkdtemp(prefix="dc-audit-"))
    data = args.data or unpack_cifar(tmp / "cifar")
    cache = args.cache or tmp / "cache"
    if not args.no_cold:
        _print("empty cache", _run(data, cache, args.image_size))
    _print("warm cache", _run(data, cache, args.image_size))
    if args.add:
        added = data / "train" / "airplane"
        sources = sorted((data / "test" / "airplane").glob("*"))[: args.add]
        from PIL import Image, ImageOps

        nonce = int(time.time_ns()) % 251  # a corner pixel unlike any earlier run's: embedded in every run
        for i, src in enumerate(sources):  # new content (mirrored + re-encoded), not byte copies
            image = ImageOps.mirror(Image.open(src).convert("RGB"))
            image.putpixel((0, 0), (nonce, 255 - nonce, (nonce * 7) % 256))
            image.save(added / f"added_{i:04d}.png")
        _print(f"warm cache + {len(sources)} new images", _run(data, cache, args.image_size))
        for path in added.glob("added_*.png"):
            path.unlink()
    if args.relabel:
        moved = sorted((data / "train" / "cat").glob("*"))[: args.relabel]
        for path in moved:
            path.rename(data / "train" / "dog" / f"relabelled_{path.name}")
        _print(f"warm cache, {len(moved)} cats relabelled dog", _run(data, cache, args.image_size))
        for path in moved:
            (data / "train" / "dog" / f"relabelled_{path.name}").rename(path)
    if args.remove:
        aside = tmp / "removed"
        aside.mkdir(exist_ok=True)
        gone = sorted((data / "train" / "horse").glob("*"))[: args.remove]
        for path in gone:
            path.rename(aside / path.name)
        _print(f"warm cache - {len(gone)} images", _run(data, cache, args.image_size))
        for path in gone:
            (aside / path.name).rename(path)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
