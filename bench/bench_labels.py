"""Label-error detection: precision/recall of planted label flips, and seconds, for the ``labels`` check.

Usage::

    python bench/bench_labels.py                          # synthetic, 10k and 60k x 1280
    python bench/bench_labels.py --sizes 10000 --flip 0.1
    python bench/bench_labels.py --cifar ../shared/datasets/cifar10-jpeg.tar.gz --image-size 96

Synthetic data: 10 classes, each a mixture of 3 Gaussian modes whose centres lie in a 32-d subspace of the
1280-d space, plus isotropic noise, so a linear model on the bottlenecks is good but not perfect (like real
embeddings). A fraction ``--flip`` of labels is moved to a random other class. CIFAR-10: the real embeddings
(``datacheck.api.embed``; unpacked to a temporary folder, cached in ``--cache-dir``) with the same planted
flips.

Prints a Markdown table: images, flips planted, findings, precision and recall of the planted flips (a
finding is a true positive when its file was flipped), how often the suggested label is the original one,
seconds for the shared kNN graph and for the check itself.
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from datacheck.checks.labels import LabelsParams, check_labels
from datacheck.index import KnnParams
from tests.factories import make_context


@dataclass(frozen=True)
class Row:
    name: str
    n: int
    flips: int
    findings: int
    precision: float
    recall: float
    suggested_ok: float
    precision_top: float
    knn_s: float
    check_s: float
    check_cpu_s: float


def synthetic(n: int, n_classes: int = 10, dim: int = 1280, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mixture-of-modes classes in a low-dimensional subspace plus isotropic noise."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, 32)))
    modes = rng.standard_normal((n_classes, 3, 32)) * 1.0
    labels = rng.integers(0, n_classes, n)
    mode = rng.integers(0, 3, n)
    signal = modes[labels, mode] + 0.45 * rng.standard_normal((n, 32))
    vectors = signal @ basis.T + 0.02 * rng.standard_normal((n, dim))
    return vectors.astype(np.float32), labels


def plant_flips(
    labels: np.ndarray, fraction: float, n_classes: int, seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy labels, flipped mask)``: a ``fraction`` of rows moved to a uniformly random other class."""
    rng = np.random.default_rng(seed)
    flipped = np.zeros(len(labels), bool)
    flipped[rng.choice(len(labels), round(fraction * len(labels)), replace=False)] = True
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, n_classes, flipped.sum())) % n_classes
    return noisy, flipped


def evaluate(
    name: str,
    vectors: np.ndarray,
    labels: np.ndarray,
    fraction: float,
    params: LabelsParams,
    class_names: list[str] | None = None,
) -> Row:
    n_classes = int(labels.max()) + 1
    noisy, flipped = plant_flips(labels, fraction, n_classes)
    start = time.perf_counter()
    ctx = make_context(vectors, noisy, class_names=class_names, knn=KnnParams())
    knn_s = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    res = check_labels(ctx, params)
    check_s, check_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    row_of = {p: i for i, p in enumerate(ctx.paths)}
    names = list(ctx.class_names)
    hits = [row_of[f.files[0]] for f in res.findings]
    true = np.array([flipped[i] for i in hits], bool)
    suggested_ok = [
        names.index(f.extra["suggested"]) == labels[i]
        for f, i in zip(res.findings, hits, strict=True)
        if flipped[i]
    ]
    top = true[: int(flipped.sum())]
    return Row(
        name,
        len(labels),
        int(flipped.sum()),
        res.metrics.get("issues", 0),
        float(true.mean()) if len(true) else float("nan"),
        float(true.sum() / max(flipped.sum(), 1)),
        float(np.mean(suggested_ok)) if suggested_ok else float("nan"),
        float(top.mean()) if len(top) else float("nan"),
        knn_s,
        check_s,
        check_cpu_s,
    )


def cifar_vectors(
    archive: Path, image_size: int, cache_dir: Path | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from datacheck.api import embed
    from datacheck.params import EmbedParams

    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        res = embed(tmp, EmbedParams(image_size=image_size, cache_dir=cache_dir))
    names = sorted({r.label for r in res.embeddings.records})
    labels = np.array([names.index(r.label) for r in res.embeddings.records])
    return res.embeddings.vectors, labels, names


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 60_000])
    parser.add_argument("--flip", type=float, default=0.05)
    parser.add_argument("--cifar", type=Path, help="cifar10-jpeg.tar.gz; embeds it (cached) and adds a row")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--knn-weight", type=float, default=LabelsParams().knn_weight)
    parser.add_argument("--pca-dims", type=int, default=LabelsParams().pca_dims)
    args = parser.parse_args()
    params = replace(LabelsParams(), knn_weight=args.knn_weight, pca_dims=args.pca_dims, max_findings=10**9)
    start = time.perf_counter()
    import cleanlab.filter  # noqa: F401  (imported once per process; timed apart from the check)

    import_s = time.perf_counter() - start
    rows = []
    for n in args.sizes:
        vectors, labels = synthetic(n)
        rows.append(evaluate(f"synthetic {n // 1000}k x 1280", vectors, labels, args.flip, params))
    if args.cifar:
        vectors, labels, names = cifar_vectors(args.cifar, args.image_size, args.cache_dir)
        rows.append(evaluate(f"CIFAR-10 @{args.image_size}px", vectors, labels, args.flip, params, names))
    print(
        f"flip fraction {args.flip:.0%}, knn_weight {params.knn_weight}, pca_dims {params.pca_dims}, "
        f"folds {params.folds}; importing cleanlab took {import_s:.1f} s "
        "(once per process, not in the table)\n"
    )
    print(
        "| data | images | flips | findings | precision | recall | suggested = original | precision@flips "
        "| kNN graph s | check s | check CPU s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.name} | {r.n} | {r.flips} | {r.findings} | {r.precision:.3f} | {r.recall:.3f} "
            f"| {r.suggested_ok:.3f} | {r.precision_top:.3f} | {r.knn_s:.1f} | {r.check_s:.1f} "
            f"| {r.check_cpu_s:.1f} |"
        )


if __name__ == "__main__":
    main()
