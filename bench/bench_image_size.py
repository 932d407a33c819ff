"""Model input size vs near-duplicate recall and speed: the measurement behind ``auto_image_size``.

    python bench/bench_image_size.py [--sizes 64,96,128,160,224] [--base 2000] [--plant 350] [--work DIR]

Plants edited copies of real CIFAR-10 training images (crop, shift, colour, JPEG, flip, rotation, combos;
see bench_near_duplicates.py), embeds the set at each input size and reports:

* embed img/s: model-forward throughput of this run (decode excluded);
* recall@10: copies whose original is among their 10 nearest bottleneck neighbours (what stage 1 can
  retrieve for verification);
* pair recall: planted pairs the ``duplicates`` check's default rule reports;
* other pairs: unplanted pairs it reports (CIFAR-10 has real duplicates, so not all are false).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_near_duplicates import plant, unpack

from datacheck.api import embed
from datacheck.context import build_context
from datacheck.neardup import NearDupParams, duplicate_pairs
from datacheck.params import EmbedParams


def measure(root: Path, truth: dict[str, tuple[str, str]], size: int, cache: Path) -> list[object]:
    start = time.perf_counter()
    res = embed(root, EmbedParams(image_size=size, cache_dir=cache / str(size)))
    seconds = time.perf_counter() - start
    ctx = build_context(res.dataset, res.embeddings)
    row = {p: i for i, p in enumerate(ctx.paths)}
    copies = {row[c]: row[o] for c, (o, _) in truth.items()}
    top10 = ctx.knn.indices[:, :10]
    recall10 = np.mean([o in top10[c] for c, o in copies.items()])
    pairs = duplicate_pairs(ctx, NearDupParams())
    found = {(int(i), int(j)) for i, j in zip(pairs["i"], pairs["j"], strict=True)}
    planted = {tuple(sorted(p)) for p in copies.items()}
    model_s = res.embeddings.timings.get("model", seconds)
    return [
        size,
        f"{len(ctx.paths) / model_s:.0f}",
        f"{seconds:.0f}",
        f"{recall10:.3f}",
        f"{len(found & planted) / len(planted):.3f}",
        len(found - planted),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="64,96,128,160,224")
    parser.add_argument("--base", type=int, default=2000)
    parser.add_argument("--plant", type=int, default=350)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="dc-size-"))
    root = work / f"planted_{args.base}_{args.plant}_{args.seed}"
    if not root.is_dir():
        truth = plant(unpack(work), root, args.base, args.plant, args.seed)
        (root / "truth.tsv").write_text("".join(f"{c}\t{o}\t{k}\n" for c, (o, k) in truth.items()))
    lines = (root / "truth.tsv").read_text().splitlines()
    truth = {c: (o, k) for c, o, k in (line.split("\t") for line in lines)}
    print(f"{args.base} CIFAR-10 images + {len(truth)} planted copies\n")
    print(
        "| size | embed img/s | embed s (incl. first model build) | recall@10 | pair recall | other pairs |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        print(
            "| " + " | ".join(str(v) for v in measure(root, truth, size, work / "cache")) + " |", flush=True
        )


if __name__ == "__main__":
    main()
