"""The library's public entry points; the CLI is a thin layer over these."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datacheck.config import Config, load_config
from datacheck.dataset import Dataset, FileIssue, discover, discover_unlabelled
from datacheck.dataset.streamed import Discovered, spool_dataset
from datacheck.embed.cache import default_cache_dir
from datacheck.embed.pipeline import CacheFill, Embeddings, ProgressFn, embed_dataset
from datacheck.embed.pipeline import fill_cache as pipeline_fill_cache
from datacheck.errors import UsageError
from datacheck.gate import Baseline, FailOn, GatePolicy, checked_fail_on
from datacheck.heap import release_free_heap
from datacheck.index import KnnParams
from datacheck.outputs import claim, claim_cache
from datacheck.params import EmbedParams
from datacheck.sources import FORMATS
from datacheck.sources.fs import is_uri

if TYPE_CHECKING:
    from datacheck.checks.base import CheckResult, CheckSpec
    from datacheck.context import AuditContext
    from datacheck.embedding_map import MapLayout
    from datacheck.report import Report

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedResult:
    """A discovered dataset and its embeddings."""

    dataset: Dataset
    embeddings: Embeddings

    @property
    def problems(self) -> tuple[FileIssue, ...]:
        """Every file that is not part of the embeddings, with its reason (discovery + decoding)."""
        return _problems(self.dataset, self.embeddings.failures)


@dataclass(frozen=True)
class FillResult:
    """What discovery found (counts, no records) and what filling the cache did (counts, no vectors)."""

    dataset: Discovered
    fill: CacheFill

    @property
    def problems(self) -> tuple[FileIssue, ...]:
        """Every file that is not in the cache, with its reason (discovery + decoding)."""
        return _problems(self.dataset, self.fill.failures)


def _problems(dataset: Dataset | Discovered, failures: tuple[FileIssue, ...]) -> tuple[FileIssue, ...]:
    return tuple(sorted(dataset.issues + failures, key=lambda f: f.path))


def embed(
    path: Path | str,
    params: EmbedParams | None = None,
    *,
    manifest: Path | None = None,
    format_in: str = "auto",
    progress: ProgressFn | None = None,
) -> EmbedResult:
    """Discover the dataset at ``path`` and embed every image (served from the cache where possible).

    ``format_in`` is :func:`~datacheck.dataset.discover`'s (``"auto"``: by the path).
    """
    dataset = _discover_beside_cache(path, params, manifest, format_in)
    return EmbedResult(dataset, embed_dataset(dataset, params, progress=progress))


def fill_cache(
    path: Path | str,
    params: EmbedParams | None = None,
    *,
    manifest: Path | None = None,
    format_in: str = "auto",
    progress: ProgressFn | None = None,
) -> FillResult:
    """:func:`embed` without gathering the vectors (what ``datacheck embed`` runs): counts only.

    Every image the cache lacks is embedded into it. Neither the records nor the vectors are held: past
    65,536 records they are discovered into a temporary file beside the cache and read a chunk at a time
    (:func:`~datacheck.dataset.streamed.spool_dataset`), so memory does not grow with the dataset.
    """
    params = params or EmbedParams()
    _claim_cache_beside(path, params)
    _check_format(format_in)
    where = Path(params.cache_dir or default_cache_dir())
    with spool_dataset(_local_or_uri(path), manifest, format_in=format_in, directory=where) as dataset:
        fill = pipeline_fill_cache(dataset, params, progress=progress)
        return FillResult(dataset.summary(), fill)


def _discover_beside_cache(
    path: Path | str, params: EmbedParams | None, manifest: Path | None, format_in: str
) -> Dataset:
    """The dataset at ``path``, a cache inside it marked as datacheck's own first (so it is left out)."""
    _claim_cache_beside(path, params or EmbedParams())
    return _discover(path, manifest, format_in)


def _claim_cache_beside(path: Path | str, params: EmbedParams) -> None:
    if not is_uri(str(path)):  # nothing local can be inside a remote dataset
        claim_cache(params.cache_dir, Path(path))


def _check_format(format_in: str) -> None:
    if format_in not in FORMATS:
        raise UsageError(f"unknown dataset format '{format_in}': use {', '.join(FORMATS)}")


def _local_or_uri(path: Path | str) -> Path | str:
    return path if is_uri(str(path)) else Path(path)


def _discover(path: Path | str, manifest: Path | None, format_in: str) -> Dataset:
    _check_format(format_in)
    return discover(_local_or_uri(path), manifest=manifest, format_in=format_in)


def _dataset_summary(dataset: Dataset, failures: tuple[FileIssue, ...]) -> dict:
    return {
        "root": str(dataset.root),
        "layout": dataset.layout,
        "images": len(dataset.records),
        "unreadable": len(failures),
        "classes": dict(Counter(r.label for r in dataset.records).most_common()),
        "splits": {
            split: dict(Counter(r.label for r in dataset.records if r.split == split).most_common())
            for split in sorted({r.split for r in dataset.records if r.split is not None})
        },
    }


def _load_baseline(path: Path | str) -> Baseline:
    from datacheck.report.model import read_report

    return Baseline.from_report(read_report(path, "baseline report"), str(path))


def _embed_reference(
    reference: Path | str | None, params: EmbedParams, image_size: int, progress: ProgressFn | None
) -> tuple[Path | None, Embeddings | None]:
    """Embed the reference folder with the dataset's backbone and input size (unlabelled layouts welcome)."""
    if reference is None:
        return None, None
    root = Path(reference)
    ref = discover_unlabelled(root)
    same_size = dataclasses.replace(params, image_size=image_size)
    return root, embed_dataset(ref, same_size, progress=progress)


def _named_files(results: Sequence[CheckResult]) -> set[str]:
    return {path for res in results for finding in res.findings for path in finding.files}


def _derived_root(params: EmbedParams) -> Path | None:
    """The cache's folder for derived arrays (:mod:`datacheck.derived`), or ``None`` if unusable."""
    from datacheck.embed.cache import Cache, CacheError, default_cache_dir

    try:
        with Cache(params.cache_dir or default_cache_dir()) as cache:
            return None if cache.readonly else cache.artifact_path("")
    except (CacheError, OSError):
        return None


def audit(
    path: Path | str,
    *,
    manifest: Path | None = None,
    format_in: str = "auto",
    checks: Sequence[str] | None = None,
    skip: Sequence[str] = (),
    check_params: Mapping[str, Mapping[str, Any]] | None = None,
    fail_on: FailOn | None = None,
    knn: KnnParams | None = None,
    progress: ProgressFn | None = None,
    map_method: str = "umap",
    config: Path | str | None = None,
    policy: GatePolicy | None = None,
    baseline: Path | str | None = None,
    reference: Path | str | None = None,
    out: Path | str | None = None,
    **embed_options: Any,
) -> Report:
    """Audit the dataset at ``path``: embed (cached), build the shared context, run the checks, gate.

    Args:
        path: Dataset folder (or CSV manifest with ``manifest``).
        manifest: CSV with ``path,label[,split]`` columns.
        format_in: How to read ``path``: ``"auto"`` (by the path), ``"folder"``, ``"manifest"``,
            ``"webdataset"``, ``"parquet"`` or ``"hf"`` (see docs/datasets.md).
        checks: Check ids to run (default: all).
        skip: Check ids to leave out.
        check_params: Per-check parameter overrides, e.g. ``{"balance": {"min_images": 50}}``.
        fail_on: Gate threshold: ``"fail"`` or ``"warn"`` (default: the config's, else ``"fail"``).
        knn: Parameters of the shared kNN graph.
        progress: Callback ``(stage, done, total)``.
        map_method: The report's 2-D map of the images: ``"umap"``, ``"pca"`` or ``"none"`` (the file index
            the HTML report and ``datacheck apply`` need is written in every case).
        config: A datacheck.toml (or pyproject.toml with ``[tool.datacheck]``); explicit arguments win.
        policy: Gate limits; overrides the config's ``[gate]`` table.
        baseline: An earlier report.json: the gate then fails only on findings new since it.
        reference: A folder of images like those the application will see (any layout; labels are not
            needed), compared with the dataset by the ``representativeness`` check.
        out: The folder the caller will write the report to (:meth:`Report.write`). When it lies inside
            the dataset it is marked as datacheck output before the dataset is read, so this audit and
            every later one leave it out (:mod:`datacheck.outputs`).
        **embed_options: Fields of :class:`EmbedParams` (``model``, ``image_size``, ``cache_dir``, …).

    Returns:
        The report; ``report.gate.passed`` is the verdict.
    """
    plan = _plan_audit(config, embed_options, checks, skip, check_params, fail_on, map_method, baseline)
    if not is_uri(str(path)):  # nothing local can be inside a remote dataset
        if out is not None:
            claim(Path(out), "report", Path(path))
        claim_cache(plan.embed.cache_dir, Path(path))
    dataset = _discover(path, manifest, format_in)
    embeddings = embed_dataset(dataset, plan.embed, progress=progress)
    release_free_heap()  # what the cache read freed, before the kNN graph is built
    ref_root, ref_embeddings = _embed_reference(reference, plan.embed, embeddings.image_size, progress)
    ctx, timings = _context(plan, dataset, embeddings, ref_root, ref_embeddings, knn)
    # The context holds what the checks read; the embedding result's raw vectors and per-image statistics
    # objects (thumbnails as bytes) would stay beside it: at a million images, ~9 GB.
    del embeddings, ref_embeddings
    release_free_heap()
    return _check_and_report(plan, dataset, ctx, timings, policy, map_method)


@dataclass(frozen=True)
class _AuditPlan:
    """What an audit will do, resolved from the arguments and the config before any work starts."""

    config: Config
    embed: EmbedParams
    specs: list[CheckSpec]
    per_check: dict[str, Any]
    fail_on: FailOn
    baseline: Baseline | None


def _plan_audit(
    config: Path | str | None,
    embed_options: Mapping[str, Any],
    checks: Sequence[str] | None,
    skip: Sequence[str],
    check_params: Mapping[str, Mapping[str, Any]] | None,
    fail_on: str | None,
    map_method: str,
    baseline: Path | str | None,
) -> _AuditPlan:
    """Validate every argument against the config and the params objects (usage errors before any work)."""
    from datacheck.embedding_map import checked_map_method
    from datacheck.runner import build_params, select_checks

    cfg = load_config(Path(config)) if config is not None else Config()
    try:
        params = EmbedParams().replace(**{**cfg.embed, **embed_options})
    except (TypeError, ValueError) as err:
        raise UsageError(str(err)) from err
    checked_map_method(map_method)
    threshold = checked_fail_on(fail_on if fail_on is not None else cfg.fail_on)
    specs = select_checks(checks if checks is not None else cfg.only, tuple(skip) or cfg.skip)
    merged = {
        k: {**cfg.check_params.get(k, {}), **(check_params or {}).get(k, {})}
        for k in {*cfg.check_params, *(check_params or {})}
    }
    prior = _load_baseline(baseline) if baseline is not None else None
    return _AuditPlan(cfg, params, specs, build_params(specs, merged), threshold, prior)


def _context(
    plan: _AuditPlan,
    dataset: Dataset,
    embeddings: Embeddings,
    ref_root: Path | None,
    ref_embeddings: Embeddings | None,
    knn: KnnParams | None,
) -> tuple[AuditContext, dict[str, float]]:
    """The shared audit context (its kNN graph built) and the timings so far."""
    from datacheck.context import build_context

    start = time.perf_counter()
    ctx = build_context(
        dataset,
        embeddings,
        knn,
        reference=ref_embeddings,
        reference_root=ref_root,
        derived_dir=_derived_root(plan.embed),
        consume=True,  # audit() lets go of the embedding result once the context is built
    )
    timings = {f"embed_{k}": v for k, v in embeddings.timings.items()}
    timings["knn"] = time.perf_counter() - start
    return ctx, timings


def _checks_and_layout(
    plan: _AuditPlan, ctx: AuditContext, map_method: str
) -> tuple[tuple[CheckResult, ...], MapLayout, float]:
    """The check results and the map's layout (with its seconds).

    The layout reads the vectors only, so with several check workers it runs on a thread of its own beside
    them (its UMAP epochs release the GIL), under the checks' one-BLAS-thread rule; it used to wait for the
    last check and then take one core for ~5 s at 60,000 images.
    """
    from datacheck.blocks import one_blas_thread
    from datacheck.embedding_map import lay_out
    from datacheck.runner import run_checks

    store = ctx.derived_dir / "map" if ctx.derived_dir else None

    def timed_layout() -> tuple[MapLayout, float]:
        start = time.perf_counter()
        layout = lay_out(ctx, method=map_method, store=store)  # type: ignore[arg-type]
        return layout, time.perf_counter() - start

    def checks() -> tuple[CheckResult, ...]:
        workers = plan.embed.check_workers
        return run_checks(ctx, plan.specs, plan.per_check, severity=plan.config.severity, workers=workers)

    if plan.embed.check_workers == 1:
        results = checks()
        return results, *timed_layout()
    ctx.prepare_for_threads()
    with one_blas_thread(), ThreadPoolExecutor(1, "map") as side:
        pending = side.submit(timed_layout)
        results = checks()
        return results, *pending.result()


def _check_and_report(
    plan: _AuditPlan,
    dataset: Dataset,
    ctx: AuditContext,
    timings: dict[str, float],
    policy: GatePolicy | None,
    map_method: str,
) -> Report:
    """Run the checks, lay out the map and judge the gate."""
    from datacheck import gate
    from datacheck.embedding_map import build_map
    from datacheck.report import Report

    results, layout, layout_seconds = _checks_and_layout(plan, ctx, map_method)
    timings.update({f"check_{r.id}": r.seconds for r in results})
    start = time.perf_counter()
    file_map = build_map(ctx, results, layout)
    timings["map"] = layout_seconds + time.perf_counter() - start
    verdict = gate.evaluate(
        results,
        plan.fail_on,
        policy or plan.config.gate,
        hashes=ctx.file_hashes(_named_files(results)),
        baseline=plan.baseline,
    )
    return Report(
        dataset=_dataset_summary(dataset, ctx.failures),
        embedding=dict(ctx.embedding_info),
        checks=results,
        gate=verdict,
        timings=timings,
        map=file_map,
        containers={r.path: r for r in dataset.records if r.blob is not None},
    )
