"""Throughput of the bottleneck cache: put (batched like the pipeline) and get, plus size on disk.

Usage::

    python bench/bench_cache.py                       # 10k and 60k keys, dim 1280 + 1000 logits
    python bench/bench_cache.py --sizes 1000 --dim 512 --logits 0 --dir /tmp/c

Prints two Markdown tables: embeddings (vector + logits) and per-image statistics blobs. Values are drawn
from a pool of random rows (SQLite does not compress, so content does not change the timings); every key is
distinct, as with real files. Each size uses a fresh cache; gets run on a fresh connection.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from datacheck.embed.cache import Cache, embedding_key, stats_key

TAG = "bench@224:pre1"
POOL = 2048
T = TypeVar("T")


def _shas(n: int) -> list[str]:
    return [hashlib.sha256(f"bench-{i}".encode()).hexdigest() for i in range(n)]


def _db_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("cache.sqlite*"))


def _timed(fn: Callable[..., T], *args: object) -> tuple[float, T]:
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def bench_embeddings(directory: Path, n: int, dim: int, n_logits: int, batch: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((POOL, dim)).astype(np.float32)
    logits = rng.standard_normal((POOL, n_logits)).astype(np.float32) * 5 if n_logits else None
    keys = [embedding_key(s, TAG) for s in _shas(n)]

    def put_all(cache: Cache) -> None:
        for start in range(0, n, batch):
            cache.put_embeddings(
                [
                    (keys[i], vectors[i % POOL], None if logits is None else logits[i % POOL])
                    for i in range(start, min(n, start + batch))
                ]
            )

    with Cache(directory) as cache:
        put_s, _ = _timed(put_all, cache)
    with Cache(directory) as cache:  # fresh connection, as a second run of the CLI would have
        get_s, got = _timed(cache.get_embeddings, keys)
        get10k_s, _ = _timed(cache.get_embeddings, keys[:: max(1, n // 10_000)][:10_000])
    assert len(got) == n
    want = vectors[(n - 1) % POOL].astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(got[keys[-1]][0], want)
    return {"put_s": put_s, "get_s": get_s, "get10k_s": get10k_s, "size": _db_bytes(directory)}


def bench_stats(directory: Path, n: int, blob_bytes: int, batch: int) -> dict[str, float]:
    pool = [os.urandom(blob_bytes) for _ in range(POOL)]
    keys = [stats_key(s, 1) for s in _shas(n)]

    def put_all(cache: Cache) -> None:
        for start in range(0, n, batch):
            cache.put_stats([(keys[i], pool[i % POOL]) for i in range(start, min(n, start + batch))])

    with Cache(directory) as cache:
        put_s, _ = _timed(put_all, cache)
    with Cache(directory) as cache:
        get_s, got = _timed(cache.get_stats, keys)
    assert len(got) == n and got[keys[-1]] == pool[(n - 1) % POOL]
    return {"put_s": put_s, "get_s": get_s, "size": _db_bytes(directory)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 60_000])
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--logits", type=int, default=1000, help="logits per row (0: none)")
    parser.add_argument("--stats-bytes", type=int, default=3200, help="size of one stats blob (0: skip)")
    parser.add_argument("--batch", type=int, default=256, help="rows per put call")
    parser.add_argument("--dir", type=Path, default=None, help="parent directory for the test caches")
    args = parser.parse_args()

    parent = Path(tempfile.mkdtemp(prefix="bench-cache-", dir=args.dir))
    print(
        f"dim {args.dim}, logits {args.logits or 'none'}, batch {args.batch}, {os.cpu_count()} CPUs, {parent}"
    )
    print()
    print("| keys | put (rows/s) | put (MB/s) | get all (rows/s) | get 10k keys (s) | DB (MB) | bytes/row |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    payload = 2 * (args.dim + args.logits)
    for n in args.sizes:
        r = bench_embeddings(parent / f"emb{n}", n, args.dim, args.logits, args.batch)
        put_rate, get_rate = n / r["put_s"], n / r["get_s"]
        print(
            f"| {n:,} | {put_rate:,.0f} | {put_rate * payload / 1e6:,.0f} | {get_rate:,.0f} "
            f"| {r['get10k_s']:.3f} | {r['size'] / 1e6:,.1f} | {r['size'] / n:,.0f} |"
        )
    if args.stats_bytes:
        print()
        print(f"stats blobs of {args.stats_bytes} bytes")
        print()
        print("| keys | put (rows/s) | get all (rows/s) | DB (MB) | bytes/row |")
        print("|---:|---:|---:|---:|---:|")
        for n in args.sizes:
            r = bench_stats(parent / f"stats{n}", n, args.stats_bytes, args.batch)
            print(
                f"| {n:,} | {n / r['put_s']:,.0f} | {n / r['get_s']:,.0f} "
                f"| {r['size'] / 1e6:,.1f} | {r['size'] / n:,.0f} |"
            )


if __name__ == "__main__":
    main()
