"""Real near-duplicates and train/test leaks (ciFAIR): the duplicates and leakage checks vs their peers.

Usage::

    pip install -e ".[bench]"                                  # CleanVision and imagehash, the peers
    python bench/bench_leaks_real.py --cache /tmp/c96          # defaults: ../shared/datasets/…

The 158 manually judged pairs of ``cifair10-pairs-dev.csv`` (judgment 0 exact, 1 same shot, 2 very similar;
``test_file`` vs a training image = a leak, or vs another test image) are placed among ``--distractors``
random CIFAR-10 train and test images, in their original ``train|test/<class>/<n>.jpg`` paths. The checks run
at their defaults through ``datacheck.api.audit(checks=["duplicates", "leakage"])``; a listed pair is found
when one duplicate group holds both files, and found *as leakage* when the leakage check lists the pair.
Flagged pairs: every pair inside a duplicate group plus every leakage pair (a group of n counts n(n-1)/2).

Peers in the same run, on the same files, offline: CleanVision's ``near_duplicates`` and
``exact_duplicates`` issues (its sets), and perceptual hashes as imagededup computes them — PHash and DHash,
64 bits, pairs within imagededup's default Hamming distance of 10 — with the ``imagehash`` implementation
(imagededup itself imports PyTorch at start-up, which this project does not install). With
``--fastdup-python`` (an interpreter with ``pip install fastdup``; kept out of the project's environment:
a 90 MB binary wheel with OpenCV and telemetry, switched off here by ``SENTRY_OPT_OUT``), fastdup too: its
bundled embedding model, run at its defaults; pairs at its similarity of 0.96 and more (the default
``ccthreshold`` of its duplicate components) and, looser, at its ``threshold`` of 0.9.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tarfile
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from datacheck import api
from datacheck.params import EmbedParams

Pair = tuple[str, str]


def _key(a: str, b: str) -> Pair:
    return (a, b) if a <= b else (b, a)


def build(images: Path, root: Path, pairs: pd.DataFrame, n_distractors: int, seed: int) -> list[str]:
    """Link the pair files and random distractors into ``root`` under their original paths."""
    listed = set(pairs["test_file"]) | set(pairs["other_file"])
    everything = sorted(str(p.relative_to(images)) for p in images.glob("*/*/*.jpg"))
    rng = np.random.default_rng(seed)
    pool = [p for p in everything if p not in listed]
    chosen = sorted(listed) + [pool[i] for i in rng.choice(len(pool), n_distractors, replace=False)]
    for rel in chosen:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(images / rel, root / rel)
    return chosen


def datacheck_pairs(root: Path, params: EmbedParams) -> tuple[set[Pair], set[Pair], float]:
    """(pairs inside duplicate groups, leakage pairs, seconds of the two checks)."""
    listing = {"duplicates": {"max_findings": 10**6}, "leakage": {"max_findings": 10**6}}
    report = api.audit(
        root, checks=["duplicates", "leakage"], check_params=listing, map_method="none", **params.as_options()
    )
    grouped = {
        _key(a, b) for f in report.check("duplicates").findings for a, b in combinations(sorted(f.files), 2)
    }
    leaks = {_key(*f.files) for f in report.check("leakage").findings}
    seconds = report.timings["check_duplicates"] + report.timings["check_leakage"]
    return grouped, leaks, seconds


def cleanvision_pairs(root: Path, files: list[str]) -> tuple[set[Pair], float]:
    from cleanvision import Imagelab

    start = time.process_time()
    lab = Imagelab(filepaths=[str(root / f) for f in files])
    lab.find_issues({"near_duplicates": {}, "exact_duplicates": {}}, verbose=False)
    seconds = time.process_time() - start
    pairs = set()
    for kind in ("near_duplicates", "exact_duplicates"):
        for group in lab.info[kind]["sets"]:
            rel = sorted(str(Path(p).relative_to(root)) for p in group)
            pairs |= {_key(a, b) for a, b in combinations(rel, 2)}
    return pairs, seconds


def hash_pairs(root: Path, files: list[str], method: str, threshold: int = 10) -> tuple[set[Pair], float]:
    import imagehash
    from PIL import Image

    start = time.process_time()
    fn = imagehash.phash if method == "phash" else imagehash.dhash
    bits = np.array([fn(Image.open(root / f)).hash.ravel() for f in files], dtype=np.uint8)
    pairs = set()
    for i in range(len(files)):
        distance = (bits[i + 1 :] != bits[i]).sum(axis=1)
        pairs |= {_key(files[i], files[i + 1 + j]) for j in np.flatnonzero(distance <= threshold)}
    return pairs, time.process_time() - start


_FASTDUP_SCRIPT = """
import json, sys, time, fastdup
root, work = sys.argv[1], sys.argv[2]
start = time.process_time()
fd = fastdup.create(input_dir=root, work_dir=work)
fd.run(overwrite=True, verbose=False)
sim = fd.similarity()
pairs = [[a, b, float(d)] for a, b, d in zip(sim["filename_from"], sim["filename_to"], sim["distance"])]
print(json.dumps({"pairs": pairs, "seconds": time.process_time() - start}))
"""


def fastdup_pairs(python: str, root: Path, work: Path) -> tuple[dict[float, set[Pair]], float]:
    """fastdup's similar pairs at 0.96 and 0.9, run by another interpreter; (pairs by bar, CPU seconds)."""
    env = {**os.environ, "SENTRY_OPT_OUT": "1"}
    run = subprocess.run(
        [python, "-c", _FASTDUP_SCRIPT, str(root), str(work)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    out = json.loads(run.stdout.strip().splitlines()[-1])
    found: dict[float, set[Pair]] = {0.96: set(), 0.9: set()}
    for a, b, similarity in out["pairs"]:
        # split/class/file: the same in the set and in the unpacked tree its links point to
        pair = _key("/".join(Path(a).parts[-3:]), "/".join(Path(b).parts[-3:]))
        for bar, pairs in found.items():
            if similarity >= bar:
                pairs.add(pair)
    return found, out["seconds"]


def summarise(
    name: str, flagged: set[Pair], listed: pd.DataFrame, leaks: set[Pair] | None, seconds: float
) -> str:
    keys = [_key(a, b) for a, b in zip(listed["test_file"], listed["other_file"], strict=True)]
    found = np.array([k in flagged for k in keys])
    judgment = listed["judgment"].to_numpy()
    by_judgment = {j: _share(found[judgment == j]) for j in (0, 1, 2)}
    shot = _share(found[judgment <= 1])
    cross = listed["other_file"].str.startswith("train/").to_numpy()
    as_leak = "–"
    if leaks is not None:
        as_leak = f"{np.mean([k in leaks for k, c in zip(keys, cross, strict=True) if c]):.3f}"
    return (
        f"| {name} | {by_judgment[0]} | {by_judgment[1]} | {by_judgment[2]} | {shot} | "
        f"{_share(found)} | {as_leak} | {len(flagged)} | {seconds:.1f} |"
    )


def contact_sheet(
    root: Path, flagged: set[Pair], listed: pd.DataFrame, out: Path, n: int, seed: int
) -> list[Pair]:
    """A PNG of ``n`` random flagged pairs that the list does not hold, numbered, for a person to judge."""
    from PIL import Image, ImageDraw

    known = {_key(a, b) for a, b in zip(listed["test_file"], listed["other_file"], strict=True)}
    extra = sorted(flagged - known)
    rng = np.random.default_rng(seed)
    chosen = [extra[i] for i in sorted(rng.choice(len(extra), min(n, len(extra)), replace=False))]
    scale, cols, pad = 3, 4, 24
    cell_w, cell_h = 2 * 32 * scale + 8 + pad, 32 * scale + pad
    rows = (len(chosen) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (a, b) in enumerate(chosen):
        x, y = (k % cols) * cell_w, (k // cols) * cell_h
        for j, rel in enumerate((a, b)):
            img = Image.open(root / rel).convert("RGB").resize((32 * scale, 32 * scale), Image.NEAREST)
            sheet.paste(img, (x + j * (32 * scale + 8), y + pad - 4))
        draw.text((x + 2, y + 2), f"{k + 1}", fill="black")
    sheet.save(out)
    for k, (a, b) in enumerate(chosen, 1):
        print(f"  sheet pair {k}: {a}  ~  {b}")
    return chosen


def _share(hits: np.ndarray) -> str:
    """The share found, or "–" for an empty category (the dev list has no judgment-0 pair)."""
    return f"{hits.mean():.3f}" if len(hits) else "–"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    shared = Path("../shared/datasets")
    parser.add_argument("--cifar", type=Path, default=shared / "cifar10-jpeg.tar.gz")
    parser.add_argument("--pairs", type=Path, default=shared / "cifair10-pairs-dev.csv")
    parser.add_argument("--cache", type=Path, required=True, help="bottleneck cache (reused across runs)")
    parser.add_argument("--image-size", type=str, default="auto")
    parser.add_argument("--distractors", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contact-sheet", type=Path, help="PNG of random flagged pairs outside the list")
    parser.add_argument("--sheet-pairs", type=int, default=24)
    parser.add_argument(
        "--fastdup-python", help="an interpreter with fastdup installed: run it as a peer too"
    )
    args = parser.parse_args()
    size = args.image_size if args.image_size == "auto" else int(args.image_size)
    params = EmbedParams(cache_dir=args.cache, image_size=size)
    listed = pd.read_csv(args.pairs)
    with tempfile.TemporaryDirectory(prefix="bench-leaks-real-") as tmp:
        images = Path(tmp) / "cifar"
        with tarfile.open(args.cifar) as tar:
            tar.extractall(images, filter="data")
        root = Path(tmp) / "set"
        files = build(images, root, listed, args.distractors, args.seed)
        grouped, leaks, seconds = datacheck_pairs(root, params)
        if args.contact_sheet is not None:
            contact_sheet(root, grouped | leaks, listed, args.contact_sheet, args.sheet_pairs, args.seed)
        rows = [summarise("datacheck (duplicates ∪ leakage)", grouped | leaks, listed, leaks, seconds)]
        flagged, seconds = cleanvision_pairs(root, files)
        rows.append(summarise("CleanVision near + exact duplicates", flagged, listed, None, seconds))
        for method in ("phash", "dhash"):
            flagged, seconds = hash_pairs(root, files, method)
            rows.append(
                summarise(f"{method.upper()} ≤ 10 bits (imagededup default)", flagged, listed, None, seconds)
            )
        if args.fastdup_python:
            by_bar, seconds = fastdup_pairs(args.fastdup_python, root, Path(tmp) / "fastdup")
            for bar, flagged in by_bar.items():
                rows.append(summarise(f"fastdup, similarity ≥ {bar}", flagged, listed, None, seconds))
    print(f"{len(files)} images: {len(listed)} listed pairs among {args.distractors} distractors\n")
    print(
        "| method | exact (0) | same shot (1) | very similar (2) | 0–1 | all listed | test→train as leakage "
        "| pairs flagged | seconds |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
