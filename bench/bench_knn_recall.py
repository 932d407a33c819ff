"""Recall of the shared kNN graph against an exact full-dimensional search, exact and approximate paths.

    python bench/bench_knn_recall.py --data /tmp/cifar --cache /tmp/c96 [--sizes 300000 1000000]

``--cache`` must hold the 60,000 images of ``--data`` (CIFAR-10 unpacked) embedded at 96 px. Each row of the
table is a fresh process. *Real*: CIFAR-10's 60,000 bottlenecks, the graph built by the exact path (the
default at this size) and by the approximate one forced (``exact_max=0``), its inverted file searching a
fixed 16 lists per query (the rule before calibration: ``min_recall=0``) or as many as calibration asks
(the default ``min_recall``). *Synthetic*: ``--sizes`` rows drawn from the real ones with noise (as
``bench_scale_checks.py``: the vector plus noise of norm 1, re-normalised), approximate path (the default
above 200,000 rows), fixed 16 lists vs calibrated.

Columns: seconds to build the graph (the shared PCA basis fitted before the clock starts), the lists
searched per query, the search's candidate recall as the graph measured it on its own sample, and the
graph's recall of each row's true 15 nearest neighbours (brute force in the full 1280-d space) on
``--sample`` rows drawn at random.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child import run_child

K = 15


def _real_vectors(data: Path, cache: Path) -> np.ndarray:
    from datacheck.dataset import discover
    from datacheck.embed.pipeline import embed_dataset
    from datacheck.index import l2_normalise
    from datacheck.params import EmbedParams

    dataset = discover(data)
    vectors = embed_dataset(dataset, EmbedParams(cache_dir=cache, image_size=96)).vectors
    return l2_normalise(np.asarray(vectors, np.float32))


def _synthetic(real: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), np.float32)
    for start in range(0, n, 65_536):
        rows = rng.integers(0, len(real), min(65_536, n - start))
        block = real[rows] + _unit_noise(rng, (len(rows), real.shape[1]))
        out[start : start + len(rows)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def _unit_noise(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    noise = rng.standard_normal(shape, dtype=np.float32)
    return noise / np.linalg.norm(noise, axis=1, keepdims=True)


def _true_neighbours(unit: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each of ``rows``' ``K`` most similar other rows, by brute force in the full space (blocked)."""
    best_sims = np.full((len(rows), K), -np.inf, np.float32)
    best_ids = np.zeros((len(rows), K), np.int64)
    for start in range(0, len(unit), 65_536):
        sims = unit[rows] @ unit[start : start + 65_536].T
        sims[rows[:, None] == np.arange(start, start + sims.shape[1])[None, :]] = -np.inf
        ids = np.broadcast_to(np.arange(start, start + sims.shape[1]), sims.shape)
        both_s = np.concatenate([best_sims, sims], axis=1)
        both_i = np.concatenate([best_ids, ids], axis=1)
        top = np.argpartition(-both_s, K - 1, axis=1)[:, :K]
        best_sims = np.take_along_axis(both_s, top, axis=1)
        best_ids = np.take_along_axis(both_i, top, axis=1)
    return best_ids


def _child(args: argparse.Namespace) -> None:
    from datacheck.index import KnnParams, build_knn
    from datacheck.reduce import SharedBasis

    recorded: list[str] = []

    class _Probes(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            recorded.append(record.getMessage())

    logging.getLogger("datacheck.index").addHandler(_Probes())
    logging.getLogger("datacheck.index").setLevel(logging.INFO)
    real = _real_vectors(args.data, args.cache)
    unit = real if args.n == 0 else _synthetic(real, args.n, args.seed)
    del real
    shared = SharedBasis(unit)
    shared.reduced(128)  # fitted before the clock starts: every consumer of the audit shares it
    params = KnnParams(exact_max=args.exact_max, min_recall=args.min_recall)
    start = time.perf_counter()
    graph = build_knn(unit, params, shared)
    seconds = time.perf_counter() - start
    rows = np.sort(np.random.default_rng(1).choice(len(unit), args.sample, replace=False))
    truth = _true_neighbours(unit, rows)
    found = graph.indices[rows, :K]
    recall = float(
        np.mean([len(set(f) & set(t)) / K for f, t in zip(found.tolist(), truth.tolist(), strict=True)])
    )
    lists = next((m.split(" lists")[0].split("file: ")[1] for m in recorded if "lists searched" in m), "all")
    out = {
        "n": len(unit),
        "method": graph.method,
        "min_recall": args.min_recall,
        "seconds": seconds,
        "lists": lists,
        "search_recall": graph.search_recall,
        "graph_recall": recall,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="*", default=[])
    parser.add_argument("--sample", type=int, default=1000, help="rows whose true neighbours are computed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--exact-max", type=int, default=200_000, help=argparse.SUPPRESS)
    parser.add_argument("--min-recall", type=float, default=0.95, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    from datacheck.index import KnnParams

    default = KnnParams().min_recall
    runs = [("real", 0, 200_000, default), ("real", 0, 0, 0.0), ("real", 0, 0, default)]
    runs += [(f"synthetic {n:,}", n, 200_000, r) for n in args.sizes for r in (0.0, default)]
    print("| data | images | path | lists per query | seconds | search recall | graph recall | peak RSS MB |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name, n, exact_max, min_recall in runs:
        cmd = [sys.executable, __file__, "--child", "--data", str(args.data), "--cache", str(args.cache)]
        cmd += ["--n", str(n), "--exact-max", str(exact_max), "--min-recall", str(min_recall)]
        cmd += ["--sample", str(args.sample), "--seed", str(args.seed)]
        r = run_child(cmd)
        path = r["method"] if r["method"] == "exact" else f"approximate, min_recall {min_recall:g}"
        print(
            f"| {name} | {r['n']:,} | {path} | {r['lists']} | {r['seconds']:.1f} | {r['search_recall']:.3f} "
            f"| {r['graph_recall']:.3f} | {r['peak_mb']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
