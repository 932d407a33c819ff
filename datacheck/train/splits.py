"""Train / validation / test roles for retraining: the dataset's own split folders, else a stable hash.

The hash rule is TF retrain.py's (:func:`datacheck.dataset.stable_split_percentage`): a file's role depends
only on its base name with everything from ``_nohash_`` on ignored, so ``anna_nohash_1.jpg`` and
``anna_nohash_2.jpg`` always share a role, and adding images never moves an existing image to another role.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datacheck.dataset import TEST, TRAIN, VAL, ImageRecord, split_role, stable_split_percentage
from datacheck.params import Params, param

logger = logging.getLogger(__name__)

ROLES = (TRAIN, VAL, TEST)


@dataclass(frozen=True, slots=True)
class SplitParams(Params):
    """How images are divided into training, validation and test roles.

    Attributes:
        val_percent: Share of images (by stable hash) used for validation / early stopping, when the dataset
            has no validation split folder.
        test_percent: Share of images (by stable hash) held out for the final metrics, when the dataset has
            no test split folder.
        use_folders: Use the dataset's own split folders (``train/``, ``val/``, ``test/``) when present.
    """

    val_percent: float = param(10.0, ge=0, lt=100)
    test_percent: float = param(10.0, ge=0, lt=100)
    use_folders: bool = True

    def relations(self) -> list[str]:
        """``val_percent + test_percent`` leaves images for training."""
        if self.val_percent + self.test_percent < 100.0:
            return []
        return [
            "val_percent + test_percent must be less than 100 (to leave images for training), got "
            f"{self.val_percent} + {self.test_percent}"
        ]


def hash_role(path: str, val_percent: float, test_percent: float) -> str:
    """The role retrain.py's rule gives a file: validation below ``val_percent``, then test, then train.

    Args:
        path: Dataset-relative path (only the base name counts; ``_nohash_`` and what follows are ignored).
        val_percent: Validation share in percent.
        test_percent: Test share in percent.
    """
    pct = stable_split_percentage(path)
    if pct < val_percent:
        return VAL
    if pct < val_percent + test_percent:
        return TEST
    return TRAIN


def _folder_role(split: str) -> str | None:
    return split_role(split)


def assign_roles(records: Sequence[ImageRecord], params: SplitParams | None = None) -> np.ndarray:
    """Give every record a role: ``"train"``, ``"val"`` or ``"test"``.

    With split folders (and ``params.use_folders``), each folder keeps its role; a role the folders lack
    is carved out of the training folder by the stable hash (e.g. no ``val/`` folder: ``val_percent`` of
    ``train/`` validates). Without split folders every image gets its role from the hash.

    Args:
        records: The images, e.g. ``Embeddings.records``.
        params: Percentages; defaults from :class:`SplitParams`.

    Returns:
        ``object[N]`` array of role names, row-aligned with ``records``.
    """
    params = params or SplitParams()
    folders = [r.split for r in records] if params.use_folders else [None] * len(records)
    present = {_folder_role(s) for s in folders if s is not None}
    val_pct = 0.0 if VAL in present else params.val_percent
    test_pct = 0.0 if TEST in present else params.test_percent
    roles = np.empty(len(records), dtype=object)
    for i, (record, split) in enumerate(zip(records, folders, strict=True)):
        role = _folder_role(split) if split is not None else None
        if role is None or role == TRAIN:
            role = hash_role(record.path, val_pct, test_pct)
        roles[i] = role
    counts = Counter(roles.tolist())
    logger.info(
        "roles: %s (split folders: %s; hash: val %.0f%%, test %.0f%%)",
        ", ".join(f"{counts.get(r, 0)} {r}" for r in ROLES),
        ", ".join(sorted(present)) or "none",
        val_pct,
        test_pct,
    )
    return roles
