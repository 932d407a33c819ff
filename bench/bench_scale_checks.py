"""The checks at scale: synthetic audit contexts of 100k–1M images made from real CIFAR-10 rows (issue 21a).

Usage::

    python bench/bench_scale_checks.py --data /tmp/cifar --cache /tmp/c96 --sizes 100000 300000

``--cache`` must hold the 60,000 images of ``--data`` (CIFAR-10 unpacked) embedded at 96 px (``datacheck
embed /tmp/cifar --cache /tmp/c96 --image-size 96``). Each size runs in a fresh process: N rows are drawn
from the real rows (the vector plus noise of norm ``--noise``, re-normalised; the thumbnail rolled by 8–24 px,
mirrored vertically and averaged with a second real thumbnail drawn at random, so that rows drawn from one
real image are related, not copies: without the second image, rows whose rolls differed by ≤ 4 px were true
near duplicates, a share that grew with N — 12,000 at 100k, 98,000 at 300k; the image statistics and the
class). Then 1 % of the rows are replaced by near-copies of other rows (vector noise of norm 0.05, thumbnail
brightened by 3–8 %: planted duplicates, about a sixth of them across the train/test split) and 5 % of the
labels are flipped to another class (planted label errors). The context is built in memory (the kNN graph
as an audit builds it; no files, so the ``files`` and ``quality`` checks see none) and every registered check
runs as an audit runs them (``run_checks``, one worker per core). Reported per size: the kNN graph's and each
check's wall seconds, the peak RSS, the recall of the planted duplicate pairs among the duplicate pairs, and
the average precision of the labels check's ranking of the planted flips.

``--one-at-a-time`` runs the checks one after another instead and reports, per stage, how far the process's
resident memory rose above what it held when the stage began (sampled every 50 ms): where the memory goes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child import run_child

DUPLICATE_SHARE = 0.01
FLIP_SHARE = 0.05
CHUNK = 65_536


def _noisy(vectors: np.ndarray, rng: np.random.Generator, norm: float) -> np.ndarray:
    jitter = rng.standard_normal(vectors.shape).astype(np.float32)
    jitter *= norm / np.linalg.norm(jitter, axis=1, keepdims=True)
    out = vectors + jitter
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@dataclass
class SyntheticRows:
    """N synthetic rows drawn from the real ones (see the module docstring), before any context is built."""

    real: Any  # the real CIFAR-10 AuditContext they are drawn from
    vectors: np.ndarray  # float32[n, d], unit rows
    thumbs: np.ndarray  # uint8[n, 32, 32, 3]
    labels: np.ndarray  # int64[n], indices into real.class_names (flips applied)
    splits: np.ndarray  # "train" / "test"
    base: np.ndarray  # the real row each one is drawn from
    planted: np.ndarray  # int[P, 2]: planted duplicate pairs (i < j)
    flipped: np.ndarray  # bool[n]: planted label errors


def synthetic_rows(data: Path, cache: Path, n: int, noise: float, seed: int) -> SyntheticRows:
    """Draw ``n`` rows from the 60,000 real ones, plant duplicates and label flips."""
    from datacheck.context import build_context
    from datacheck.dataset import discover
    from datacheck.embed.pipeline import embed_dataset
    from datacheck.params import EmbedParams

    dataset = discover(data)
    real = build_context(dataset, embed_dataset(dataset, EmbedParams(cache_dir=cache, image_size=96)))
    rng = np.random.default_rng(seed)
    base = rng.integers(0, real.n, n)
    vectors = np.empty((n, real.vectors.shape[1]), np.float32)
    thumbs = np.empty((n, 32, 32, 3), np.uint8)
    shifts = rng.integers(8, 25, (n, 2))
    blend = rng.integers(0, real.n, n)  # a second real image mixed into each thumbnail
    for start in range(0, n, CHUNK):
        rows = base[start : start + CHUNK]
        vectors[start : start + len(rows)] = _noisy(real.vectors[rows], rng, noise)
        for i in range(start, start + len(rows)):
            rolled = np.roll(real.thumbs[base[i]], tuple(shifts[i]), axis=(0, 1))[::-1]
            thumbs[i] = (rolled.astype(np.uint16) + real.thumbs[blend[i]]) // 2
    labels = np.asarray(real.labels)[base].copy()
    copies = rng.choice(n, int(DUPLICATE_SHARE * n), replace=False)
    originals = rng.choice(np.setdiff1d(np.arange(n), copies), len(copies), replace=False)
    vectors[copies] = _noisy(vectors[originals], rng, 0.05)
    gain = rng.uniform(1.03, 1.08, (len(copies), 1, 1, 1))
    thumbs[copies] = np.clip(thumbs[originals] * gain, 0, 255).astype(np.uint8)
    labels[copies] = labels[originals]
    base[copies] = base[originals]
    flipped = np.zeros(n, bool)
    flip_rows = rng.choice(n, int(FLIP_SHARE * n), replace=False)
    flipped[flip_rows] = True
    n_classes = len(real.class_names)
    labels[flip_rows] = (labels[flip_rows] + rng.integers(1, n_classes, len(flip_rows))) % n_classes
    splits = np.where(rng.random(n) < 1 / 6, "test", "train")
    planted = np.sort(np.stack([copies, originals], axis=1), axis=1)
    return SyntheticRows(real, vectors, thumbs, labels.astype(np.int64), splits, base, planted, flipped)


def synthetic_context(data: Path, cache: Path, n: int, noise: float, seed: int):
    """``(context, planted duplicate pairs int[P, 2], flipped bool[n], kNN seconds)``."""
    import dataclasses

    from datacheck.dataset import Dataset, ImageRecord
    from datacheck.index import build_knn
    from datacheck.reduce import SharedBasis

    rows = synthetic_rows(data, cache, n, noise, seed)
    real, vectors, labels, splits = rows.real, rows.vectors, rows.labels, rows.splits
    names = real.class_names
    records = tuple(
        ImageRecord(
            path=f"{splits[i]}/{names[labels[i]]}/{i:07d}.png",
            abs_path=Path("/synthetic") / f"{i:07d}.png",
            label=names[labels[i]],
            split=str(splits[i]),
        )
        for i in range(n)
    )
    stats = real.stats.iloc[rows.base].reset_index(drop=True)
    stats["pixel_hash"] = None  # rows drawn from one real image are not identical: keyed by their own ids
    shared = SharedBasis(vectors)
    start = time.perf_counter()
    knn = build_knn(vectors, None, shared)
    knn_seconds = time.perf_counter() - start
    ctx = dataclasses.replace(
        real,
        dataset=Dataset(root=Path("/synthetic"), layout="splits", records=records, issues=()),
        records=records,
        vectors=vectors,
        logits=None,
        stats=stats,
        thumbs=rows.thumbs,
        file_sha256=tuple(f"{i:064x}" for i in range(n)),
        labels=labels,
        splits=tuple(str(s) for s in splits),
        knn=knn,
        failures=(),
        derived_dir=None,
        pca=shared,
    )
    return ctx, rows.planted, rows.flipped, knn_seconds


class RssPeaks:
    """Samples this process's resident memory every 50 ms; :meth:`stage` returns a stage's rise in MB."""

    def __init__(self) -> None:
        self._peak = self._start = self.rss()
        self._lock = threading.Lock()  # a sample taken before begin() must not land after it
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    @staticmethod
    def rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            with self._lock:
                self._peak = max(self._peak, self.rss())

    def begin(self) -> None:
        with self._lock:
            self._peak = self._start = self.rss()

    def rise(self) -> float:
        with self._lock:
            self._peak = max(self._peak, self.rss())
            return self._peak - self._start


def child(data: Path, cache: Path, n: int, noise: float, seed: int, one_at_a_time: bool = False) -> None:
    from sklearn.metrics import average_precision_score

    from datacheck.checks.labels import LabelsParams, score_labels
    from datacheck.neardup import NearDupParams, duplicate_pairs
    from datacheck.runner import build_params, run_checks, select_checks

    peaks = RssPeaks()
    start = time.perf_counter()
    ctx, planted, flipped, knn_seconds = synthetic_context(data, cache, n, noise, seed)
    built = time.perf_counter() - start
    rises = {"context": peaks.rise()}
    held = peaks.rss()
    print(f"context built: peak +{rises['context']:.0f} MB, held {held:.0f} MB", file=sys.stderr, flush=True)
    specs = select_checks()
    params = build_params(specs, {})
    if one_at_a_time:
        results = []
        for spec in specs:
            peaks.begin()
            results += run_checks(ctx, [spec], params, workers=1)
            rises[spec.id] = peaks.rise()
            # on stderr as it goes: a run killed for memory still shows how far it got
            note = f"{spec.id}: +{rises[spec.id]:.0f} MB, now {peaks.rss():.0f} MB"
            print(note, file=sys.stderr, flush=True)
    else:
        results = run_checks(ctx, specs, params, workers=os.cpu_count() or 1)
    pairs = duplicate_pairs(ctx, NearDupParams())  # served from the context: the checks computed it
    found = set(zip(pairs["i"].tolist(), pairs["j"].tolist(), strict=True))
    recall = float(np.mean([tuple(p) in found for p in planted.tolist()]))
    scores = score_labels(ctx, LabelsParams())
    ap = float("nan")
    if not isinstance(scores, str):
        full = np.zeros(ctx.n)
        full[scores.rows] = scores.score
        ap = float(average_precision_score(flipped, full))
    out = {
        "images": ctx.n,
        "build_seconds": built,
        "knn_seconds": knn_seconds,
        "checks": {r.id: r.seconds for r in results},
        "statuses": {r.id: str(r.status) for r in results},
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "context_mb": held,
        "rise_mb": rises,
        "duplicate_recall": recall,
        "label_ap": ap,
        # the duplicates check's work grows with these, not with N alone (see the table's note)
        "candidate_pairs": int(pairs.attrs.get("candidates", 0)),
        "refined_pairs": int(pairs.attrs.get("refined", 0)),
    }
    print(json.dumps(out))


def source_arguments(parser: argparse.ArgumentParser, sizes: list[int]) -> None:
    """``--data``, ``--cache`` and ``--sizes``: what the synthetic rows are made from, and how many."""
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10 unpacked (train/ and test/)")
    parser.add_argument("--cache", type=Path, required=True, help="cache holding it embedded at 96 px")
    parser.add_argument("--sizes", type=int, nargs="+", default=sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source_arguments(parser, sizes=[100_000, 300_000])
    parser.add_argument("--noise", type=float, default=1.0, help="norm of the noise added to each vector")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one-at-a-time", action="store_true", help="checks in turn; memory per stage")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.data, args.cache, args.child, args.noise, args.seed, args.one_at_a_time)
        return
    rows = []
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--child", str(n), "--data", str(args.data), "--cache"]
        cmd += [str(args.cache), "--noise", str(args.noise), "--seed", str(args.seed)]
        rows.append(run_child(cmd + ["--one-at-a-time"] * args.one_at_a_time))
        print(json.dumps(rows[-1]), flush=True)
    checks = list(rows[0]["checks"])
    print("\n| images | build s | kNN s | " + " | ".join(checks) + " | peak RSS MB | dup recall | label AP |")
    print("|---:" * (len(checks) + 6) + "|")
    for r in rows:
        cells = [f"{r['images']:,}", f"{r['build_seconds']:.0f}", f"{r['knn_seconds']:.0f}"]
        cells += [f"{r['checks'][c]:.1f}" for c in checks]
        cells += [f"{r['peak_mb']:.0f}", f"{r['duplicate_recall']:.3f}", f"{r['label_ap']:.3f}"]
        print("| " + " | ".join(cells) + " |")
    print("\nduplicate candidates verified (kNN ∪ layout index) and refined at full resolution:")
    for r in rows:
        counts = r.get("candidate_pairs", 0), r.get("refined_pairs", 0)
        print(f"  {r['images']:,}: {counts[0]:,} candidates, {counts[1]:,} refined")
    print("\nmemory held after the context build, and each stage's rise above what it began with (MB):")
    print("| images | held | " + " | ".join(rows[0]["rise_mb"]) + " |")
    print("|---:" * (len(rows[0]["rise_mb"]) + 2) + "|")
    for r in rows:
        cells = [f"{r['images']:,}", f"{r['context_mb']:.0f}"] + [f"{v:.0f}" for v in r["rise_mb"].values()]
        print("| " + " | ".join(cells) + " |")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        ratio = np.log(b["images"] / a["images"])
        print("\ngrowth exponents (time ∝ N^e) from the first to the last size:")
        for name in ["knn", *checks]:
            t0 = a["knn_seconds"] if name == "knn" else a["checks"][name]
            t1 = b["knn_seconds"] if name == "knn" else b["checks"][name]
            if t0 > 0.05:
                print(f"  {name}: {np.log(t1 / t0) / ratio:.2f}")


if __name__ == "__main__":
    main()
