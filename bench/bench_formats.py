"""One CIFAR-10 sample audited as a folder, a saved Hugging Face dataset, Hub Parquet and WebDataset shards.

Usage::

    pip install -e ".[dev]"          # datasets + webdataset write the formats, pyarrow reads them
    python bench/bench_formats.py    # defaults: ../shared/datasets/cifar10-jpeg.tar.gz, 3,000 images

``--images`` random CIFAR-10 JPEGs (5/6 train, 1/6 test, the same bytes in every format) are written 4 ways:
``train|test/<class>/<n>.jpg``; ``save_to_disk`` of a ``DatasetDict`` (Image + ClassLabel); the Hub's
``data/<split>-00000-of-00001.parquet``; WebDataset shards of 1,000 samples (``<key>.jpg`` + ``<key>.cls``,
``classes.txt``). Each is audited at defaults (``--image-size``, default 96) through ``datacheck.api.audit``:
first with an empty cache of its own (cold: read, decode, embed, check), then again (warm). The table gives
discovery seconds, seconds to read every image's bytes (``read_record``), cold and warm audit wall seconds
and the process CPU seconds of the cold audit (after one unmeasured warm-up audit that loads the model and
compiles UMAP), and whether the findings equal the folder's (compared by
content: check, kind, severity and the SHA-256 of the files, so keys may differ).
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from datacheck import api
from datacheck.dataset import discover
from datacheck.sources import read_record
from datacheck.sources.blobs import clear_cache

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def sample(archive: Path, n: int, seed: int) -> list[tuple[str, str, str, bytes]]:
    """``(split, class, name, bytes)`` of ``n`` random images (5/6 train, 1/6 test)."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")]
        by_split = {s: [m for m in members if m.name.split("/")[-3] == s] for s in ("train", "test")}
        rng = np.random.default_rng(seed)
        chosen = []
        for split, count in (("train", n - n // 6), ("test", n // 6)):
            pool = by_split[split]
            chosen += [pool[i] for i in sorted(rng.choice(len(pool), count, replace=False))]
        out = []
        for m in chosen:
            *_, split, label, name = m.name.split("/")
            handle = tar.extractfile(m)
            assert handle is not None
            out.append((split, label, f"{split}-{label}-{Path(name).stem}", handle.read()))
    return out


def write_folder(root: Path, images: list) -> Path:
    for split, label, name, data in images:
        (root / split / label).mkdir(parents=True, exist_ok=True)
        (root / split / label / f"{name}.jpg").write_bytes(data)
    return root


def _hf_parts(images: list) -> dict:
    import datasets

    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES))}
    )
    return {
        split: datasets.Dataset.from_dict(
            {
                "image": [{"bytes": d, "path": None} for s, _, _, d in images if s == split],
                "label": [CLASSES.index(c) for s, c, _, _ in images if s == split],
            },
            features=features,
        )
        for split in ("train", "test")
    }


def write_hf(root: Path, images: list) -> Path:
    import datasets

    datasets.DatasetDict(_hf_parts(images)).save_to_disk(str(root))
    return root


def write_parquet(root: Path, images: list) -> Path:
    (root / "data").mkdir(parents=True)
    for split, part in _hf_parts(images).items():
        part.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return root


def write_webdataset(root: Path, images: list, per_shard: int = 1000) -> Path:
    import webdataset as wds

    root.mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for split in ("train", "test"):
        rows = [(c, n, d) for s, c, n, d in images if s == split]
        for shard, start in enumerate(range(0, len(rows), per_shard)):
            with wds.TarWriter(str(root / f"{split}-{shard:06d}.tar")) as sink:
                for c, n, d in rows[start : start + per_shard]:
                    sink.write({"__key__": n, "jpg": d, "cls": CLASSES.index(c)})
    return root


def findings_by_content(report) -> set[tuple]:
    sha = dict(zip(report.map["path"], report.map["sha256"], strict=True))
    return {
        (res.id, f.kind, str(f.severity), tuple(sorted(sha.get(p, p) for p in f.files)))
        for res in report.checks
        for f in res.findings
    }


def best_of(n: int, fn) -> float:
    best = float("inf")
    for _ in range(n):
        clear_cache()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(root: Path, cache: Path, image_size: int) -> dict:
    discover_s = best_of(2, lambda: discover(root))
    dataset = discover(root)
    read_s = best_of(2, lambda: [read_record(r) for r in dataset.records])
    cpu0, t0 = time.process_time(), time.perf_counter()
    cold = api.audit(root, cache_dir=cache, image_size=image_size)
    cold_s, cold_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    warm_s = min(_timed(lambda: api.audit(root, cache_dir=cache, image_size=image_size)) for _ in range(2))
    return {
        "images": len(dataset),
        "discover_s": discover_s,
        "read_s": read_s,
        "cold_s": cold_s,
        "cold_cpu_s": cold_cpu,
        "warm_s": warm_s,
        "findings": findings_by_content(cold),
    }


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archive", type=Path, default=Path("../shared/datasets/cifar10-jpeg.tar.gz"))
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images = sample(args.archive, args.images, args.seed)
    writers = {
        "folder": write_folder,
        "hf": write_hf,
        "parquet": write_parquet,
        "webdataset": write_webdataset,
    }
    with tempfile.TemporaryDirectory() as tmp:
        # Warm-up, not measured: the first audit in a process also loads the model and compiles UMAP.
        warm = write_folder(Path(tmp) / "warm-up", images[:200])
        api.audit(warm, cache_dir=Path(tmp) / "cache-warm-up", image_size=args.image_size)
        rows = {}
        for name, write in writers.items():
            root = write(Path(tmp) / name, images)
            rows[name] = measure(root, Path(tmp) / f"cache-{name}", args.image_size)
    reference = rows["folder"]["findings"]
    print(f"{args.images} CIFAR-10 images, {args.image_size} px, seed {args.seed}")
    print(
        "| format | images | discover s | read all s | audit cold s (CPU s) | audit warm s "
        "| findings = folder |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        same = "yes" if r["findings"] == reference else f"no ({len(r['findings'] ^ reference)} differ)"
        print(
            f"| {name} | {r['images']} | {r['discover_s']:.2f} | {r['read_s']:.2f} | "
            f"{r['cold_s']:.1f} ({r['cold_cpu_s']:.1f}) | {r['warm_s']:.1f} | {same} |"
        )


if __name__ == "__main__":
    main()
