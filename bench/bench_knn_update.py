"""The kNN graph after a small change: updated from the stored graph vs rebuilt (issue 20, item 1).

Usage::

    python bench/bench_knn_update.py --data /tmp/cifar --cache /tmp/c96 --add 100

Embeds (or reads from ``--cache``) every image under ``--data``. Adding: leaves ``--add`` random images out,
builds and stores that graph, then indexes all images. Removing: stores the graph of all images, then indexes
all but ``--remove`` random ones. Each time once updated from the stored graph, once rebuilt from scratch;
prints both times, the share of neighbours the two graphs share, and each graph's recall against exact
full-dimensional search on the changed rows (added ones; kept ones that lost a neighbour) and every 60th.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from datacheck import index
from datacheck.api import embed
from datacheck.params import EmbedParams


def _recall(graph: index.KnnGraph, rows: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(graph.indices[r]) & set(t)) / k for r, t in zip(rows, truth, strict=True)]))


def _case(unit: np.ndarray, before: np.ndarray, after: np.ndarray, focus: np.ndarray, title: str) -> None:
    """Store the graph of rows ``before``, then index rows ``after``: updated vs rebuilt, one table."""
    with tempfile.TemporaryDirectory() as store:
        index.build_knn_cached(unit[before], None, Path(store))
        start = time.perf_counter()
        updated = index.build_knn_cached(unit[after], None, Path(store))
        update_s = time.perf_counter() - start
    start = time.perf_counter()
    rebuilt = index.build_knn(unit[after])
    rebuild_s = time.perf_counter() - start
    shared = np.mean(
        [len(set(a) & set(b)) / len(a) for a, b in zip(updated.indices, rebuilt.indices, strict=True)]
    )
    rows = unit[after]
    sample = np.arange(0, len(rows), 60)
    truth_focus, _ = index._exact_neighbours(rows, focus, updated.k)
    truth_sample, _ = index._exact_neighbours(rows, sample, updated.k)
    print(f"\n{title}\n")
    print("| graph | seconds | neighbours shared with the rebuild | recall vs exact: changed | every 60th |")
    print("|---|---:|---:|---:|---:|")
    for name, graph, seconds in (("updated", updated, update_s), ("rebuilt", rebuilt, rebuild_s)):
        shared_cell = f"{shared:.4f}" if name == "updated" else "1"
        print(
            f"| {name} | {seconds:.1f} | {shared_cell} | {_recall(graph, focus, truth_focus):.4f} | "
            f"{_recall(graph, sample, truth_sample):.4f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--add", type=int, default=100)
    parser.add_argument("--remove", type=int, default=100)
    args = parser.parse_args()
    vectors = embed(
        args.data, EmbedParams(cache_dir=args.cache, image_size=args.image_size)
    ).embeddings.vectors
    unit = index.l2_normalise(vectors)
    everything = np.arange(len(unit))
    rng = np.random.default_rng(0)
    if args.add:
        added = np.sort(rng.choice(len(unit), args.add, replace=False))
        kept = np.setdiff1d(everything, added)
        _case(
            unit,
            kept,
            everything,
            added,
            f"{len(unit)} images, {args.add} added to a stored graph of {len(kept)}",
        )
    if args.remove:
        removed = np.sort(rng.choice(len(unit), args.remove, replace=False))
        kept = np.setdiff1d(everything, removed)
        # the rows whose stored lists held a removed image: re-searched by the update
        full = index.build_knn(unit)
        lost_old = np.flatnonzero(np.isin(full.indices, removed).any(axis=1))
        focus = np.searchsorted(kept, np.setdiff1d(lost_old, removed))
        _case(
            unit,
            everything,
            kept,
            focus,
            f"{len(unit)} images, {args.remove} removed from their stored graph",
        )


if __name__ == "__main__":
    main()
