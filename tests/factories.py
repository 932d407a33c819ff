"""Build audit contexts directly from arrays, so check tests plant problems without embedding images; and
small image datasets on disk for the tests that run the real model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from datacheck.context import AuditContext
from datacheck.dataset import Dataset, FileIssue, ImageRecord
from datacheck.index import KnnParams, build_knn, l2_normalise


def clustered_vectors(
    n_per_class: Sequence[int], dim: int = 64, spread: float = 0.35, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs, one per class: ``(vectors, labels)``."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(n_per_class), dim))
    vectors, labels = [], []
    for label, count in enumerate(n_per_class):
        vectors.append(centres[label] + spread * rng.standard_normal((count, dim)))
        labels += [label] * count
    return np.concatenate(vectors).astype(np.float32), np.array(labels)


def make_context(
    vectors: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    splits: Sequence[str | None] | None = None,
    stats: pd.DataFrame | None = None,
    thumbs: np.ndarray | None = None,
    logits: np.ndarray | None = None,
    paths: Sequence[str] | None = None,
    failures: Sequence[FileIssue] = (),
    knn: KnnParams | None = None,
    file_sha256: Sequence[str] | None = None,
) -> AuditContext:
    """An :class:`AuditContext` over the given rows; anything not given gets a neutral default."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    class_names = tuple(class_names or [f"class{i}" for i in range(int(labels.max()) + 1 if n else 0)])
    splits = tuple(splits) if splits is not None else (None,) * n
    paths = (
        list(paths)
        if paths is not None
        else [
            "/".join(p for p in (splits[i], class_names[labels[i]], f"img{i:05d}.jpg") if p) for i in range(n)
        ]
    )
    root = Path("/dataset")
    records = tuple(
        ImageRecord(path=paths[i], abs_path=root / paths[i], label=class_names[labels[i]], split=splits[i])
        for i in range(n)
    )
    layout = "splits" if any(s is not None for s in splits) else "classes"
    unit = l2_normalise(np.asarray(vectors, dtype=np.float32))
    return AuditContext(
        dataset=Dataset(root=root, layout=layout, records=records, issues=tuple(failures)),
        records=records,
        vectors=unit,
        logits=logits,
        stats=stats if stats is not None else pd.DataFrame(index=range(n)),
        thumbs=thumbs if thumbs is not None else np.zeros((n, 32, 32, 3), np.uint8),
        file_sha256=tuple(file_sha256) if file_sha256 is not None else tuple(f"{i:064x}" for i in range(n)),
        labels=labels,
        class_names=class_names,
        splits=splits,
        knn=build_knn(unit, knn or KnnParams(k=min(10, max(1, n - 1)), candidates=min(30, max(1, n - 1)))),
        failures=tuple(failures),
        embedding_info={
            "model": "test",
            "image_size": 32,
            "dim": unit.shape[1],
            "runtime": "test",
            "cached": 0,
            "computed": n,
        },
    )


def random_scene(seed: int) -> Image.Image:
    """A 48-px picture of smooth random colour blobs, different for every seed."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).resize((48, 48), Image.BICUBIC)


def splits_dataset(root: Path, *, train: int = 6, test: int = 3) -> Path:
    """``root/{train,test}/{apple,pear}/<i>.png``, every image distinct; returns ``root``."""
    for s, split in enumerate(("train", "test")):
        for k, label in enumerate(("apple", "pear")):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(train if split == "train" else test):
                random_scene(10_000 * s + 100 * k + i).save(folder / f"{i}.png")
    return root
