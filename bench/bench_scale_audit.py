"""A real audit of 100k–1M images from a pre-filled cache: ``datacheck audit``, end to end (issue 21).

Usage::

    python bench/bench_scale_audit.py --data /tmp/cifar --cache /tmp/c96 --work /tmp/scale \\
        --sizes 100000 1000000

``bench_scale_checks.py`` builds its synthetic contexts in memory and runs the checks on them; this one goes
the way a user's run goes. For each size, a first process draws the same synthetic rows (same generator,
noise and seed: ``bench_scale_checks.synthetic_rows``), writes each row's 32×32 thumbnail as a PNG into
Parquet shards (``image``, ``label``, ``split`` columns; row groups of 10,000) under ``--work``, and fills a
fresh cache there with what embedding those files would have stored: the row's vector, the ImageNet logits
of the real image it was drawn from, and its image statistics with its own thumbnail and pixel hash (so the
model is never run: a pre-filled cache). A second process then runs ``datacheck audit`` on the shards with
that cache, as a user would (discovery, hashing every image's bytes, the cache read, the context and kNN
graph, every check, the 2-D map, report.json, findings.csv and report.html), after removing what earlier
audits derived (the cache's ``artifacts``): a first audit after embedding. Reported per size: the audit's wall
seconds, its peak RSS (the largest process's), and its stage times from report.json.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child import run_child
from bench_scale_checks import source_arguments, synthetic_rows

ROW_GROUP = 10_000
ROWS_PER_FILE = 100_000
IMAGE_SIZE = 96


def _png(thumb: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(thumb).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def prepare(data: Path, cache: Path, work: Path, n: int, noise: float, seed: int) -> None:
    """Write the shards and the pre-filled cache for ``n`` rows (a fresh process)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datacheck.embed.backbones import cache_tag
    from datacheck.embed.cache import Cache
    from datacheck.embed.cache_codec import embedding_key, stats_key
    from datacheck.images.stats import STATS_VERSION, ImageStats
    from datacheck.params import EmbedParams

    start = time.perf_counter()
    rows = synthetic_rows(data, cache, n, noise, seed)
    real, names = rows.real, rows.real.class_names
    params = EmbedParams(image_size=IMAGE_SIZE)
    tag = cache_tag(params.model, IMAGE_SIZE, weights=params.weights)
    shards, store = work / "data", Cache(work / "cache")
    shards.mkdir(parents=True)
    real_stats = real.stats.to_dict("records")
    writer = None
    for first in range(0, n, ROW_GROUP):
        chunk = range(first, min(first + ROW_GROUP, n))
        images = [_png(rows.thumbs[i]) for i in chunk]
        shas = [hashlib.sha256(b).hexdigest() for b in images]
        embeddings, stats = [], []
        for i, sha, image in zip(chunk, shas, images, strict=True):
            logits = None if real.logits is None else real.logits[rows.base[i]]
            embeddings.append((embedding_key(sha, tag), rows.vectors[i], logits))
            thumb = rows.thumbs[i].tobytes()
            fields = {**real_stats[rows.base[i]], "format": "PNG", "mode": "RGB", "file_size": len(image)}
            fields["pixel_hash"] = hashlib.sha256(thumb).hexdigest()  # its own pixels, 32×32
            stats.append((stats_key(sha, STATS_VERSION), ImageStats(**fields, thumb=thumb).to_bytes()))
        store.put_embeddings(embeddings)
        store.put_stats(stats)
        table = pa.table(
            {
                "image": pa.array(images, pa.binary()),
                "label": [names[rows.labels[i]] for i in chunk],
                "split": [str(rows.splits[i]) for i in chunk],
            }
        )
        if first % ROWS_PER_FILE == 0:
            if writer is not None:
                writer.close()
            writer = pq.ParquetWriter(shards / f"part-{first // ROWS_PER_FILE:05d}.parquet", table.schema)
        writer.write_table(table, row_group_size=ROW_GROUP)
    if writer is not None:
        writer.close()
    print(json.dumps({"images": n, "prepare_seconds": time.perf_counter() - start}))


def audit_child(work: Path) -> None:
    """Run ``datacheck audit`` on the shards; report its wall time, peak RSS and stage times."""
    out = work / "report"
    # what earlier audits derived (kNN graph, pair scores, map …): each audit is a first one from the cache
    shutil.rmtree(work / "cache" / "artifacts", ignore_errors=True)
    cmd = [str(Path(sys.executable).with_name("datacheck")), "audit", str(work / "data"), "--cache"]
    cmd += [str(work / "cache"), "--image-size", str(IMAGE_SIZE), "--out", str(out), "-q"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # 1: the gate failed on findings, as it may on this data
        sys.exit(f"audit failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    report = json.loads((out / "report.json").read_text())
    duplicates = next((c for c in report["checks"] if c["id"] == "duplicates"), {"metrics": {}})
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                "timings": report.get("timings", {}),
                "embedding": report.get("embedding", {}),
                "statuses": {c["id"]: c["status"] for c in report["checks"]},
                "html_mb": (out / "report.html").stat().st_size / 2**20,
                # the duplicates check's work follows its candidate pairs (at most k per image)
                "duplicate_candidates": duplicates["metrics"].get("candidate_pairs", 0),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source_arguments(parser, sizes=[100_000, 1_000_000])
    parser.add_argument("--work", type=Path, required=True, help="where shards, caches and reports go")
    parser.add_argument("--noise", type=float, default=1.0, help="norm of the noise added to each vector")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="audits per size (best of)")
    parser.add_argument("--keep", action="store_true", help="keep each size's shards and cache")
    parser.add_argument("--prepare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--audit", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.data, args.cache, args.work, args.prepare, args.noise, args.seed)
        return
    if args.audit:
        audit_child(args.work)
        return
    rows = []
    for n in args.sizes:
        work = args.work / f"n{n}"
        if not (work / "cache").exists():
            cmd = [sys.executable, __file__, "--prepare", str(n), "--data", str(args.data), "--cache"]
            cmd += [str(args.cache), "--work", str(work), "--noise", str(args.noise)]
            cmd += ["--seed", str(args.seed)]
            print(json.dumps(run_child(cmd)), flush=True)
        audit = [sys.executable, __file__, "--audit", "--work", str(work)]
        audit += ["--data", str(args.data), "--cache", str(args.cache)]
        runs = [run_child(audit) for _ in range(args.repeat)]
        for run in runs:
            print(json.dumps(run), flush=True)
        rows.append({"images": n, **min(runs, key=lambda r: r["seconds"])})
        if not args.keep:
            shutil.rmtree(work)
    stages = ["embed_hash", "embed_cache_read", "embed_total", "knn"]
    checks = [k for k in rows[0]["timings"] if k.startswith("check_")]
    header = ["images", "audit s", "peak RSS MiB", *stages, *checks, "map", "report.html MiB"]
    print("\n| " + " | ".join(header) + " |\n" + "|---:" * len(header) + "|")
    for r in rows:
        t = r["timings"]
        cells = [f"{r['images']:,}", f"{r['seconds']:.0f}", f"{r['peak_mb']:,.0f}"]
        cells += [f"{t.get(k, 0.0):.1f}" for k in [*stages, *checks, "map"]] + [f"{r['html_mb']:.1f}"]
        print("| " + " | ".join(cells) + " |")
    print("\nduplicates check: candidate pairs per image, and seconds per 1,000 candidate pairs:")
    for r in rows:
        pairs = r.get("duplicate_candidates", 0)
        per_k = 1000 * r["timings"].get("check_duplicates", 0.0) / pairs if pairs else float("nan")
        print(f"  {r['images']:,}: {pairs / r['images']:.2f} per image, {per_k:.3f} s per 1,000")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        ratio = np.log(b["images"] / a["images"])
        print("\ngrowth exponents (time ∝ N^e) from the first to the last size:")
        for name in ["seconds", *stages, *checks, "map"]:
            t0 = a["seconds"] if name == "seconds" else a["timings"].get(name, 0.0)
            t1 = b["seconds"] if name == "seconds" else b["timings"].get(name, 0.0)
            if t0 > 0.05:
                print(f"  {name}: {np.log(t1 / t0) / ratio:.2f}")


if __name__ == "__main__":
    main()
