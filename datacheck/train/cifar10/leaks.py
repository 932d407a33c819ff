"""The leak-free test set, and the leaks a ``report.json`` names.

The leak-free test set is the test images minus exact pixel copies of training images and minus those a
``report.json`` names in ``leak`` findings of its ``leakage`` check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datacheck.errors import UsageError
from datacheck.train.cifar10.arrays import Cifar10Arrays, one_line

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ the report


@dataclass(frozen=True)
class Leaks:
    """Test images that ``datacheck audit`` found duplicated in another split.

    Attributes:
        test_paths: Dataset-relative paths of the leaked test images.
        pairs_listed: Cross-split pairs listed as findings.
        pairs_total: Cross-split pairs found (more than listed when the check's ``max_findings`` cut).
        report_root: The dataset root the report was made on.
    """

    test_paths: frozenset[str]
    pairs_listed: int
    pairs_total: int
    report_root: str | None


def read_leaks(report: Path, test_split: str = "test") -> Leaks:
    """The test images named by the ``leak`` findings of a report.json's ``leakage`` check.

    Args:
        report: A report.json (see docs/report-schema.md).
        test_split: The split whose images are dropped from the leak-free test set.

    Returns:
        The leaked test paths and how complete the list is.

    Raises:
        UsageError: Not a report, or the report has no leakage results.
    """
    try:
        doc = json.loads(Path(report).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read report {report}: {one_line(err)}") from None
    checks = (
        {c.get("id"): c for c in doc.get("checks", []) if isinstance(c, dict)}
        if isinstance(doc, dict)
        else {}
    )
    leakage = checks.get("leakage")
    if leakage is None or leakage.get("status") in ("error", "skipped"):
        raise UsageError(
            f"{report} has no leakage results; run `datacheck audit` on the dataset with the leakage check"
        )
    findings = [f for f in leakage.get("findings", []) if f.get("kind") == "leak"]
    paths = {path for f in findings for path in _test_files(f, test_split)}
    metrics = leakage.get("metrics", {})
    total = int(metrics.get("same_photo_pairs", metrics.get("pairs", len(findings))))
    return Leaks(
        frozenset(paths), len(findings), max(total, len(findings)), doc.get("dataset", {}).get("root")
    )


def _test_files(finding: dict, test_split: str) -> list[str]:
    files = [str(f) for f in finding.get("files", [])]
    splits = finding.get("splits")
    if isinstance(splits, list) and len(splits) == len(files):
        return [f for f, s in zip(files, splits, strict=True) if s == test_split]
    return [f for f in files if f.split("/", 1)[0].lower() == test_split]


def leak_free_mask(test_paths: Sequence[str], leaks: Leaks, data_root: Path | None) -> np.ndarray:
    """``True`` for the test images not named by ``leaks``.

    Paths of a report made on a parent folder of ``data_root`` are re-rooted first.

    Args:
        test_paths: :attr:`Cifar10Arrays.test_paths`.
        leaks: From :func:`read_leaks`.
        data_root: The folder training reads, to re-root the report's paths.

    Returns:
        Boolean mask over the test images.
    """
    leaked = _rerooted(leaks, data_root)
    mask = np.array([p not in leaked for p in test_paths], dtype=bool)
    matched = int((~mask).sum())
    if leaks.pairs_total > leaks.pairs_listed:
        logger.warning(
            "the report lists %d of %d leaking pairs (the leakage check's max_findings): only the listed "
            "ones are excluded; audit again with a higher max_findings for a complete leak-free test set",
            leaks.pairs_listed,
            leaks.pairs_total,
        )
    logger.info("%d of %d leaked test images named by the report are in this test set", matched, len(leaked))
    return mask


def _rerooted(leaks: Leaks, data_root: Path | None) -> frozenset[str]:
    if not leaks.report_root or data_root is None:
        return leaks.test_paths
    try:
        prefix = Path(os.path.abspath(data_root)).relative_to(Path(leaks.report_root)).as_posix()
    except ValueError:
        return leaks.test_paths
    if prefix in ("", "."):
        return leaks.test_paths
    head = prefix + "/"
    return frozenset(p[len(head) :] for p in leaks.test_paths if p.startswith(head))


# ------------------------------------------------------------------------------------------ the subset


@dataclass(frozen=True)
class LeakFreeTest:
    """Which test images the leak-free accuracy uses.

    Attributes:
        keep: Boolean mask over the test images.
        exact: Test images whose pixels equal a training image's.
        from_report: Test images named by the report's ``leak`` findings (and present in this test set).
        report: The report read, if any.
    """

    keep: np.ndarray
    exact: int
    from_report: int
    report: Path | None


def exact_duplicates(x_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """``True`` for test images whose pixels equal some training image's (byte for byte)."""
    seen = {hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in x_train}
    return np.array(
        [hashlib.blake2b(image.tobytes(), digest_size=16).digest() in seen for image in x_test], bool
    )


def leak_free_test(arrays: Cifar10Arrays, report: Path | None, data_root: Path | None) -> LeakFreeTest:
    """The leak-free test subset: no exact pixel copies of training images, nothing the report names."""
    exact = exact_duplicates(arrays.x_train, arrays.x_test)
    keep = ~exact
    named = 0
    if report is not None:
        listed = leak_free_mask(arrays.test_paths, read_leaks(report), data_root)
        named = int((~listed).sum())
        keep &= listed
    logger.info(
        "leak-free test set: %d of %d images (%d exact copies, %d from the report)",
        int(keep.sum()),
        len(keep),
        int(exact.sum()),
        named,
    )
    return LeakFreeTest(keep, int(exact.sum()), named, report)
