"""The memory of ``datacheck embed``'s driver as the dataset grows (issue 21: driver memory independent of N).

Usage::

    python bench/bench_embed_driver.py --case /tmp/cifar /tmp/c96 \\
        --case /tmp/scale/n100000/data /tmp/scale/n100000/cache \\
        --case /tmp/scale/n1000000/data /tmp/scale/n1000000/cache --old /tmp/wt_old --repeat 2

Each ``--case DATA CACHE`` is a dataset and a cache that already holds every image of it at 96 px (CIFAR-10
embedded once; ``bench_scale_audit.py --keep``'s Parquet shards and pre-filled caches): ``datacheck embed``
then does everything but run the model — discovery, reading and hashing every image, looking each up in the
cache — which is all the driver does per image with either engine (on Ray it also writes the misses to
Parquet files a chunk at a time). Each run is a fresh process calling :func:`datacheck.api.fill_cache`, the
function ``datacheck embed`` runs; reported: its wall and CPU seconds, its peak RSS, the RSS after imports
(before the dataset is touched) and the difference (what the dataset costs the driver). The file-hash memo of
a folder dataset is emptied before each run, so every run reads every file. ``--old`` runs the same on
another checkout of the code (``PYTHONPATH``), alternating with this one. ``--trace`` adds the peak of the
Python allocations (``tracemalloc``: the objects the driver holds, without what allocators keep), at the cost
of slower runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child import run_child

IMAGE_SIZE = 96


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(data: str, cache: str, trace: bool) -> None:
    """One ``datacheck embed`` run in this process; prints a JSON line."""
    from datacheck import api
    from datacheck.params import EmbedParams

    before = _rss_mb()
    if trace:
        tracemalloc.start()
    start, cpu = time.perf_counter(), time.process_time()
    result = api.fill_cache(data, EmbedParams(cache_dir=Path(cache), image_size=IMAGE_SIZE))
    seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    traced = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fill = result.fill
    print(
        json.dumps(
            {
                "images": fill.images,
                "cached": fill.cached,
                "computed": fill.computed,
                "seconds": seconds,
                "cpu_s": cpu_s,
                "rss_before_mb": before,
                "peak_mb": peak,
                "traced_peak_mb": traced,
            }
        )
    )


def _forget_file_hashes(cache: Path) -> None:
    """Empty the file-hash memo (every file is read again), as on a dataset's first ``datacheck embed``."""
    db = cache / "cache.sqlite"
    if not db.exists():
        return
    with sqlite3.connect(db) as conn:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'file_hashes'").fetchone():
            conn.execute("DELETE FROM file_hashes")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", nargs=2, metavar=("DATA", "CACHE"), help=argparse.SUPPRESS)
    parser.add_argument("--case", nargs=2, action="append", metavar=("DATA", "CACHE"), default=[])
    parser.add_argument("--old", type=Path, help="another checkout of datacheck to compare (PYTHONPATH)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per row; the fastest is reported")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="also trace Python allocations (tracemalloc): their peak is reported; runs are slower",
    )
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.trace)
        return
    here = str(Path(__file__).resolve().parents[1])
    codes = [("this checkout", here)] + ([(f"old ({args.old})", str(args.old))] if args.old else [])
    rows = []
    for data, cache in args.case:
        tries: dict[str, list[dict]] = {name: [] for name, _ in codes}
        for _ in range(args.repeat):
            for name, path in codes:  # alternating: the machine's drift falls on both
                _forget_file_hashes(Path(cache))
                cmd = [sys.executable, __file__, "--child", data, cache, *(["--trace"] if args.trace else [])]
                tries[name].append(run_child(cmd, env={"PYTHONPATH": path}))
                print(f"{data} {name}: {tries[name][-1]}", file=sys.stderr, flush=True)
        for name, _ in codes:
            best = min(tries[name], key=lambda t: t["seconds"])
            best["peak_mb"] = min(t["peak_mb"] for t in tries[name])
            rows.append((data, name, best))
    print(f"\n`datacheck embed` from a cache holding every image ({IMAGE_SIZE} px), best of {args.repeat}\n")
    traced = " traced peak MB |" if args.trace else ""
    print(
        "| dataset | images | code | seconds | CPU s | peak RSS MB | RSS after imports MB "
        f"| dataset's share MB |{traced}"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|" + ("---:|" if args.trace else ""))
    for data, name, r in rows:
        share = r["peak_mb"] - r["rss_before_mb"]
        extra = f" {r['traced_peak_mb']:,.0f} |" if args.trace else ""
        print(
            f"| {data} | {r['images']:,} | {name} | {r['seconds']:.1f} | {r['cpu_s']:.1f} "
            f"| {r['peak_mb']:,.0f} | {r['rss_before_mb']:,.0f} | {share:,.0f} |{extra}"
        )


if __name__ == "__main__":
    main()
