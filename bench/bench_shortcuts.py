"""Shortcuts at realistic strength: a detection curve of the ``shortcuts`` check, with a same-run baseline.

Usage::

    python bench/bench_shortcuts.py --cache /tmp/c96    # default: ../shared/datasets/cifar10-jpeg.tar.gz

Class sets are random pairs and triples of CIFAR-10 classes (``--images`` training images per class). Every
set is audited once as it is and twice with one planted cue: a family drawn at random — global (brightness,
contrast, saturation, colour cast, blur, noise, JPEG quality, resolution) or local (corner stamp, frame) — at
a random strength, on a random share (50-100 %) of one class's images. Every image of a set is re-encoded
the same way (JPEG quality 90) so that only the planted cue differs.

For every planted set the *oracle strength* is the balanced accuracy of a cross-validated logistic
regression telling the cued class from the others on the planted property alone (the image statistics that
measure it). The check runs at its defaults through ``datacheck.api.audit(checks=["shortcuts"])``; it
*detects* a cue when a warning-or-worse finding names the cued class, and *names* it when that finding's
cue belongs to the planted family. The baseline, on the same images: a cross-validated logistic regression on
the whole image-statistics vector predicting the class; it "detects" when its balanced accuracy is at least
0.70 (what a careful user might conclude by hand). False alarms: warning-or-worse findings on unplanted sets.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from datacheck import api
from datacheck.images import ImageStats
from datacheck.params import EmbedParams

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
QUALITY = 90

#: Planted cue families: the strengths tried, and the check's cue names that count as naming it.
FAMILIES: dict[str, tuple[tuple[float, ...], tuple[str, ...]]] = {
    "brightness": ((1.1, 1.25), ("brightness",)),
    "contrast": ((0.8, 0.6), ("contrast",)),
    "saturation": ((0.6, 0.3), ("saturation", "colour cast")),
    "colour cast": ((10.0, 25.0), ("colour cast",)),
    "blur": ((0.6, 1.0), ("sharpness", "file size")),
    "noise": ((6.0, 12.0), ("sharpness", "file size")),
    "JPEG quality": ((50.0, 25.0), ("JPEG quality", "file size")),
    "resolution": ((0.75, 0.5), ("sharpness", "file size")),
    "corner stamp": ((0.5, 1.0), ("corner:", "edge:")),
    "frame": ((1.0, 2.0), ("border", "edge:", "background")),
}

#: Image statistics that measure each family's property (the oracle probe's features).
ORACLE_FEATURES: dict[str, tuple[str, ...]] = {
    "brightness": ("brightness",),
    "contrast": ("contrast",),
    "saturation": ("saturation",),
    "colour cast": ("mean_r", "mean_g", "mean_b"),
    "blur": ("sharpness",),
    "noise": ("sharpness", "entropy"),
    "JPEG quality": ("jpeg_quality", "file_size"),
    "resolution": ("sharpness",),
    "corner stamp": ("corner",),
    "frame": ("border_r", "border_g", "border_b", "border_std"),
}

#: The numeric image-statistics vector the baseline learns from: every float field of ImageStats, plus the
#: file size and JPEG quality.
NUMERIC_STATS = (
    *(f.name for f in dataclasses.fields(ImageStats) if f.type == "float"),
    "file_size",
    "jpeg_quality",
)


def plant(
    img: Image.Image, family: str, strength: float, rng: np.random.Generator
) -> tuple[Image.Image, int]:
    """The image with the cue, and the JPEG quality to save it at."""
    if family == "brightness":
        return ImageEnhance.Brightness(img).enhance(strength), QUALITY
    if family == "contrast":
        return ImageEnhance.Contrast(img).enhance(strength), QUALITY
    if family == "saturation":
        return ImageEnhance.Color(img).enhance(strength), QUALITY
    if family == "colour cast":
        arr = np.asarray(img, dtype=np.float32) + np.array([strength, 0.0, -strength / 2])
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), QUALITY
    if family == "blur":
        return img.filter(ImageFilter.GaussianBlur(strength)), QUALITY
    if family == "noise":
        arr = np.asarray(img, dtype=np.float32) + rng.normal(0, strength, (*img.size[::-1], 3))
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), QUALITY
    if family == "JPEG quality":
        return img, int(strength)
    if family == "resolution":
        small = img.resize((max(1, int(img.width * strength)),) * 2, Image.BILINEAR)
        return small.resize(img.size, Image.BILINEAR), QUALITY
    if family == "corner stamp":  # a 6x6 logo in the bottom-right corner at this opacity
        arr = np.asarray(img, dtype=np.float32).copy()
        logo = np.zeros((6, 6, 3), np.float32)
        logo[::2, :, 0] = 255.0
        logo[1::2, :, 2] = 255.0
        arr[-7:-1, -7:-1] = (1 - strength) * arr[-7:-1, -7:-1] + strength * logo
        return Image.fromarray(arr.astype(np.uint8)), QUALITY
    if family == "frame":  # a white frame this many pixels wide
        arr = np.asarray(img).copy()
        w = int(strength)
        arr[:w], arr[-w:], arr[:, :w], arr[:, -w:] = 255, 255, 255, 255
        return Image.fromarray(arr), QUALITY
    raise ValueError(family)


@dataclass
class Variant:
    family: str | None
    strength: float
    prevalence: float
    target: str | None


@dataclass
class Outcome:
    set_name: str
    variant: Variant
    oracle: float
    detected: bool
    named: bool
    baseline_accuracy: float
    warnings: int
    cues: str
    seconds: float


def build(images: Path, root: Path, classes: list[str], per_class: int, variant: Variant, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for cls in classes:
        (root / cls).mkdir(parents=True)
        picks = rng.choice(5000, per_class, replace=False)
        cued = set(rng.choice(per_class, round(variant.prevalence * per_class), replace=False).tolist())
        for n, index in enumerate(picks):
            img = Image.open(images / "train" / cls / f"{index:04d}.jpg").convert("RGB")
            quality = QUALITY
            if variant.family is not None and cls == variant.target and n in cued:
                img, quality = plant(img, variant.family, variant.strength, rng)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=quality)
            (root / cls / f"{n:04d}.jpg").write_bytes(buf.getvalue())


def _features(stats, names: tuple[str, ...]) -> np.ndarray:
    """Columns of a ``StatsTable`` (``corner``: the mean colour of the thumbnails' bottom-right 4×4 px)."""
    columns = []
    for name in names:
        if name == "corner":
            columns.append(stats.thumbs[:, -4:, -4:].astype(np.float32).mean(axis=(1, 2)))
        else:
            values = stats.columns[name].astype(float).fillna(0.0).to_numpy()
            columns.append(values[:, None])
    return np.hstack(columns)


def _cv_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return float(balanced_accuracy_score(y, cross_val_predict(model, x, y, cv=5)))


def evaluate(set_name: str, root: Path, variant: Variant, params: EmbedParams) -> Outcome:
    report = api.audit(root, checks=["shortcuts"], map_method="none", **params.as_options())
    res = report.check("shortcuts")
    serious = [f for f in res.findings if f.severity in ("warn", "fail")]
    embedded = api.embed(root, params).embeddings
    labels = np.array([r.label for r in embedded.records])
    baseline = _cv_accuracy(_features(embedded.stats, NUMERIC_STATS), labels)
    oracle, detected, named = float("nan"), False, False
    if variant.family is not None:
        target = labels == variant.target
        oracle = _cv_accuracy(_features(embedded.stats, ORACLE_FEATURES[variant.family]), target)
        hits = [f for f in serious if variant.target in f.extra.get("classes", [])]
        detected = bool(hits)
        accepted = FAMILIES[variant.family][1]
        named = any(f.extra.get("cue", "").startswith(accepted) for f in hits)
    cues = ", ".join(
        sorted({f"{f.extra.get('cue')} ({'/'.join(f.extra.get('classes', []))})" for f in serious})
    )
    seconds = report.timings["check_shortcuts"]
    return Outcome(set_name, variant, oracle, detected, named, baseline, len(serious), cues, seconds)


def print_tables(outcomes: list[Outcome]) -> None:
    print("| set | cue | strength | prevalence | oracle | detected | named | reported | baseline | check s |")
    print("|---|---|---:|---:|---:|---|---|---|---:|---:|")
    for o in outcomes:
        v = o.variant
        cue = f"{v.family} on {v.target}" if v.family else "none"
        print(
            f"| {o.set_name} | {cue} | {v.strength:g} | {v.prevalence:.0%} | {o.oracle:.2f} | {o.detected} | "
            f"{o.named} | {o.cues} | {o.baseline_accuracy:.2f} | {o.seconds:.2f} |"
        )
    planted = [o for o in outcomes if o.variant.family]
    clean = [o for o in outcomes if not o.variant.family]
    print("\n| oracle accuracy | planted sets | check detects | check names | baseline (acc ≥ 0.70) |")
    print("|---|---:|---:|---:|---:|")
    for low, high in ((0.0, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 1.01)):
        band = [o for o in planted if low <= o.oracle < high]
        if band:
            detected, named = np.mean([o.detected for o in band]), np.mean([o.named for o in band])
            baseline = np.mean([o.baseline_accuracy >= 0.7 for o in band])
            print(
                f"| {low:.1f}–{min(high, 1.0):.1f} | {len(band)} | {detected:.2f} | {named:.2f} "
                f"| {baseline:.2f} |"
            )
    strong = [o for o in planted if o.oracle >= 0.7 and o.variant.prevalence >= 0.8]
    if strong:
        print(
            f"\noracle ≥ 0.70 at ≥ 80 % prevalence: detected {np.mean([o.detected for o in strong]):.2f}, "
            f"named {np.mean([o.named for o in strong]):.2f} ({len(strong)} sets)"
        )
    alarms = sum(o.warnings > 0 for o in clean)
    baseline_alarms = sum(o.baseline_accuracy >= 0.7 for o in clean)
    print(f"false alarms on unplanted sets (warning or worse): {alarms}/{len(clean)}")
    print(f"baseline ≥ 0.70 on unplanted sets: {baseline_alarms}/{len(clean)}")
    print(f"check seconds: median {np.median([o.seconds for o in outcomes]):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cifar", type=Path, default=Path("../shared/datasets/cifar10-jpeg.tar.gz"))
    parser.add_argument("--cache", type=Path, required=True, help="bottleneck cache (reused across runs)")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--sets", type=int, default=20, help="class sets (half pairs, half triples)")
    parser.add_argument("--images", type=int, default=300, help="training images per class")
    args = parser.parse_args()
    params = EmbedParams(cache_dir=args.cache, image_size=args.image_size)
    outcomes: list[Outcome] = []
    families = list(FAMILIES)
    with tempfile.TemporaryDirectory(prefix="bench-shortcuts-") as tmp:
        images = Path(tmp) / "cifar"
        with tarfile.open(args.cifar) as tar:
            tar.extractall(images, filter="data")
        for s in range(args.sets):
            rng = np.random.default_rng(1000 + s)
            classes = [CLASSES[i] for i in rng.choice(10, 2 if s % 2 == 0 else 3, replace=False)]
            name = f"{s}: {'+'.join(classes)}"
            variants = [Variant(None, 0.0, 0.0, None)]
            for _ in range(2):
                family = families[int(rng.integers(len(families)))]
                strength = float(rng.choice(FAMILIES[family][0]))
                prevalence = float(rng.choice([0.5, 0.8, 1.0]))
                variants.append(
                    Variant(family, strength, prevalence, classes[int(rng.integers(len(classes)))])
                )
            for v, variant in enumerate(variants):
                root = Path(tmp) / f"set{s}-{v}"
                build(images, root, classes, args.images, variant, seed=s)
                outcomes.append(evaluate(name, root, variant, params))
                print(f"done {name} {variant.family}", flush=True)
    print_tables(outcomes)


if __name__ == "__main__":
    main()
