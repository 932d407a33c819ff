"""Near-duplicate detection on CIFAR-10: planted copies (recall, false pairs) and the real test/train overlap.

Usage::

    python bench/bench_near_duplicates.py                       # planted: 2,000 images + 350 edited copies
    python bench/bench_near_duplicates.py --full                # also: all 60k, test vs train, with defaults
    python bench/bench_near_duplicates.py --base 4000 --plant 700 --seed 1 --sheets /tmp/neardup

Needs ``../shared/datasets/cifar10-jpeg.tar.gz`` (see ../shared/README.md); it is unpacked into a temporary
folder (``--work`` to keep and reuse one), never into the repository. Embeddings come from the project's
pipeline (``datacheck.api.embed`` at 96 px) with its cache under the work folder.

**Planted.** ``--base`` random training images plus ``--plant`` edited copies of as many of them, in the same
class folder, one edit kind per copy in turn: random crop (75–92 % of the side) resized back, shift by 1–3
px (edge fill), colour (brightness, contrast, saturation ×0.7–1.3/0.3–1.7, hue ±28°), JPEG at quality
10–30, horizontal flip, rotation by 4–12°, and a combination of 2–3 of those. Then:

* stage 1 (bottleneck cosine on the shared kNN graph): where each copy's original ranks among its
  neighbours; recall and other pairs above cosine thresholds;
* stage 2 (thumbnail verification of every kNN pair): recall and *unplanted* pairs above score thresholds,
  the cosine-floor × score grid, recall per edit kind, what the coarse-to-fine cascade loses, throughput.

"Unplanted" pairs are not all false: CIFAR-10 contains its own near duplicates. ``--sheets DIR`` writes
contact sheets (PNG) of the unplanted pairs above the default and of the missed copies to judge them.

**Full** (``--full``): every CIFAR-10 image, ``train/`` and ``test/`` splits, audited with the default
parameters through the ``duplicates`` and ``leakage`` checks: test images with a near duplicate in train
(Barz & Denzler 2020 report ~3.3 % for CIFAR-10), timings, and a contact sheet of leak pairs.
"""

from __future__ import annotations

import argparse
import datetime
import io
import platform
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from datacheck import neardup
from datacheck.api import embed
from datacheck.context import AuditContext, build_context
from datacheck.params import EmbedParams

TARBALL = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
COS_THRESHOLDS = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5)
SCORE_THRESHOLDS = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6)
GRID = (0.9, 0.85, 0.8, 0.75, 0.7)
FULL_THRESHOLDS = (0.95, 0.9, 0.85, 0.8, 0.75)
FLOORS = (0.0, 0.5, 0.55, 0.6, 0.65, 0.7)

# ------------------------------------------------------------------------------------------ edits

Edit = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _img(x: np.ndarray) -> Image.Image:
    return Image.fromarray(x)


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


def crop_resize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    side = round(x.shape[0] * rng.uniform(0.75, 0.92))
    y0, x0 = rng.integers(0, x.shape[0] - side + 1, 2)
    return _arr(_img(x).crop((x0, y0, x0 + side, y0 + side)).resize(x.shape[:2][::-1], Image.BICUBIC))


def shift(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    dy = dx = 0
    while dy == dx == 0:
        dy, dx = rng.integers(-3, 4, 2)
    padded = np.pad(x, ((3, 3), (3, 3), (0, 0)), mode="edge")
    return padded[3 - dy : 3 - dy + x.shape[0], 3 - dx : 3 - dx + x.shape[1]]


def colour(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = ImageEnhance.Brightness(_img(x)).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.3, 1.7))
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + rng.integers(-20, 21)) % 256
    return _arr(Image.fromarray(hsv, "HSV"))


def jpeg(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    buffer = io.BytesIO()
    _img(x).save(buffer, "JPEG", quality=int(rng.integers(10, 31)))
    return _arr(Image.open(buffer))


def flip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.ascontiguousarray(x[:, ::-1])


def rotate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(4, 12) * rng.choice([-1, 1])
    fill = tuple(int(v) for v in x.reshape(-1, 3).mean(axis=0))
    big = _img(x).resize((128, 128), Image.BICUBIC).rotate(angle, Image.BICUBIC, fillcolor=fill)
    return _arr(big.resize(x.shape[:2][::-1], Image.LANCZOS))


SINGLE: dict[str, Edit] = {
    "crop_resize": crop_resize,
    "shift": shift,
    "colour": colour,
    "jpeg": jpeg,
    "flip": flip,
    "rotate": rotate,
}


def combo(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    for name in rng.choice(list(SINGLE), size=int(rng.integers(2, 4)), replace=False):
        x = SINGLE[str(name)](x, rng)
    return x


EDITS: dict[str, Edit] = {**SINGLE, "combo": combo}

# ------------------------------------------------------------------------------------------ data


def unpack(work: Path) -> Path:
    root = work / "cifar10"
    if not (root / "test").is_dir():
        print(f"unpacking {TARBALL} into {work} …", flush=True)
        with tarfile.open(TARBALL) as tar:
            tar.extractall(root, filter="data")
    return root


def plant(cifar: Path, out: Path, n_base: int, n_plant: int, seed: int) -> dict[str, tuple[str, str]]:
    """Write the planted dataset; returns ``{copy path: (original path, edit kind)}`` (dataset-relative)."""
    rng = np.random.default_rng(seed)
    files = sorted((cifar / "train").glob("*/*.jpg"))
    base = [files[i] for i in rng.choice(len(files), n_base, replace=False)]
    truth = {}
    for k, path in enumerate(base):
        rel = f"{path.parent.name}/base_{k:05d}.jpg"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(path.read_bytes())
        if k < n_plant:
            kind = list(EDITS)[k % len(EDITS)]
            copy = f"{path.parent.name}/copy_{k:05d}_{kind}.png"
            _img(EDITS[kind](np.asarray(Image.open(path).convert("RGB")), rng)).save(out / copy)
            truth[copy] = (rel, kind)
    return truth


def context(root: Path, cache: Path) -> tuple[AuditContext, float]:
    start = time.perf_counter()
    res = embed(root, EmbedParams(image_size=96, cache_dir=cache))
    ctx = build_context(res.dataset, res.embeddings)
    return ctx, time.perf_counter() - start


# ------------------------------------------------------------------------------------------ tables


def table(header: list[str], rows: list[list[object]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")
    print()


def stage1(ctx: AuditContext, true_pairs: set[tuple[int, int]], copies: dict[int, int]) -> None:
    ranks = []
    for copy, original in copies.items():
        hit = np.flatnonzero(ctx.knn.indices[copy] == original)
        ranks.append(int(hit[0]) if len(hit) else 10**6)
    ranks = np.array(ranks)
    print(f"### Stage 1: bottleneck cosine (kNN k={ctx.knn.k})\n")
    table(
        ["original among the copy's nearest", "share of copies"],
        [[f"top {k}", float(np.mean(ranks < k))] for k in (1, 5, 10, ctx.knn.k)],
    )
    pairs = ctx.knn.pairs(-1.0)
    cos = np.einsum("pd,pd->p", ctx.vectors[pairs[:, 0]], ctx.vectors[pairs[:, 1]])
    is_true = np.array([(int(a), int(b)) in true_pairs for a, b in pairs])
    top = is_true[np.argsort(-cos)[: len(true_pairs)]].sum()
    print(
        f"The {len(true_pairs)} most similar kNN pairs by cosine contain {top} planted pairs "
        f"({top / len(true_pairs):.0%}).\n"
    )
    table(
        ["cosine ≥", "recall", "other pairs"],
        [
            [t, float(is_true[cos >= t].sum() / len(true_pairs)), int((~is_true[cos >= t]).sum())]
            for t in COS_THRESHOLDS
        ],
    )


def stage2(
    ctx: AuditContext,
    true_pairs: set[tuple[int, int]],
    kinds: dict[tuple[int, int], str],
    defaults: neardup.NearDupParams,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, set[tuple[int, int]]]:
    pairs, cos = neardup.candidate_pairs(ctx.knn, -1.0)
    wall, cpu = time.perf_counter(), time.process_time()
    ver = neardup.verify_pairs(ctx.thumbs, pairs, refine_above=-2.0)  # refine every pair to measure
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    score = ver.score
    key = [tuple(sorted((int(a), int(b)))) for a, b in pairs]
    is_true = np.array([k in true_pairs for k in key])
    n_true = len(true_pairs)
    print("### Stage 2: thumbnail verification of every kNN pair\n")
    print(
        f"{len(pairs):,} kNN pairs hold {is_true.sum()} of the {n_true} planted pairs; recall is over all "
        f"{n_true}.\n"
    )
    top = is_true[np.argsort(-score)[:n_true]].sum()
    print(
        f"The {n_true} best pairs by verification score contain {top} planted pairs ({top / n_true:.0%}).\n"
    )
    table(
        ["score ≥", "recall", "unplanted pairs", "… of them with cosine ≥ floor"],
        [
            [
                t,
                float(is_true[score >= t].sum() / n_true),
                int((~is_true[score >= t]).sum()),
                int((~is_true[(score >= t) & (cos >= defaults.min_cosine)]).sum()),
            ]
            for t in SCORE_THRESHOLDS
        ],
    )
    print("Rule `cosine ≥ floor and score ≥ t`: recall / unplanted pairs\n")
    table(
        ["floor \\ t", *map(str, GRID)],
        [
            [
                f,
                *[
                    f"{is_true[(cos >= f) & (score >= t)].sum() / n_true:.3f} / "
                    f"{(~is_true[(cos >= f) & (score >= t)]).sum()}"
                    for t in GRID
                ],
            ]
            for f in FLOORS
        ],
    )
    slack = neardup._COARSE_SLACK
    refine = ver.coarse >= defaults.min_score - slack
    accept = (cos >= defaults.min_cosine) & (score >= defaults.min_score)
    # The check's own pairs (neardup.duplicate_pairs at the defaults: min_score, the nearest-neighbour rule,
    # the coarse-to-fine cascade), not a re-implementation of its rule.
    found = neardup.duplicate_pairs(ctx, defaults)
    found_keys = {tuple(sorted((int(a), int(b)))) for a, b in zip(found["i"], found["j"], strict=True)}
    hit = np.array([k in found_keys for k in key])
    lost = accept & ~hit
    unplanted = len(found_keys - true_pairs)
    found_true = found_keys & true_pairs
    print(
        f"**As the check runs** (cosine ≥ {defaults.min_cosine}, score ≥ {defaults.min_score}, or ≥ "
        f"{defaults.nearest_score} between nearest neighbours; kNN and layout-index candidates; "
        f"coarse-to-fine): recall {len(found_true) / n_true:.3f}, {unplanted} unplanted pairs "
        f"({len(found_true - set(key))} planted pairs found through the layout index only). The cascade "
        f"refines the {refine.mean():.1%} of kNN pairs whose coarse score is ≥ min_score − {slack} "
        f"(nearest pairs: from nearest_score − {slack}); {lost.sum()} kNN pair(s) that refining every pair "
        f"would accept at min_score are not found ({(lost & is_true).sum()} planted).\n"
    )
    print("Recall per edit kind as the check runs\n")
    table(
        ["edit", "copies", "found", "recall"],
        [
            [
                kind,
                sum(v == kind for v in kinds.values()),
                sum(v == kind for k, v in kinds.items() if k in found_keys),
                sum(v == kind for k, v in kinds.items() if k in found_keys)
                / sum(v == kind for v in kinds.values()),
            ]
            for kind in EDITS
        ],
    )
    start = time.perf_counter()
    neardup.verify_pairs(ctx.thumbs, pairs, refine_above=defaults.min_score - slack)
    print(
        f"Throughput: refining every pair {len(pairs) / wall:,.0f} pairs/s (CPU {cpu:.2f} s); with the "
        f"cascade {len(pairs) / (time.perf_counter() - start):,.0f} pairs/s.\n"
    )
    return pairs, cos, score, hit, found_keys


def planted(args: argparse.Namespace, work: Path, defaults: neardup.NearDupParams) -> None:
    root = work / f"planted_{args.base}_{args.plant}_{args.seed}"
    if not root.is_dir():
        truth = plant(unpack(work), root, args.base, args.plant, args.seed)
        (root / "truth.tsv").write_text("".join(f"{c}\t{o}\t{k}\n" for c, (o, k) in truth.items()))
    truth = {
        c: (o, k) for c, o, k in (line.split("\t") for line in (root / "truth.tsv").read_text().splitlines())
    }
    ctx, seconds = context(root, work / "cache")
    row = {p: i for i, p in enumerate(ctx.paths)}
    copies = {row[c]: row[o] for c, (o, _) in truth.items()}
    true_pairs = {tuple(sorted(p)) for p in copies.items()}
    kinds = {tuple(sorted((row[c], row[o]))): k for c, (o, k) in truth.items()}
    print(
        f"## Planted: {args.base:,} CIFAR-10 training images + {args.plant} edited copies "
        f"(seed {args.seed}; embedded in {seconds:.0f} s)\n"
    )
    stage1(ctx, true_pairs, copies)
    pairs, cos, score, hit, found_keys = stage2(ctx, true_pairs, kinds, defaults)
    if args.sheets:
        other = [k for k in np.flatnonzero(hit) if tuple(sorted(map(int, pairs[k]))) not in true_pairs]
        other.sort(key=lambda k: -score[k])
        contact_sheet(
            ctx,
            [tuple(pairs[k]) for k in other],
            [f"s{score[k]:.2f} c{cos[k]:.2f}" for k in other],
            args.sheets / "planted_unplanted_pairs.png",
        )
        found = found_keys  # the check's pairs, layout-index finds included
        missed = [p for p in sorted(true_pairs) if p not in found]
        contact_sheet(ctx, missed, [kinds[p] for p in missed], args.sheets / "planted_missed.png")


# ------------------------------------------------------------------------------------------ full CIFAR-10


def full(args: argparse.Namespace, work: Path) -> None:
    from datacheck.checks.duplicates import DuplicatesParams, check_duplicates
    from datacheck.checks.leakage import LeakageParams, check_leakage

    ctx, seconds = context(unpack(work), work / "cache")
    print(f"## Full CIFAR-10: {ctx.n:,} images (embedding + kNN graph {seconds:.0f} s)\n")
    wall, cpu = time.perf_counter(), time.process_time()
    dup = check_duplicates(ctx, DuplicatesParams())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    start = time.perf_counter()
    leak = check_leakage(ctx, LeakageParams(max_findings=10**6))  # same definition: reuses the pairs
    leak_seconds = time.perf_counter() - start
    pairs = neardup.duplicate_pairs(ctx, LeakageParams())
    print(
        f"Defaults: {pairs.attrs['candidates']:,} kNN candidate pairs, {pairs.attrs['refined']:,} refined at "
        f"32 px, {len(pairs):,} duplicate pairs. `duplicates` (computes the pairs) {wall:.1f} s wall, "
        f"{cpu:.1f} s CPU; `leakage` (reuses them) {leak_seconds:.2f} s.\n"
    )
    print(f"- duplicates: **{dup.status}** — {dup.summary}; metrics {dup.to_dict()['metrics']}")
    print(f"- leakage: **{leak.status}** — {leak.summary}; metrics {leak.to_dict()['metrics']}\n")
    thresholds(ctx)
    if args.sheets:
        rng = np.random.default_rng(0)
        leaks = list(leak.findings)
        row = {p: i for i, p in enumerate(ctx.paths)}
        sample = [leaks[i] for i in sorted(rng.choice(len(leaks), min(96, len(leaks)), replace=False))]
        weakest = sorted(leaks, key=lambda f: f.extra["score"])[:48]
        for name, chosen in (("full_leaks_sample.png", sample), ("full_leaks_weakest.png", weakest)):
            contact_sheet(
                ctx,
                [(row[f.files[0]], row[f.files[1]]) for f in chosen],
                [f"s{f.extra['score']:.2f} c{f.extra['similarity']:.2f}" for f in chosen],
                args.sheets / name,
            )


def thresholds(ctx: AuditContext) -> None:
    """Test images with a near duplicate in train, and all duplicate pairs, for other ``min_score`` values."""
    floor = neardup.NearDupParams().min_cosine
    pairs, _ = neardup.candidate_pairs(ctx.knn, floor)
    low = min(FULL_THRESHOLDS)
    score = neardup.verify_pairs(ctx.thumbs, pairs, refine_above=low - neardup._COARSE_SLACK).score
    score = np.nan_to_num(score, nan=-1.0)
    splits = np.array(ctx.splits, dtype=object)
    cross = splits[pairs[:, 0]] != splits[pairs[:, 1]]
    test_row = np.where(splits[pairs[:, 0]] == "test", pairs[:, 0], pairs[:, 1])
    print(f"Near-duplicate pairs (cosine ≥ {floor}) by `min_score`\n")
    rows = []
    for t in FULL_THRESHOLDS:
        leak = cross & (score >= t)
        n_test = len(np.unique(test_row[leak]))
        rows.append(
            [t, int((score >= t).sum()), int(leak.sum()), n_test, f"{n_test / (splits == 'test').sum():.1%}"]
        )
    table(
        ["min_score", "pairs", "test/train pairs", "test images with a copy in train", "share of test"], rows
    )


def contact_sheet(
    ctx: AuditContext,
    pairs: list[tuple[int, int]],
    labels: list[str],
    path: Path,
    per_row: int = 8,
    scale: int = 3,
) -> None:
    """Pairs side by side (the dataset's 32-px thumbnails, enlarged), captioned, ``per_row`` per row."""
    if not pairs:
        print(f"(no pairs for {path.name})\n")
        return
    tile_w, tile_h = (64 + 2) * scale + 6, 32 * scale + 16
    sheet = Image.new("RGB", (per_row * tile_w, -(-len(pairs) // per_row) * tile_h), "white")
    draw = ImageDraw.Draw(sheet)
    for n, ((a, b), label) in enumerate(zip(pairs, labels, strict=True)):
        x, y = (n % per_row) * tile_w, (n // per_row) * tile_h
        for k, row in enumerate((a, b)):
            thumb = Image.fromarray(np.asarray(ctx.thumbs[row])).resize(
                (32 * scale, 32 * scale), Image.NEAREST
            )
            sheet.paste(thumb, (x + k * (32 + 2) * scale, y + 14))
        draw.text((x, y), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    print(f"contact sheet: {path} ({len(pairs)} pairs)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=2000, help="real training images")
    parser.add_argument("--plant", type=int, default=350, help="edited copies of as many of them")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", action="store_true", help="also audit all 60k images (test vs train)")
    parser.add_argument("--work", type=Path, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--sheets", type=Path, help="folder for contact-sheet PNGs")
    args = parser.parse_args()
    defaults = neardup.NearDupParams()
    print(
        f"{datetime.date.today()}, {platform.machine()}, Python {platform.python_version()}, "
        f"numpy {np.__version__}; defaults {defaults}\n"
    )
    with tempfile.TemporaryDirectory(prefix="bench_neardup_") as tmp:
        work = args.work or Path(tmp)
        planted(args, work, defaults)
        if args.full:
            full(args, work)


if __name__ == "__main__":
    main()
