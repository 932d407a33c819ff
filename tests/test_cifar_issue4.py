"""Issue 4 on real images: planted shortcuts, a merged class to split, a reference with a missing kind.

Uses CIFAR-10 JPEGs from ``../shared/datasets/cifar10-jpeg.tar.gz`` (beside the repository root); skipped
with a message when the archive is absent. A subset is unpacked once per session into a temporary folder,
and every image is decoded and re-encoded the same way (JPEG quality 75, like the originals) so that the
only difference between classes is what a test plants. Embeddings use the real pipeline (EfficientNet-Lite0
at 96 px) with one cache shared by the session, so images common to several datasets are embedded once.
"""

from __future__ import annotations

import inspect
import io
import tarfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datacheck.checks.base import CheckResult, Status

ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"

pytestmark = [
    pytest.mark.cifar,
    pytest.mark.slow,
    pytest.mark.skipif(not ARCHIVE.is_file(), reason=f"CIFAR-10 archive not found at {ARCHIVE}"),
]

PER_CLASS = 300
IMAGE_SIZE = 96

#: Words of the ImageNet labels the backbone gives each CIFAR class at 96 px (checked on 500 images each).
SUBCLASS_WORDS = {
    "automobile": ("car", "cab", "convertible", "jeep", "limousine", "minivan", "wagon", "go-kart", "mower",
                   "pickup", "grille", "racer", "van", "chainsaw"),
    "ship": ("boat", "ship", "liner", "carrier", "rig", "yawl", "schooner", "fireboat", "canoe", "catamaran",
             "trimaran", "submarine", "speedboat", "wreck", "pier", "dock", "lakeshore", "vessel"),
    "horse": ("horse", "sorrel", "camel", "hartebeest", "gazelle", "wild dog", "cart", "zebra", "sled", "ox",
              "impala"),
}  # fmt: skip

Planter = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CIFAR-10 subset unpacked once: ``train/<class>/0000..0299.jpg``, ``test/<class>/0000..0099.jpg``."""
    root = tmp_path_factory.mktemp("cifar10")
    with tarfile.open(ARCHIVE, "r:gz") as archive:
        for member in archive:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3 or not parts[-1].endswith(".jpg"):
                continue
            split, number = parts[-3], int(Path(parts[-1]).stem)
            if (split == "train" and number < PER_CLASS) or (split == "test" and number < 100):
                target = root.joinpath(*parts[-3:])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.extractfile(member).read())  # type: ignore[union-attr]
    return root


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory, cifar: Path) -> Path:
    """The session's embedding cache, warmed up: the one-off model build and conversion (≈ 25 s) happen
    here, on two images, rather than inside the first test."""
    from datacheck.api import embed
    from datacheck.params import EmbedParams

    cache = tmp_path_factory.mktemp("cache")
    warm = _build(tmp_path_factory.mktemp("warm"), cifar, {"a": ["truck"], "b": ["bird"]}, per_source=1)
    embed(warm, EmbedParams(image_size=IMAGE_SIZE, cache_dir=cache))
    return cache


def _copy(source: Path, target: Path, plant: Planter | None = None) -> None:
    """Decode, optionally plant a cue, and re-encode as JPEG quality 75 (deterministic bytes)."""
    pixels = np.asarray(Image.open(source).convert("RGB"))
    if plant is not None:
        pixels = plant(pixels)
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=75)
    target.write_bytes(buffer.getvalue())


def _build(
    root: Path,
    cifar: Path,
    classes: dict[str, list[str]],
    split: str = "train",
    per_source: int = PER_CLASS,
    plants: dict[str, Planter] | None = None,
) -> Path:
    """A class-folder dataset: each new class gathers ``per_source`` images of each of its CIFAR classes."""
    plants = plants or {}
    for name, sources in classes.items():
        for source in sources:
            for i in range(per_source):
                _copy(
                    cifar / split / source / f"{i:04d}.jpg",
                    root / name / f"{source}_{i:04d}.jpg",
                    plants.get(name),
                )
    return root


def overexpose(pixels: np.ndarray) -> np.ndarray:
    """Lift every pixel 60% of the way to white: photos taken in glaring sun (the tank story's weather)."""
    return np.clip(255 - (255 - pixels.astype(np.float32)) * 0.4, 0, 255).astype(np.uint8)


_LOGO = np.random.default_rng(42).random((6, 6)) < 0.5


def watermark(pixels: np.ndarray) -> np.ndarray:
    """Blend a fixed 6×6 black-and-white logo (70% opaque) into the bottom-right corner."""
    out = pixels.astype(np.float32)
    logo = np.where(_LOGO[..., None], 255.0, 0.0)
    out[25:31, 25:31] = 0.7 * logo + 0.3 * out[25:31, 25:31]
    return np.clip(out, 0, 255).astype(np.uint8)


def _audit(root: Path, cache_dir: Path, checks: list[str]) -> dict[str, CheckResult]:
    from datacheck.api import audit

    options = {"map_method": "none"} if "map_method" in inspect.signature(audit).parameters else {}
    report = audit(root, checks=checks, cache_dir=cache_dir, image_size=IMAGE_SIZE, **options)
    return {res.id: res for res in report.checks}


# ----------------------------------------------------------------------------------------------- shortcuts

SHORTCUT_CLASSES = {name: [name] for name in ("airplane", "cat", "dog", "frog")}


def test_planted_global_and_local_shortcuts_are_found_and_named(cifar: Path, cache_dir: Path, tmp_path: Path):
    root = _build(tmp_path / "planted", cifar, SHORTCUT_CLASSES, plants={"cat": overexpose, "dog": watermark})
    res = _audit(root, cache_dir, ["shortcuts"])["shortcuts"]
    cues = {f.extra["cue"]: f.extra["classes"] for f in res.findings}
    assert res.status in (Status.WARN, Status.FAIL), res.summary
    assert cues.get("brightness") == ["cat"], res.summary
    brightness = next(f for f in res.findings if f.extra["cue"] == "brightness")
    assert "cat images are" in brightness.extra["effect"] and "brighter" in brightness.extra["effect"]
    local = [f for f in res.findings if f.extra["cue"].startswith(("corner:bottom-right", "edge:bottom"))]
    assert local and local[0].extra["classes"] == ["dog"], res.summary
    assert local[0].extra["auc"]["dog"] > local[0].extra["centre_auc"]["dog"] + 0.15
    assert all(path.startswith("dog/") for path in local[0].files)
    flagged = {c for f in res.findings for c in f.extra["classes"]}
    assert flagged <= {"cat", "dog"}, res.summary


def test_clean_control_stays_quiet(cifar: Path, cache_dir: Path, tmp_path: Path):
    root = _build(tmp_path / "clean", cifar, SHORTCUT_CLASSES)
    results = _audit(root, cache_dir, ["shortcuts", "splits", "diversity"])
    for check in ("shortcuts", "diversity"):
        assert results[check].status is Status.PASS, results[check].summary
        assert results[check].findings == ()
    # The split decision is relative to the dataset: with only four classes its reference is thin, and a
    # class with real sub-structure (CIFAR dogs: face close-ups vs whole animals, separation 0.76 against
    # 0.63-0.72 for the others) may be suggested — as information, scored below a typical merge of two
    # real categories (score < 1), never as a warning.
    splits = [f for f in results["splits"].findings if f.kind == "split"]
    assert len(splits) <= 1 and all(f.severity == "info" and f.extra["score"] < 1 for f in splits), results[
        "splits"
    ].summary


# -------------------------------------------------------------------------------------------------- splits


def test_merged_class_is_ranked_first_with_clusters_named_after_its_subclasses(
    cifar: Path, cache_dir: Path, tmp_path: Path
):
    classes = {
        "vehicle": ["automobile", "ship", "horse"],
        "airplane": ["airplane"],
        "cat": ["cat"],
        "deer": ["deer"],
    }
    root = _build(tmp_path / "merged", cifar, classes, per_source=200)
    res = _audit(root, cache_dir, ["splits"])["splits"]
    splits = [f for f in res.findings if f.kind == "split"]
    assert splits and splits[0].extra["class"] == "vehicle", res.summary
    clusters = splits[0].extra["clusters"]
    assert len(clusters) == 3, res.summary
    majority = []
    for cluster in clusters:
        sources = Counter(Path(p).name.split("_")[0] for p in cluster["files"])
        source, count = sources.most_common(1)[0]
        assert count / cluster["size"] >= 0.6, (cluster["name"], sources)
        assert any(word in cluster["name"].lower() for word in SUBCLASS_WORDS[source]), (
            cluster["name"],
            source,
        )
        majority.append(source)
    assert sorted(majority) == ["automobile", "horse", "ship"]
    assert sum(c["size"] for c in clusters) == 600


# ---------------------------------------------------------------------------------------- representativeness


def test_reference_with_a_missing_kind_names_what_is_missing(cifar: Path, cache_dir: Path, tmp_path: Path):
    from datacheck.api import embed
    from datacheck.checks.base import registered
    from datacheck.checks.representativeness import CHECK_ID
    from datacheck.context import build_context
    from datacheck.params import EmbedParams
    from datacheck.runner import run_one

    train = _build(tmp_path / "train", cifar, SHORTCUT_CLASSES)
    reference = _build(
        tmp_path / "reference",
        cifar,
        {**SHORTCUT_CLASSES, "automobile": ["automobile"]},
        split="test",
        per_source=50,
    )
    params = EmbedParams(image_size=IMAGE_SIZE, cache_dir=cache_dir)
    train_embedded, reference_embedded = embed(train, params), embed(reference, params)
    ctx = build_context(
        train_embedded.dataset, train_embedded.embeddings, reference=reference_embedded.embeddings
    )
    spec = registered()[CHECK_ID]
    res = run_one(ctx, spec, spec.default_params())
    assert res.metrics["mode"] == "reference"
    uncovered = [f for f in res.findings if f.kind == "uncovered"]
    assert uncovered, res.summary
    missing = Counter(p.split("/")[0] for f in uncovered for p in f.extra["all_files"])
    others = sum(n for c, n in missing.items() if c != "automobile")
    assert missing["automobile"] >= 15 and missing["automobile"] >= 3 * others, missing  # 50 in the reference
    # A domain classifier that tells the novel share of the reference apart perfectly, and the rest not at
    # all, reaches AUC 0.5 + share/2 (0.6 here); ask for half of that gain.
    assert res.metrics["domain_auc"] > 0.5 + 0.25 * 50 / 250
