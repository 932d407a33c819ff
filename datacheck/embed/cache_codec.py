"""Keys and byte format of the bottleneck cache (:mod:`datacheck.embed.cache`).

Keys combine the SHA-256 of a file's bytes with what else the cached value depends on (the backend's
``cache_tag``, the stats format version). Vectors and logits are stored as little-endian float16 blobs; a
stored row is decoded only when its blobs have the dtype and lengths recorded next to them.

Internal to the cache: use the names :mod:`datacheck.embed.cache` exports.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np

# The records keep the name of the module they were split from (logging configuration, tests).
logger = logging.getLogger("datacheck.embed.cache")

VECTOR_DTYPE = "<f2"
"""How vectors and logits are stored: little-endian float16."""
_SHA_RE = re.compile(r"[0-9a-f]{64}")

_T = TypeVar("_T")
EmbeddingRow = tuple[np.ndarray, np.ndarray | None]
"""A cached embedding: float32 bottleneck vector and float16 logits as stored (or ``None``)."""
StoredRow = tuple[str, str, int, bytes, int | None, bytes | None]
"""(key, dtype, dim, vector blob, n_logits, logits blob) as read from the database."""


# --------------------------------------------------------------------------------------------- keys


def check_sha(file_sha256: str) -> str:
    """``file_sha256`` in lower case; ValueError unless it is 64 hex digits."""
    sha = file_sha256.lower()
    if not _SHA_RE.fullmatch(sha):
        raise ValueError(f"not a SHA-256 hex digest: {file_sha256!r}")
    return sha


def embedding_key(file_sha256: str, cache_tag: str) -> str:
    """Cache key of one file's bottleneck (and logits) under one backend.

    Args:
        file_sha256: Hex SHA-256 of the file's bytes.
        cache_tag: The backend's tag: model id + input size + preprocessing version.

    Returns:
        ``"e:<cache_tag>:<sha256>"``.

    Raises:
        ValueError: If the hash is not 64 hex digits or the tag is empty or not printable.
    """
    if not cache_tag or not cache_tag.isprintable():
        raise ValueError(f"cache_tag must be a non-empty printable string, got {cache_tag!r}")
    return f"e:{cache_tag}:{check_sha(file_sha256)}"


def stats_key(file_sha256: str, stats_version: int) -> str:
    """Cache key of one file's serialised ``ImageStats``.

    Args:
        file_sha256: Hex SHA-256 of the file's bytes.
        stats_version: Version of the stats byte format (bump it to invalidate every cached blob).

    Returns:
        ``"s:<stats_version>:<sha256>"``.

    Raises:
        ValueError: If the hash is not 64 hex digits or the version is negative.
    """
    if int(stats_version) < 0:
        raise ValueError(f"stats_version must be >= 0, got {stats_version}")
    return f"s:{int(stats_version)}:{check_sha(file_sha256)}"


def split_key(key: str, prefix: str) -> tuple[str, bytes]:
    """``prefix + "<middle>:<sha>"`` → (middle, 32-byte digest); ValueError for anything else."""
    if not (key.startswith(prefix) and len(key) > len(prefix) + 65 and key[-65] == ":"):
        raise ValueError(f"not a cache key of kind {prefix!r}: {key!r}")
    sha = key[-64:]
    if not _SHA_RE.fullmatch(sha):
        raise ValueError(f"not a cache key of kind {prefix!r}: {key!r}")
    return key[len(prefix) : -65], bytes.fromhex(sha)


def group_keys(keys: Iterable[str], prefix: str) -> dict[str, dict[bytes, str]]:
    """Group keys by their middle part (tag or stats version): middle → {digest: key}."""
    groups: dict[str, dict[bytes, str]] = {}
    for key in keys:
        middle, sha = split_key(key, prefix)
        groups.setdefault(middle, {})[sha] = key
    return groups


def chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """Consecutive slices of ``items`` of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ------------------------------------------------------------------------------------- encoding


def as_stored(values: np.ndarray) -> np.ndarray:
    """``values`` as the cache will serve them back: rounded through float16, as float32.

    The pipeline returns freshly computed rows in this form too, so an audit sees identical vectors
    whether its cache was empty or warm (and content keys over them, like the kNN graph's, match). Rows
    with values float16 cannot hold are returned unchanged (they are not cached either).
    """
    array = np.asarray(values, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        half = array.astype(VECTOR_DTYPE)
    finite = np.isfinite(half).all(axis=-1, keepdims=True)
    return np.where(finite, half.astype(np.float32), array)


def _encode_array(values: np.ndarray, key: str, what: str) -> bytes | None:
    """1-D array → float16 bytes; ``None`` (with a warning) when a value is not finite in float16."""
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what} for {key} must be a non-empty 1-D array, got shape {array.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        half = array.astype(VECTOR_DTYPE)
    if not np.isfinite(half).all():
        logger.warning(
            "not caching %s: its %s has values that are NaN, infinite or beyond float16", key, what
        )
        return None
    return half.tobytes()


def encode_embedding(
    key: str, vector: np.ndarray, logits: np.ndarray | None
) -> tuple[str, bytes, int, bytes, int | None, bytes | None] | None:
    """One ``put_embeddings`` item → (tag, sha, dim, vector blob, n_logits, logits blob), or None to skip."""
    tag, sha = split_key(key, "e:")
    vblob = _encode_array(vector, key, "vector")
    lblob = None if logits is None else _encode_array(logits, key, "logits")
    if vblob is None or (logits is not None and lblob is None):
        return None
    n_logits = None if lblob is None else len(lblob) // 2
    return tag, sha, len(vblob) // 2, vblob, n_logits, lblob


def is_intact(
    dtype: str, dim: int, vector_bytes: int | None, n_logits: int | None, logit_bytes: int | None
) -> bool:
    """Whether a stored row's blobs match the dtype and sizes beside them (their lengths; ``None``: NULL)."""
    if dtype != VECTOR_DTYPE or vector_bytes is None or vector_bytes != 2 * dim:
        return False
    if n_logits is None and logit_bytes is None:
        return True
    return n_logits is not None and logit_bytes is not None and logit_bytes == 2 * n_logits


def _decode_blobs(blobs: Sequence[bytes], length: int) -> np.ndarray:
    """Equal-length float16 blobs as one float16 matrix ``[len(blobs), length]`` (one copy)."""
    return np.frombuffer(b"".join(blobs), dtype=VECTOR_DTYPE).reshape(len(blobs), length)


def _length(blob: bytes | None) -> int | None:
    return None if blob is None else len(blob)


def decode_rows(
    rows: Iterable[StoredRow], *, half: bool = False
) -> tuple[dict[str, EmbeddingRow], list[str]]:
    """Decode stored rows, batched by shape; returns ``({key: (vector, logits)}, damaged keys)``.

    Vectors come back as float32 (what the checks compute with) or, with ``half``, as stored, float16 (for a
    caller that keeps them so: a million converted there and back cost ~10 s). Logits come as stored,
    float16: an audit keeps them as float16 anyway, and converting 60,000 × 1,000 values there and back cost
    ~1 s a warm run. Both are rows of one matrix per shape: converting 10k rows at once is several times
    faster than 10k small conversions.
    """
    by_shape: dict[tuple[int, int | None], list[StoredRow]] = {}
    damaged: list[str] = []
    for row in rows:
        key, dtype, dim, vblob, n_logits, lblob = row
        if is_intact(dtype, dim, _length(vblob), n_logits, _length(lblob)):
            by_shape.setdefault((dim, n_logits), []).append(row)
        else:
            damaged.append(key)
    found: dict[str, EmbeddingRow] = {}
    for (dim, n_logits), group in by_shape.items():
        vectors = _decode_blobs([r[3] for r in group], dim)
        vectors = vectors if half else vectors.astype(np.float32)
        logits = None if n_logits is None else _decode_blobs([r[5] for r in group], n_logits)
        for i, row in enumerate(group):
            found[row[0]] = (vectors[i], None if logits is None else logits[i])
    return found, damaged
