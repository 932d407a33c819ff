"""Embedding on Ray Data (``engine="ray"``): the images the cache lacks, on a local or remote Ray cluster.

The work is the in-process pipeline's, split along its seams so that Ray schedules it:

1. On the driver, a chunk of records at a time: every record's content hash (the file-hash memo spares
   unchanged files) and a cache lookup; only the missing contents go further, each once, so a re-run embeds
   only what changed. They are written to Parquet files the cluster reads (:func:`_write_todo`), one Ray
   block each, so the list never sits in the driver or its object store.
2. ``map_batches(decode)`` — CPU tasks: read the bytes (:func:`datacheck.sources.read_record`: files, tar
   members, table rows), decode and compute statistics with the project's own pure function; a file that
   cannot be read or decoded becomes a row with an error, never a failed block.
3. ``map_batches(_Embedder)`` — an actor pool that loads the backbone once per actor (``num_gpus=1`` per actor
   when the cluster has GPUs), emitting float16 vectors and logits.
4. Workers write Parquet shards (content hash, vector, logits, statistics) under the cache; the driver
   imports them into the cache shard by shard (memory bounded by one shard) and deletes them.

The audit then reads everything from the cache exactly as after an in-process run. Ray is an optional
extra (``pip install 'datacheck[ray]'``); :func:`ray_module` words its absence.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datacheck.dataset import Blob, Dataset, ImageRecord
from datacheck.errors import UsageError
from datacheck.params import EmbedParams

logger = logging.getLogger(__name__)

#: The Ray releases this module is tested with (the actor-pool argument changed twice across releases).
TESTED_RAY = ">=2.50,<2.61"
#: How often a stage is re-run after its worker process died (killed, out of memory, node lost). Bounded: an
#: input that crashes the process every time must end the run, not restart actors forever (Ray Data's
#: default for actor pools). Python exceptions are never retried: a bad image is an error row instead.
WORKER_RETRIES = 3

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RayRun:
    """What a Ray prefill did.

    Attributes:
        submitted: Distinct contents sent to the cluster (the rest were cached).
        embedded: Contents whose vectors came back and were imported into the cache.
        failed: Contents that could not be read or decoded (the in-process pass reports them with reasons).
        seconds: Wall time of the Ray part.
    """

    submitted: int
    embedded: int
    failed: int
    seconds: float


def ray_module() -> Any:
    """The ``ray`` module, or a :class:`UsageError` that says how to install it."""
    try:
        import ray
        import ray.data  # Ray Data is the part used
    except ImportError as err:
        raise UsageError(
            f"engine 'ray' needs Ray Data: pip install 'datacheck[ray]' (tested with ray{TESTED_RAY}), "
            "or use the default in-process engine"
        ) from err
    return ray


def actor_pool(ray: Any, size: int) -> Any:
    """The ``compute=`` argument of an actor pool of ``size`` actors (one place for an API that moved)."""
    return ray.data.ActorPoolStrategy(size=size)


def _connect(ray: Any, address: str | None) -> None:
    if ray.is_initialized():
        return
    try:
        if address:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise UsageError(f"cannot start or reach {where}: {err}") from err


def cpu_split(cpus: float, actors: int) -> tuple[float, float]:
    """CPUs each decode task and each embedding actor ask for on a cluster of ``cpus`` CPUs without GPUs.

    Ray Data starts the actor pool first: actors that ask for every CPU of the cluster leave the decode
    tasks none, and the pipeline waits forever (Ray 2.60, 2 actors on 2 CPUs). So decoding keeps one CPU
    (half of a one-CPU cluster) and the actors share the rest, each asking for at most one; an actor's
    inference threads still use every core of its node, the operating system shares them.
    """
    decode = min(1.0, cpus / 2)
    return decode, min(1.0, (cpus - decode) / max(1, actors))


# ------------------------------------------------------------------------------------------ the stages


def _record_row(record: ImageRecord, sha: str) -> dict[str, Any]:
    """A record as a Parquet row; names as bytes (a file name need not be valid UTF-8)."""
    blob = record.blob
    return {
        "sha": sha,
        "path": record.path.encode("utf-8", "surrogatepass"),
        "abs_path": os.fsencode(record.abs_path),
        "blob_kind": blob.kind if blob else "",
        "blob_container": os.fsencode(blob.container) if blob else b"",
        "blob_a": blob.position[0] if blob else 0,
        "blob_b": blob.position[1] if blob else 0,
        "blob_column": blob.column if blob else "",
    }


def _record_of(row: dict[str, Any]) -> ImageRecord:
    blob = None
    if row["blob_kind"]:
        position = (int(row["blob_a"]), int(row["blob_b"]))
        blob = Blob(row["blob_kind"], os.fsdecode(row["blob_container"]), position, row["blob_column"])
    path = bytes(row["path"]).decode("utf-8", "surrogatepass")
    return ImageRecord(path, Path(os.fsdecode(row["abs_path"])), "", None, blob)


def decode_rows(batch: dict[str, np.ndarray], image_size: int, max_pixels: int) -> dict[str, np.ndarray]:
    """Ray stage 2: read and decode a batch of records (pure; errors become rows)."""
    from datacheck.images import ImageDecodeError, decode_image
    from datacheck.sources import read_record

    n = len(batch["sha"])
    pixels = np.zeros((n, image_size, image_size, 3), np.uint8)
    stats = np.empty(n, dtype=object)
    errors = np.empty(n, dtype=object)
    for i in range(n):
        record = _record_of({key: values[i] for key, values in batch.items()})
        try:
            decoded = decode_image(read_record(record), image_size, name=record.path, max_pixels=max_pixels)
        except ImageDecodeError as err:
            stats[i], errors[i] = b"", str(err)
            continue
        pixels[i], stats[i], errors[i] = decoded.pixels, decoded.stats.to_bytes(), ""
    return {"sha": batch["sha"], "pixels": pixels, "stats": stats, "error": errors}


class _Embedder:
    """Ray stage 3: one backbone per actor, loaded once."""

    def __init__(
        self, model: str, image_size: int, weights: str | None, runtime: str, artifact_dir: str
    ) -> None:
        from datacheck.embed.runtime import load_backend

        self.backend = load_backend(
            model,
            image_size,
            weights=Path(weights) if weights else None,
            runtime=runtime,
            artifact_dir=Path(artifact_dir),
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.array([not e for e in batch["error"]], dtype=bool)
        rows = np.flatnonzero(ok)
        vectors = np.empty(len(ok), dtype=object)
        logits = np.empty(len(ok), dtype=object)
        vectors[:], logits[:] = b"", b""
        if len(rows):
            vec, log = self.backend(np.ascontiguousarray(batch["pixels"][rows]))
            for j, row in enumerate(rows):
                vectors[row] = np.asarray(vec[j], np.float32).astype(np.float16).tobytes()
                logits[row] = (
                    b"" if log is None else np.asarray(log[j], np.float32).astype(np.float16).tobytes()
                )
        return {
            "sha": batch["sha"],
            "vector": vectors,
            "logits": logits,
            "stats": batch["stats"],
            "error": batch["error"],
        }


# ------------------------------------------------------------------------------------------ the driver


def prefill_cache(
    dataset: Dataset, params: EmbedParams, image_size: int, *, progress: ProgressFn | None = None
) -> RayRun:
    """Embed on Ray every image of ``dataset`` whose vectors the cache lacks, writing them to the cache."""
    from datacheck.embed.pipeline import cache_misses

    ray_module()  # a missing extra is said before any file is hashed
    todo = cache_misses(dataset.records, params, image_size, progress=progress)  # each content once
    return embed_on_ray([todo], params, image_size, progress=progress)


def embed_on_ray(
    todo: Iterable[Sequence[tuple[ImageRecord, str]]],
    params: EmbedParams,
    image_size: int,
    *,
    progress: ProgressFn | None = None,
) -> RayRun:
    """Embed ``(record, content hash)`` pairs on Ray and import the results into the cache.

    Stages 2–4 of the module docstring; ``todo`` gives each content once (what the cache lacks), in chunks:
    they are written to Parquet files the cluster reads, so the driver never holds the whole list.
    """
    from datacheck.embed.cache import ARTIFACTS_DIR, default_cache_dir

    start = time.perf_counter()
    cache_dir = Path(params.cache_dir or default_cache_dir())
    artifact_dir = cache_dir / ARTIFACTS_DIR
    shards = artifact_dir / "ray-shards" / uuid.uuid4().hex
    try:
        submitted = _write_todo(todo, shards / "todo", 4 * params.batch_size)
        if not submitted:
            return RayRun(0, 0, 0, time.perf_counter() - start)
        ray = ray_module()
        _connect(ray, params.ray_address)
        with _ray_progress(ray, shown=progress is not None):
            todo_dir, artifacts = shards / "todo", str(artifact_dir)
            _run_pipeline(ray, todo_dir, submitted, params, image_size, artifacts, shards / "out")
        embedded, failed = _import_shards(shards / "out", cache_dir, params, image_size, progress)
    finally:
        shutil.rmtree(shards, ignore_errors=True)
    seconds = time.perf_counter() - start
    logger.info(
        "ray: %d images sent, %d embedded, %d unreadable in %.1f s", submitted, embedded, failed, seconds
    )
    return RayRun(submitted, embedded, failed, seconds)


def _write_todo(todo: Iterable[Sequence[tuple[ImageRecord, str]]], folder: Path, rows_per_file: int) -> int:
    """Write the records to embed as Parquet files of ``rows_per_file`` rows (one Ray block each).

    Returns how many rows were written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    written = 0
    pending: list[dict[str, Any]] = []

    def write() -> None:
        nonlocal written, pending
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(pending), folder / f"todo-{written // rows_per_file:07d}.parquet")
        written, pending = written + len(pending), []

    for chunk in todo:
        for record, sha in chunk:
            pending.append(_record_row(record, sha))
            if len(pending) == rows_per_file:
                write()
    if pending:
        write()
    return written


@contextlib.contextmanager
def _ray_progress(ray: Any, *, shown: bool) -> Iterator[None]:
    """Ray Data's own progress for the pipeline, only where this run shows progress at all.

    The driver's bars cover hashing and the import; while the cluster works, Ray Data's own bars are the only
    ones. A ``--quiet`` run or a log (no progress callback) gets none, rather than Ray Data's progress lines.
    """
    context = ray.data.DataContext.get_current()
    before = context.enable_progress_bars
    context.enable_progress_bars = shown
    try:
        yield
    finally:
        context.enable_progress_bars = before


def _run_pipeline(
    ray: Any,
    todo: Path,
    rows: int,
    params: EmbedParams,
    image_size: int,
    artifact_dir: str,
    out: Path,
    *,
    decode: Callable[..., dict[str, np.ndarray]] = decode_rows,
    embedder: type = _Embedder,
) -> None:
    """Stages 2–4 on the cluster: ``decode`` tasks, an actor pool of ``embedder``, shards in ``out``.

    The ``rows`` records to embed are in the Parquet files under ``todo`` (:func:`_write_todo`).
    """
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    actors = params.ray_actors or max(1, gpus)
    decode_cpus, actor_cpus = cpu_split(float(resources.get("CPU", 1)), actors)
    per_actor = {"num_gpus": 1} if gpus else {"num_cpus": actor_cpus}
    bs = params.batch_size
    ds = ray.data.read_parquet(str(todo), override_num_blocks=max(1, rows // (4 * bs)))
    ds = ds.map_batches(
        decode,
        fn_kwargs={"image_size": image_size, "max_pixels": params.max_image_pixels},
        batch_size=bs,
        num_cpus=decode_cpus,
        max_retries=WORKER_RETRIES,
        retry_exceptions=False,
    )
    ds = ds.map_batches(
        embedder,
        fn_constructor_kwargs={
            "model": params.model,
            "image_size": image_size,
            "weights": str(params.weights) if params.weights else None,
            "runtime": params.runtime,
            "artifact_dir": artifact_dir,
        },
        compute=actor_pool(ray, actors),
        batch_size=bs,
        max_restarts=WORKER_RETRIES,
        max_task_retries=WORKER_RETRIES,
        **per_actor,
    )
    ds.write_parquet(str(out))


def _import_shards(
    shards: Path, cache_dir: Path, params: EmbedParams, image_size: int, progress: ProgressFn | None
) -> tuple[int, int]:
    import pyarrow.parquet as pq

    from datacheck.embed.backbones import cache_tag
    from datacheck.embed.cache import Cache, embedding_key, stats_key
    from datacheck.images import STATS_VERSION

    tag = cache_tag(params.model, image_size, weights=params.weights)
    files = sorted(shards.rglob("*.parquet"))
    embedded = failed = 0
    with Cache(cache_dir) as cache:
        for n, file in enumerate(files, 1):
            table = pq.read_table(file).to_pydict()
            rows, stats = [], []
            for sha, vector, logits, blob, error in zip(
                table["sha"], table["vector"], table["logits"], table["stats"], table["error"], strict=True
            ):
                if error:
                    failed += 1
                    continue
                # float16 as the cache stores them: no round trip through float32
                vec = np.frombuffer(vector, np.float16)
                log = np.frombuffer(logits, np.float16) if logits else None
                rows.append((embedding_key(sha, tag), vec, log))
                stats.append((stats_key(sha, STATS_VERSION), blob))
            cache.put_embeddings(rows)
            cache.put_stats(stats)
            embedded += len(rows)
            if progress is not None:
                progress("import", n, len(files))
    return embedded, failed
