"""Issue 21: a CIFAR-10 audit embedded with ``--engine ray`` has the same findings as one embedded in-process.

Usage::

    python bench/bench_ray_audit.py --data /tmp/cifar [--image-size 96] [--work /tmp/ray-audit]

Each engine embeds the whole dataset into its own empty cache (the converted model copied in from
``--model-cache`` when given, so neither pays the conversion), in a fresh process; then each cache is
audited in-process. Printed: embedding seconds per engine, whether the vectors are bit-identical, and for
every check its status, its findings (kind and files) and its metrics, compared.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def embed(data: Path, cache: Path, engine: str, image_size: int, model_cache: Path | None) -> float:
    shutil.rmtree(cache, ignore_errors=True)
    if model_cache is not None:
        shutil.copytree(
            model_cache / "artifacts",
            cache / "artifacts",
            ignore=shutil.ignore_patterns("knn", "map", "pairs", "results", "ray-shards"),
        )
    cmd = [
        sys.executable,
        "-m",
        "datacheck",
        "embed",
        str(data),
        "--cache",
        str(cache),
        "--image-size",
        str(image_size),
        "-q",
    ]
    start = time.perf_counter()
    subprocess.run([*cmd, "--engine", engine], check=True)
    return time.perf_counter() - start


def findings(data: Path, cache: Path, image_size: int) -> dict:
    from datacheck import api

    report = api.audit(data, cache_dir=cache, image_size=image_size)
    return {
        r.id: {
            "status": str(r.status),
            "findings": sorted((f.kind, tuple(f.files)) for f in r.findings),
            "metrics": json.dumps(r.metrics, sort_keys=True, default=str),
        }
        for r in report.checks
    }


def vectors(data: Path, cache: Path, image_size: int):
    from datacheck.dataset import discover
    from datacheck.embed.pipeline import embed_dataset
    from datacheck.params import EmbedParams

    return embed_dataset(discover(data), EmbedParams(cache_dir=cache, image_size=image_size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ray-audit"))
    parser.add_argument("--model-cache", type=Path, help="a cache whose artifacts/ holds the converted model")
    args = parser.parse_args()
    caches = {engine: args.work / engine for engine in ("local", "ray")}
    seconds = {e: embed(args.data, c, e, args.image_size, args.model_cache) for e, c in caches.items()}
    import numpy as np

    local, ray = (vectors(args.data, caches[e], args.image_size) for e in ("local", "ray"))
    same_rows = [r.path for r in local.records] == [r.path for r in ray.records]
    identical = same_rows and np.array_equal(local.vectors, ray.vectors)
    identical = identical and local.stats.equals(ray.stats)
    print(
        f"embedding: in-process {seconds['local']:.1f} s, ray {seconds['ray']:.1f} s; "
        f"{len(local.records)} images, vectors and statistics bit-identical: {identical}"
    )
    results = {e: findings(args.data, c, args.image_size) for e, c in caches.items()}
    header = ["check", "status (in-process)", "status (ray)", "findings (in-process)", "findings (ray)"]
    print("| " + " | ".join([*header, "same findings", "same metrics"]) + " |")
    print("|---|---|---|---:|---:|---|---|")
    for check, a in results["local"].items():
        b = results["ray"][check]
        cells = [
            check,
            a["status"],
            b["status"],
            len(a["findings"]),
            len(b["findings"]),
            a["findings"] == b["findings"],
            a["metrics"] == b["metrics"],
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
