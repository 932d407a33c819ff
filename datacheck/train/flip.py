"""Bottlenecks of horizontally mirrored images, cached beside the plain ones.

Mirroring is the one augmentation that can be cached: each image has exactly one mirror image, so its
bottleneck is computed once and kept under the backbone's cache tag plus :data:`MIRROR_TAG_SUFFIX`. Training
on both orientations and averaging the prediction of an image and its mirror (``--flip``) is worth about a
point of accuracy on CIFAR-10 with a hidden layer (docs/benchmarks.md); the first run embeds every image a
second time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from datacheck.dataset import ImageRecord
from datacheck.embed.cache import Cache, default_cache_dir, embedding_key
from datacheck.embed.pipeline import Embeddings, ProgressFn, sha256_bytes
from datacheck.images import ImageDecodeError, decode_image
from datacheck.params import EmbedParams
from datacheck.sources import read_record

logger = logging.getLogger(__name__)

#: Appended to the backbone's cache tag for mirrored-image bottlenecks.
MIRROR_TAG_SUFFIX = "+hflip"


def mirror_tag(embeddings: Embeddings, params: EmbedParams) -> str:
    """Cache tag of the mirrored bottlenecks for these embeddings' backbone and size."""
    from datacheck.embed.backbones import cache_tag

    return cache_tag(embeddings.model_id, embeddings.image_size, weights=params.weights) + MIRROR_TAG_SUFFIX


def _mirrored_pixels(record: ImageRecord, image_size: int, expected_sha: str) -> np.ndarray:
    data = read_record(record)
    if sha256_bytes(data) != expected_sha:
        raise ImageDecodeError(f"{record.path} changed since it was embedded; run the command again")
    return decode_image(data, image_size, name=record.path).pixels[:, ::-1]


def _compute(
    embeddings: Embeddings,
    rows: list[int],
    params: EmbedParams,
    backend: Callable,
    cache: Cache,
    tag: str,
    progress: ProgressFn,
) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    size, bs = embeddings.image_size, params.batch_size
    with ThreadPoolExecutor(params.decode_workers) as pool:
        for start in range(0, len(rows), bs):
            batch = rows[start : start + bs]
            args = [(embeddings.records[i], size, embeddings.file_sha256[i]) for i in batch]
            pixels = np.stack(list(pool.map(lambda a: _mirrored_pixels(*a), args)))
            vectors = backend(pixels)[0]
            cache.put_embeddings(
                [
                    (embedding_key(embeddings.file_sha256[i], tag), v, None)
                    for i, v in zip(batch, vectors, strict=True)
                ]
            )
            out.update(zip(batch, vectors, strict=True))
            progress("mirror", min(start + bs, len(rows)), len(rows))
    return out


def mirrored_vectors(
    embeddings: Embeddings, params: EmbedParams, *, progress: ProgressFn | None = None
) -> np.ndarray:
    """Bottlenecks of the mirrored images, row-aligned with ``embeddings.vectors``.

    Served from the cache where possible; the rest are decoded exactly like the pipeline does, mirrored,
    embedded with the same backbone and stored.

    Args:
        embeddings: From :func:`datacheck.embed.pipeline.embed_dataset` with ``params``.
        params: The embedding parameters (backbone, cache, runtime, batch size).
        progress: Callback ``("mirror", done, total)``.

    Returns:
        ``float32[N, D]``.
    """
    tag = mirror_tag(embeddings, params)
    keys = [embedding_key(sha, tag) for sha in embeddings.file_sha256]
    start = time.perf_counter()
    with Cache(params.cache_dir or default_cache_dir()) as cache:
        hits = cache.get_embeddings(keys)
        missing = [i for i, key in enumerate(keys) if key not in hits]
        computed: dict[int, np.ndarray] = {}
        if missing:
            from datacheck.embed.runtime import load_backend

            logger.info("embedding %d mirrored images (cached for next time)", len(missing))
            backend = load_backend(
                embeddings.model_id,
                embeddings.image_size,
                weights=params.weights,
                runtime=params.runtime,
                artifact_dir=cache.artifact_path(""),
                batch_size=params.batch_size,
            )
            computed = _compute(
                embeddings, missing, params, backend, cache, tag, progress or (lambda *a: None)
            )
    vectors = (
        np.stack([hits[k][0] if k in hits else computed[i] for i, k in enumerate(keys)]) if keys else None
    )
    logger.info(
        "mirrored bottlenecks: %d cached, %d computed in %.1f s",
        len(hits),
        len(computed),
        time.perf_counter() - start,
    )
    if vectors is None:
        return np.zeros(embeddings.vectors.shape, np.float32)
    return vectors.astype(np.float32)
