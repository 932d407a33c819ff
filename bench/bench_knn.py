"""How the shared kNN graph's time and memory grow with N (synthetic clustered 1280-d vectors).

    python bench/bench_knn.py [--sizes 10000,60000,500000] [--dim 1280]

Each size runs in a fresh process so peak RSS is its own. Memory that grew quadratically would be
N² × 4 bytes: 0.4 GB at 10k, 14 GB at 60k, 1 TB at 500k.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _child(n: int, dim: int) -> None:
    import numpy as np

    from datacheck.index import build_knn

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((max(10, n // 500), dim)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), n)]
    vectors += 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    graph = build_knn(vectors)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "n": n,
                "seconds": seconds,
                "method": graph.method,
                "input_mb": vectors.nbytes / 2**20,
                "peak_mb": peak,
                "extra_mb": peak - base_rss,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,60000,500000")
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--child", type=int)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.dim)
        return
    print(f"{'N':>8} {'method':12} {'seconds':>8} {'input MB':>9} {'peak RSS MB':>11} {'N² floats MB':>12}")
    for n in (int(s) for s in args.sizes.split(",")):
        cmd = [sys.executable, __file__, "--child", str(n), "--dim", str(args.dim)]
        out = json.loads(
            subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
        )
        print(
            f"{n:>8} {out['method']:12} {out['seconds']:>8.1f} {out['input_mb']:>9.0f} "
            f"{out['peak_mb']:>11.0f} {n * n * 4 / 2**20:>12.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
