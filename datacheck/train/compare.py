"""Did the dataset fix help? Train heads on two versions of a dataset and test both on the same images.

``compare(BEFORE, AFTER)`` embeds both versions (through the shared cache, so unchanged images cost
nothing), trains a head on each with the same settings and several seeds, and evaluates every head on one
held-out test set: ``test`` when given, else BEFORE's test images. Test images that are exact or near
duplicates of a training or validation image of *either* version are left out first (the definition of
the ``duplicates`` and ``leakage`` checks, :mod:`datacheck.neardup`), so a copy in the training data cannot
flatter one side.

The uncertainty has two sources, and the confidence intervals include both: which test images happened to be
drawn, and the training randomness (initialisation, dropout, shuffling). A paired hierarchical bootstrap
resamples test images *and* seeds together for both versions, so the difference AFTER − BEFORE is judged
against its own spread: "helped" when its interval lies above zero, "hurt" when below, otherwise "no
detectable difference".
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datacheck.dataset import discover
from datacheck.embed.pipeline import Embeddings, ProgressFn, embed_dataset, resolve_image_size
from datacheck.errors import UsageError
from datacheck.index import l2_normalise
from datacheck.neardup import NearDupParams, exact_keys_of, find_pairs
from datacheck.params import EmbedParams, Params, param
from datacheck.train.head import predict_proba, train_head
from datacheck.train.metrics import macro_f1_from_counts, one_hot, prf_from_counts
from datacheck.train.params import HeadParams
from datacheck.train.splits import TEST, TRAIN, VAL, SplitParams, assign_roles

logger = logging.getLogger(__name__)

HELPED, HURT, NO_DIFFERENCE = "helped", "hurt", "no detectable difference"
METRICS = ("accuracy", "macro_f1")
COMPARE_SCHEMA_VERSION = 1

#: Bootstrap resamples whose weights are held in memory at once.
_BOOT_CHUNK = 256


@dataclass(frozen=True)
class CompareParams(Params):
    """How two dataset versions are compared.

    Attributes:
        embed: Backbone, image size and cache (one image size for both versions and the test set).
        split: Roles inside each version; with an explicit test set no hash test share is held out.
        head: Head settings, the same for both versions (``seed`` is replaced by ``0 … seeds-1``).
        flip: Train on mirror images too and predict with the image/mirror average (as ``retrain --flip``).
        seeds: Heads trained per version.
        confidence: Level of the confidence intervals.
        bootstrap: Bootstrap resamples.
        metric: The metric the verdict is based on: ``"accuracy"`` or ``"macro_f1"``.
        exclude_duplicates: Leave out test images that duplicate a training image of either version.
        duplicates: What counts as a duplicate: the definition the ``duplicates`` and ``leakage`` checks use.
    """

    embed: EmbedParams = field(default_factory=EmbedParams)
    split: SplitParams = field(default_factory=SplitParams)
    head: HeadParams = field(default_factory=HeadParams)
    flip: bool = False
    seeds: int = param(5, ge=2)  # the spread between seeds is measured
    confidence: float = param(0.95, ge=0.5, lt=1)
    bootstrap: int = param(2000, ge=100)
    metric: str = param("accuracy", choices=METRICS)
    exclude_duplicates: bool = True
    duplicates: NearDupParams = field(default_factory=NearDupParams)


# ----------------------------------------------------------------------------------------- the data


@dataclass(frozen=True)
class _Version:
    """One dataset version: its embeddings and the rows it trains and validates on."""

    name: str
    embeddings: Embeddings
    roles: np.ndarray
    mirrored: np.ndarray | None = None

    def rows(self, role: str) -> np.ndarray:
        return np.flatnonzero(self.roles == role)

    def training_rows(self) -> np.ndarray:
        return np.flatnonzero((self.roles == TRAIN) | (self.roles == VAL))

    def xy(self, role: str, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bottlenecks and labels of ``role``, followed by the mirror images' when there are any."""
        rows = self.rows(role)
        x, y = self.embeddings.vectors[rows].astype(np.float32, copy=False), labels[rows]
        if self.mirrored is None:
            return x, y
        return np.concatenate([x, self.mirrored[rows]]), np.concatenate([y, y])


@dataclass(frozen=True)
class _TestSet:
    """The common test images (before any exclusion)."""

    embeddings: Embeddings
    rows: np.ndarray
    source: str
    mirrored: np.ndarray | None = None


def _embed(
    path: Path, params: EmbedParams, progress: ProgressFn | None, manifest: Path | None = None
) -> Embeddings:
    return embed_dataset(discover(path, manifest=manifest), params, progress=progress)


def _version(name: str, embeddings: Embeddings, split: SplitParams) -> _Version:
    roles = assign_roles(embeddings.records, split)
    if not (roles == TRAIN).any():
        raise UsageError(f"{name} has no training images")
    return _Version(name, embeddings, roles)


def _test_set(before: _Version, test: Embeddings | None, test_path: Path | None) -> _TestSet:
    if test is None:
        rows = before.rows(TEST)
        if not len(rows):
            raise UsageError(
                "BEFORE has no test images: give a test set with --test, or a test percentage > 0"
            )
        return _TestSet(before.embeddings, rows, "test images of BEFORE")
    splits = {r.split for r in test.records}
    if TEST in splits:
        rows = np.flatnonzero([r.split == TEST for r in test.records])
        return _TestSet(test, rows, f"{test_path} (its test/ folder)")
    return _TestSet(test, np.arange(len(test.records)), str(test_path))


# ---------------------------------------------------------------------------------- leak-free test set


def _rows_for_duplicates(test: _TestSet, versions: Sequence[_Version]) -> list[tuple[Embeddings, int, str]]:
    """Test rows first, then each distinct training/validation image of the versions.

    Returns:
        ``(embeddings, row, split)`` per image: ``TEST`` for the test rows, ``TRAIN`` for the others.
    """
    parts: list[tuple[Embeddings, int, str]] = [(test.embeddings, int(i), TEST) for i in test.rows]
    seen: set[str] = set()
    for version in versions:
        for i in version.training_rows():
            sha = version.embeddings.file_sha256[i]
            if sha not in seen:
                seen.add(sha)
                parts.append((version.embeddings, int(i), TRAIN))
    return parts


def leaked_test_rows(test: _TestSet, versions: Sequence[_Version], params: CompareParams) -> np.ndarray:
    """Positions (into ``test.rows``) of test images that duplicate a training image of any version."""
    parts = _rows_for_duplicates(test, versions)
    pairs = find_pairs(
        l2_normalise(np.stack([emb.vectors[i] for emb, i, _ in parts])),
        np.stack([emb.stats.thumbs[i] for emb, i, _ in parts]),
        exact_keys_of(
            [emb.file_sha256[i] for emb, i, _ in parts],
            [emb.stats.columns["pixel_hash"].iat[i] for emb, i, _ in parts],
        ),
        [split for _, _, split in parts],
        params.duplicates,
    )
    n_test = len(test.rows)
    i, j = pairs["i"].to_numpy(), pairs["j"].to_numpy()
    cross = (i < n_test) != (j < n_test)
    leaked = np.unique(np.where(i[cross] < n_test, i[cross], j[cross]))
    return leaked.astype(np.int64)


# -------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class _Runs:
    """Predictions of every seed's head of one version on the common test images: ``int[seeds, n]``."""

    predictions: np.ndarray
    seconds: float


def _train_runs(
    version: _Version, class_index: dict[str, int], x_test: Sequence[np.ndarray], params: CompareParams
) -> _Runs:
    """Train one head per seed; ``x_test`` holds the test bottlenecks (and their mirror images')."""
    start = time.perf_counter()
    labels = np.array([class_index[r.label] for r in version.embeddings.records], dtype=np.int64)
    validation = version.xy(VAL, labels)
    preds = []
    for seed in range(params.seeds):
        head = train_head(
            *version.xy(TRAIN, labels),
            len(class_index),
            params.head.replace(seed=seed),
            validation if len(validation[0]) else None,
        )
        probs = sum(predict_proba(head.model, x) for x in x_test)
        preds.append(np.asarray(probs).argmax(axis=1))
        logger.info("%s seed %d: trained in %.1f s", version.name, seed, head.seconds)
    return _Runs(np.stack(preds), time.perf_counter() - start)


# ------------------------------------------------------------------------------------------ statistics


@dataclass(frozen=True)
class _Counts:
    """Per-class counts of every (version, seed) under every bootstrap weight vector."""

    tp: np.ndarray  # [V, S, B, C]
    predicted: np.ndarray  # [V, S, B, C]
    actual: np.ndarray  # [B, C]
    total: np.ndarray  # [B]


def _counts(weights: np.ndarray, y: np.ndarray, preds: np.ndarray, n_classes: int) -> _Counts:
    """Weighted per-class counts; ``weights`` is ``[B, n]``, ``preds`` is ``[V, S, n]``."""
    truth = one_hot(y, n_classes)
    tp = np.empty((*preds.shape[:2], len(weights), n_classes), np.float64)
    predicted = np.empty_like(tp)
    for v in range(preds.shape[0]):
        for s in range(preds.shape[1]):
            onehot = one_hot(preds[v, s], n_classes)
            tp[v, s] = weights @ (onehot * truth)
            predicted[v, s] = weights @ onehot
    return _Counts(
        tp, predicted, (weights @ truth).astype(np.float64), weights.sum(axis=1).astype(np.float64)
    )


def _metric_arrays(c: _Counts) -> dict[str, np.ndarray]:
    """Accuracy and macro-F1 ``[V, S, B]``, per-class recall and F1 ``[V, S, B, C]``."""
    _, recall, f1 = prf_from_counts(c.tp, c.predicted, c.actual[None, None])
    return {
        "accuracy": c.tp.sum(axis=-1) / c.total[None, None],
        "macro_f1": macro_f1_from_counts(c.tp, c.predicted, np.broadcast_to(c.actual, c.tp.shape)),
        "recall": recall,
        "f1": f1,
    }


def _seed_average(values: np.ndarray, seed_draws: np.ndarray) -> np.ndarray:
    """Average ``values[V, S, B, ...]`` over each resample's seeds ``seed_draws[B, S]``: ``[V, B, ...]``."""
    b = np.arange(values.shape[2])[:, None]
    return values[:, seed_draws, b].mean(axis=2)


def bootstrap_metrics(
    y: np.ndarray, preds: np.ndarray, n_classes: int, resamples: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Paired hierarchical bootstrap of every metric, seed-averaged: ``[V, B]`` (``[V, B, C]`` per class).

    Each resample draws the test images (multinomial weights) and the seeds (with replacement) once, and
    applies the same draw to every version, so differences between versions are paired.

    Args:
        y: ``int[n]`` true classes of the test images.
        preds: ``int[V, S, n]`` predictions per version and seed.
        n_classes: Number of classes.
        resamples: Bootstrap resamples ``B``.
        rng: Random source.
    """
    n, seeds = len(y), preds.shape[1]
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, resamples, _BOOT_CHUNK):
        b = min(_BOOT_CHUNK, resamples - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float32)
        draws = rng.integers(0, seeds, size=(b, seeds))
        for name, values in _metric_arrays(_counts(weights, y, preds, n_classes)).items():
            out.setdefault(name, []).append(_seed_average(values, draws))
    return {name: np.concatenate(parts, axis=1) for name, parts in out.items()}


def _interval(samples: np.ndarray, confidence: float) -> list[float]:
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha], axis=-1)
    return [float(lo), float(hi)] if np.ndim(lo) == 0 else [lo.tolist(), hi.tolist()]


def verdict(ci: Sequence[float]) -> str:
    """``"helped"`` when the interval of AFTER − BEFORE lies above 0, ``"hurt"`` below, else no difference."""
    if ci[0] > 0:
        return HELPED
    if ci[1] < 0:
        return HURT
    return NO_DIFFERENCE


def _point(y: np.ndarray, preds: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """The metrics on the full test set per version and seed (all weights 1)."""
    weights = np.ones((1, len(y)), np.float32)
    return {k: v[:, :, 0] for k, v in _metric_arrays(_counts(weights, y, preds, n_classes)).items()}


def _metric_summary(point: np.ndarray, boot: np.ndarray, confidence: float) -> dict:
    """``point[V, S]`` and ``boot[V, B]`` → before/after/difference means and intervals."""
    diff = boot[1] - boot[0]
    return {
        "before": {
            "mean": float(point[0].mean()),
            "ci": _interval(boot[0], confidence),
            "per_seed": point[0].tolist(),
        },
        "after": {
            "mean": float(point[1].mean()),
            "ci": _interval(boot[1], confidence),
            "per_seed": point[1].tolist(),
        },
        "difference": {
            "mean": float(point[1].mean() - point[0].mean()),
            "ci": _interval(diff, confidence),
            "per_seed": (point[1] - point[0]).tolist(),
        },
    }


def _per_class(
    point: dict, boot: dict, y: np.ndarray, classes: Sequence[str], confidence: float
) -> list[dict]:
    support = np.bincount(y, minlength=len(classes))
    rows = []
    for k, name in enumerate(classes):
        if not support[k]:
            continue
        row: dict = {"class": name, "support": int(support[k])}
        for metric in ("recall", "f1"):
            before, after = point[metric][0, :, k].mean(), point[metric][1, :, k].mean()
            ci = _interval(boot[metric][1, :, k] - boot[metric][0, :, k], confidence)
            row[metric] = {
                "before": float(before),
                "after": float(after),
                "delta": float(after - before),
                "ci": ci,
            }
        row["change"] = verdict(row["f1"]["ci"])
        rows.append(row)
    return rows


# -------------------------------------------------------------------------------------------- result


@dataclass(frozen=True)
class CompareResult:
    """Everything ``compare`` measured; :meth:`to_dict` is the JSON output.

    Attributes:
        verdict: ``"helped"``, ``"hurt"`` or ``"no detectable difference"`` (on ``metric``).
        metric: The metric the verdict is based on.
        summary: The verdict in one sentence.
        doc: The full JSON-ready report.
    """

    verdict: str
    metric: str
    summary: str
    doc: dict

    def to_dict(self) -> dict:
        """The JSON-ready report."""
        return self.doc


def _sentence(metric: str, block: dict, n_test: int, seeds: int, confidence: float, word: str) -> str:
    diff = block["difference"]
    lo, hi = diff["ci"]
    name = metric.replace("_", "-")
    return (
        f"AFTER vs BEFORE: {name} {block['before']['mean']:.2%} → {block['after']['mean']:.2%} "
        f"({100 * diff['mean']:+.2f} points, {confidence:.0%} CI {100 * lo:+.2f} to {100 * hi:+.2f}) "
        f"over {seeds} seeds on {n_test:,} test images: {word}"
    )


def _version_info(version: _Version, path: Path) -> dict:
    counts = {r: int((version.roles == r).sum()) for r in (TRAIN, VAL, TEST)}
    return {
        "path": str(path),
        "images": len(version.embeddings.records),
        "roles": counts,
        "classes": sorted({r.label for r in version.embeddings.records}),
        "cached": version.embeddings.cached,
        "computed": version.embeddings.computed,
    }


# -------------------------------------------------------------------------------------------- compare


def _with_mirrors(
    versions: Sequence[_Version], test: _TestSet, params: EmbedParams, progress: ProgressFn | None
) -> tuple[list[_Version], _TestSet]:
    """Attach the mirror images' bottlenecks (cached) to both versions and the test set."""
    from datacheck.train.flip import mirrored_vectors

    out = [
        dataclasses.replace(v, mirrored=mirrored_vectors(v.embeddings, params, progress=progress))
        for v in versions
    ]
    same = next((v for v in out if v.embeddings is test.embeddings), None)
    mirrored = (
        same.mirrored if same is not None else mirrored_vectors(test.embeddings, params, progress=progress)
    )
    return out, dataclasses.replace(test, mirrored=mirrored)


def _common_params(params: CompareParams, before_path: Path, manifest: Path | None) -> EmbedParams:
    """The embedding parameters with one concrete image size for every dataset involved."""
    records = discover(before_path, manifest=manifest).records
    return params.embed.replace(image_size=resolve_image_size(params.embed, records))


def _class_names(versions: Sequence[_Version], test: _TestSet) -> tuple[str, ...]:
    names = {v.embeddings.records[i].label for v in versions for i in v.training_rows()}
    missing = {test.embeddings.records[i].label for i in test.rows} - names
    if missing:
        logger.warning(
            "test classes with no training image in either version (always wrong): %s", sorted(missing)
        )
    return tuple(sorted(names | missing))


def _embed_all(
    before: Path,
    after: Path,
    test: Path | None,
    params: CompareParams,
    progress: ProgressFn | None,
    timings: dict[str, float],
) -> tuple[EmbedParams, list[_Version], _TestSet]:
    """Embedding parameters, versions ``[BEFORE, AFTER]`` and test set, embedded (mirrored with ``flip``)."""
    start = time.perf_counter()
    embed_params = _common_params(params, before, None)
    split = params.split if test is None else dataclasses.replace(params.split, test_percent=0.0)
    versions = [
        _version("BEFORE", _embed(before, embed_params, progress), split),
        _version("AFTER", _embed(after, embed_params, progress), split),
    ]
    test_emb = _embed(test, embed_params, progress) if test is not None else None
    test_set = _test_set(versions[0], test_emb, test)
    timings["embed"] = time.perf_counter() - start
    if params.flip:
        start = time.perf_counter()
        versions, test_set = _with_mirrors(versions, test_set, embed_params, progress)
        timings["mirror"] = time.perf_counter() - start
    return embed_params, versions, test_set


def _train_versions(
    versions: Sequence[_Version], test_set: _TestSet, rows: np.ndarray, params: CompareParams
) -> tuple[tuple[str, ...], np.ndarray, list[_Runs]]:
    """Class names, true classes of the test ``rows`` and each version's :class:`_Runs` on them."""
    classes = _class_names(versions, test_set)
    index = {name: k for k, name in enumerate(classes)}
    x_test = [test_set.embeddings.vectors[rows].astype(np.float32, copy=False)]
    if test_set.mirrored is not None:
        x_test.append(test_set.mirrored[rows])
    y = np.array([index[test_set.embeddings.records[i].label] for i in rows], dtype=np.int64)
    runs = [_train_runs(v, index, x_test, params) for v in versions]
    return classes, y, runs


def _statistics(
    y: np.ndarray, runs: Sequence[_Runs], classes: Sequence[str], params: CompareParams
) -> tuple[dict, list[dict]]:
    """Point estimates and bootstrap intervals: the summary of every metric and the per-class rows."""
    preds = np.stack([r.predictions for r in runs])
    point = _point(y, preds, len(classes))
    boot = bootstrap_metrics(y, preds, len(classes), params.bootstrap, np.random.default_rng(0))
    metrics = {m: _metric_summary(point[m], boot[m], params.confidence) for m in METRICS}
    per_class = _per_class(point, boot, y, classes, params.confidence)
    return metrics, per_class


def _test_info(test_set: _TestSet, leaked: np.ndarray, rows: np.ndarray) -> dict:
    """The ``test`` block of the report: where the test images came from and which were left out."""
    excluded = [test_set.embeddings.records[test_set.rows[i]].path for i in leaked]
    return {
        "source": test_set.source,
        "images": len(test_set.rows),
        "excluded_duplicates": len(excluded),
        "used": len(rows),
        "excluded": excluded,
    }


def _settings(params: CompareParams, embed_params: EmbedParams) -> dict:
    """The ``settings`` block of the report."""
    return {
        "model": embed_params.model,
        "image_size": embed_params.image_size,
        "seeds": params.seeds,
        "confidence": params.confidence,
        "bootstrap": params.bootstrap,
        "flip": params.flip,
        "head": dataclasses.asdict(params.head) | {"seed": list(range(params.seeds))},
    }


def compare(
    before: Path | str,
    after: Path | str,
    *,
    test: Path | str | None = None,
    params: CompareParams | None = None,
    progress: ProgressFn | None = None,
) -> CompareResult:
    """Train heads on two versions of a dataset and say whether AFTER is better, worse or no different.

    Args:
        before: The dataset before the change (folder or CSV manifest).
        after: The dataset after the change.
        test: A separate test set (folder); default: BEFORE's test images (its ``test/`` folder, else the
            stable hash test share).
        params: Settings; defaults from :class:`CompareParams`.
        progress: Embedding progress callback.

    Returns:
        The verdict, means with confidence intervals, the paired difference and per-class deltas.

    Raises:
        UsageError: No training or test images, or bad parameters.
    """
    params = params or CompareParams()
    timings: dict[str, float] = {}
    before_path, after_path = Path(before), Path(after)
    test_path = Path(test) if test is not None else None
    embed_params, versions, test_set = _embed_all(
        before_path, after_path, test_path, params, progress, timings
    )

    start = time.perf_counter()
    leaked = (
        leaked_test_rows(test_set, versions, params) if params.exclude_duplicates else np.zeros(0, np.int64)
    )
    kept = np.setdiff1d(np.arange(len(test_set.rows)), leaked)
    if not len(kept):
        raise UsageError("every test image duplicates a training image; nothing is left to test on")
    rows = test_set.rows[kept]
    timings["duplicates"] = time.perf_counter() - start

    classes, y, runs = _train_versions(versions, test_set, rows, params)
    timings["train"] = sum(r.seconds for r in runs)

    start = time.perf_counter()
    metrics, per_class = _statistics(y, runs, classes, params)
    timings["statistics"] = time.perf_counter() - start

    word = verdict(metrics[params.metric]["difference"]["ci"])
    summary = _sentence(
        params.metric, metrics[params.metric], len(rows), params.seeds, params.confidence, word
    )
    doc = {
        "schema_version": COMPARE_SCHEMA_VERSION,
        "verdict": word,
        "metric": params.metric,
        "summary": summary,
        "before": _version_info(versions[0], before_path),
        "after": _version_info(versions[1], after_path),
        "test": _test_info(test_set, leaked, rows),
        "settings": _settings(params, embed_params),
        "metrics": metrics,
        "per_class": per_class,
        "timings": timings,
    }
    logger.info("compare: %s", summary)
    return CompareResult(word, params.metric, summary, doc)
