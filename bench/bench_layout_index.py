"""The duplicates check's layout index at scale: datacheck's inverted lists vs HNSW vs an exact search.

Usage::

    python bench/bench_layout_index.py --data /tmp/cifar --cache /tmp/c96 --sizes 60000 100000 300000

The layout index proposes near-duplicate candidates whose 8×8 grayscale layouts correlate at ≥ 0.97
(:func:`datacheck.neardup.candidates.layout_candidates`). 60,000 is CIFAR-10's own thumbnails (``--cache``
must hold ``--data`` embedded at 96 px); other sizes are the synthetic rows of ``bench_scale_checks.py``
(real thumbnails rolled, mirrored and averaged with another, 1 % planted copies). Per size, in one process:
datacheck (exact up to 20,000 rows, inverted lists above), faiss HNSW (M = 16, efSearch = 32: what datacheck
used before) and, up to ``--exact-max`` rows, an exact search (faiss flat) as the reference: seconds and the
share of the reference's pairs each one returns.
"""

from __future__ import annotations

import argparse
import sys
import time
import unittest.mock
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale_checks import source_arguments, synthetic_context


def _thumbs(data: Path, cache: Path, n: int) -> np.ndarray:
    if n == 60_000:
        from datacheck.context import build_context
        from datacheck.dataset import discover
        from datacheck.embed.pipeline import embed_dataset
        from datacheck.params import EmbedParams

        dataset = discover(data)
        embedded = embed_dataset(dataset, EmbedParams(cache_dir=cache, image_size=96))
        return build_context(dataset, embedded).thumbs
    with unittest.mock.patch("datacheck.index.build_knn", lambda *a, **k: None):  # the graph is not needed
        return synthetic_context(data, cache, n, 1.0, 0)[0].thumbs


def _timed(make) -> tuple[float, set]:
    start = time.perf_counter()
    pairs = make()
    return time.perf_counter() - start, {tuple(p) for p in pairs.tolist()}


def measure(thumbs: np.ndarray, k: int, exact_max: int) -> dict[str, tuple[float, set]]:
    import faiss

    from datacheck.neardup.candidates import layout_candidates, layouts

    grid = layouts(thumbs)
    dims = grid.shape[1] * grid.shape[2]

    def hnsw() -> np.ndarray:
        index = faiss.IndexHNSWFlat(dims, 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 32
        return layout_candidates(grid, k, index=index)

    def exact() -> np.ndarray:
        return layout_candidates(grid, k, index=faiss.IndexFlatIP(dims))

    out = {"datacheck": _timed(lambda: layout_candidates(grid, k)), "HNSW (before)": _timed(hnsw)}
    if len(grid) <= exact_max:
        out["exact"] = _timed(exact)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source_arguments(parser, sizes=[60_000, 100_000])
    parser.add_argument("--exact-max", type=int, default=100_000, help="largest size searched exactly too")
    args = parser.parse_args()
    from datacheck.neardup import NearDupParams

    k = NearDupParams().layout_neighbours
    print("| rows | method | seconds | pairs | share of the exact search's pairs |")
    print("|---:|---|---:|---:|---:|")
    for n in args.sizes:
        results = measure(_thumbs(args.data, args.cache, n), k, args.exact_max)
        reference = results.get("exact", (0.0, None))[1]
        for method, (seconds, pairs) in results.items():
            share = f"{len(pairs & reference) / max(1, len(reference)):.4f}" if reference is not None else "–"
            print(f"| {n:,} | {method} | {seconds:.1f} | {len(pairs):,} | {share} |", flush=True)


if __name__ == "__main__":
    main()
