"""The ``duplicates`` check on synthetic contexts with planted exact and near duplicates."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from datacheck.checks.base import Severity, Status, registered
from datacheck.checks.duplicates import DuplicatesParams, check_duplicates
from datacheck.params import ParamsError
from datacheck.runner import run_one
from tests.factories import make_context
from tests.test_neardup import brightened, flipped, shifted, textures

DIM = 32


class Planted:
    """Rows of a context under construction: thumbnails, vectors, labels and pixel hashes."""

    def __init__(self, n: int, seed: int = 21) -> None:
        self.rng = np.random.default_rng(seed)
        self.thumbs = list(textures(n, seed=seed))
        self.vectors = list(self.rng.standard_normal((n, DIM)).astype(np.float32))
        self.labels = [i % 4 for i in range(n)]
        self.hashes = [f"h{i}" for i in range(n)]

    def copy(self, of: int, thumb: np.ndarray | None = None, label: int | None = None) -> int:
        """Add a copy of row ``of``: exact (same pixels and vector) without ``thumb``, else an edited one."""
        noise = 0.0 if thumb is None else 0.3 * self.rng.standard_normal(DIM).astype(np.float32)
        self.thumbs.append(self.thumbs[of] if thumb is None else thumb)
        self.vectors.append(self.vectors[of] + noise)
        self.labels.append(self.labels[of] if label is None else label)
        self.hashes.append(self.hashes[of] if thumb is None else f"h{len(self.hashes)}")
        return len(self.thumbs) - 1

    def look_alike(self, of: int, seed: int) -> int:
        """Add a different image whose embedding is almost the same as row ``of``'s."""
        self.thumbs.append(textures(1, seed=seed)[0])
        self.vectors.append(self.vectors[of] + 0.05 * self.rng.standard_normal(DIM).astype(np.float32))
        self.labels.append(self.labels[of])
        self.hashes.append(f"h{len(self.hashes)}")
        return len(self.thumbs) - 1

    def context(self, splits=None, stats: pd.DataFrame | None = None):
        stats = pd.DataFrame({"pixel_hash": self.hashes}) if stats is None else stats
        return make_context(
            np.stack(self.vectors),
            self.labels,
            class_names=["cat", "dog", "fox", "owl"],
            thumbs=np.stack(self.thumbs),
            stats=stats,
            splits=splits,
        )


def _by_rows(ctx, res):
    row = {p: i for i, p in enumerate(ctx.paths)}
    return {frozenset(row[f] for f in finding.files): finding for finding in res.findings}


@pytest.fixture(scope="module")
def planted():
    p = Planted(40)
    rows = {
        "exact": p.copy(0),
        "shifted": p.copy(1, shifted(p.thumbs[1], 2, -1)),
        "brighter": p.copy(2, brightened(p.thumbs[2])),
        "flipped": p.copy(3, flipped(p.thumbs[3])),
        "relabelled": p.copy(4, label=1),  # an exact copy of a 'cat' labelled 'dog'
        "look_alike_a": p.look_alike(5, seed=101),
        "look_alike_b": p.look_alike(5, seed=102),
        "triple_exact": p.copy(6),
        "triple_near": p.copy(6, shifted(p.thumbs[6], 0, 3)),
    }
    ctx = p.context()
    return ctx, rows, check_duplicates(ctx, DuplicatesParams())


def test_groups_are_found_with_their_kind(planted):
    ctx, rows, res = planted
    groups = _by_rows(ctx, res)
    assert set(groups) == {
        frozenset({0, rows["exact"]}),
        frozenset({1, rows["shifted"]}),
        frozenset({2, rows["brighter"]}),
        frozenset({3, rows["flipped"]}),
        frozenset({4, rows["relabelled"]}),
        frozenset({6, rows["triple_exact"], rows["triple_near"]}),
    }
    exact = groups[frozenset({0, rows["exact"]})]
    assert exact.kind == "exact" and exact.severity is Severity.WARN
    assert exact.extra["similarity"] == pytest.approx(1.0, abs=1e-5) and exact.extra["score"] == 1.0
    assert exact.extra["classes"] == ["cat"] and exact.extra["splits"] == []
    for name, original in (("shifted", 1), ("brighter", 2), ("flipped", 3)):
        near = groups[frozenset({original, rows[name]})]
        assert near.kind == "near" and near.severity is Severity.WARN, name
        assert near.extra["score"] >= DuplicatesParams().min_score
        assert 0.5 <= near.extra["similarity"] < 1.0
    triple = groups[frozenset({6, rows["triple_exact"], rows["triple_near"]})]
    assert triple.kind == "near" and len(triple.files) == 3  # one exact copy + one edited copy: one group
    assert "keep one copy" in exact.advice.lower()


def test_conflicting_labels_fail(planted):
    ctx, rows, res = planted
    conflict = _by_rows(ctx, res)[frozenset({4, rows["relabelled"]})]
    assert conflict.kind == "conflicting_labels" and conflict.severity is Severity.FAIL
    assert conflict.extra["classes"] == ["cat", "dog"] and conflict.extra["match"] == "exact"
    assert sorted(conflict.extra["labels"]) == ["cat", "dog"]
    assert "label" in conflict.advice.lower()
    assert res.status is Status.FAIL
    assert res.findings[0] is conflict  # failures first


def test_look_alikes_are_not_duplicates(planted):
    ctx, rows, res = planted
    flagged = {r for group in _by_rows(ctx, res) for r in group}
    assert not flagged & {5, rows["look_alike_a"], rows["look_alike_b"]}
    assert ctx.vectors[5] @ ctx.vectors[rows["look_alike_a"]] > 0.95  # they are neighbours in the embedding


def test_metrics(planted):
    ctx, _, res = planted
    assert res.metrics["groups"] == {"exact": 1, "near": 4, "conflicting_labels": 1}
    assert res.metrics["redundant_images"] == 7 and res.metrics["images_in_groups"] == 13
    assert res.metrics["duplicate_fraction"] == pytest.approx(7 / ctx.n)
    assert res.metrics["exact_pairs"] == 3 and res.metrics["near_pairs"] >= 4
    assert "6 duplicate groups" in res.summary and "1 with conflicting labels" in res.summary
    json.dumps(res.to_dict())


def test_exact_only_and_file_hash_fallback():
    p = Planted(20, seed=3)
    a, b = p.copy(0), p.copy(1, shifted(p.thumbs[1], 1, 1))
    sha = [f"{int(h[1:]):064x}" for h in p.hashes]  # same file hash for the exact copy only
    ctx = make_context(np.stack(p.vectors), p.labels, thumbs=np.stack(p.thumbs), file_sha256=sha)
    res = check_duplicates(ctx, DuplicatesParams(near=False))
    assert [sorted(f.files) for f in res.findings] == [sorted([ctx.paths[0], ctx.paths[a]])]
    assert res.findings[0].kind == "exact"
    assert {frozenset(g) for g in _by_rows(ctx, check_duplicates(ctx, DuplicatesParams()))} == {
        frozenset({0, a}),
        frozenset({1, b}),
    }


def test_clean_control_passes():
    """Distinct images whose embeddings are all close (look-alikes): nothing to report."""
    p = Planted(1, seed=8)
    for k in range(30):
        p.look_alike(0, seed=200 + k)
    ctx = p.context()
    res = check_duplicates(ctx, DuplicatesParams())
    assert res.status is Status.PASS and not res.findings
    assert res.summary == "no duplicates among 31 images"
    assert res.metrics["candidate_pairs"] > 100 and res.metrics["near_pairs"] == 0


def test_max_findings_keeps_status_and_counts(planted):
    ctx, _, _ = planted
    res = check_duplicates(ctx, DuplicatesParams(max_findings=1))
    assert len(res.findings) == 1 and res.findings[0].kind == "conflicting_labels"
    assert res.status is Status.FAIL and res.metrics["groups"]["near"] == 4
    assert "first 1 groups listed" in res.summary


def test_registered_with_validated_params(planted):
    spec = registered()["duplicates"]
    assert spec.params_type is DuplicatesParams
    assert spec.make_params({"min_score": 0.9}).min_score == 0.9
    with pytest.raises(ParamsError, match="max_findings must be at least 0, got -1"):
        spec.make_params({"max_findings": -1})
    with pytest.raises(ParamsError, match="min_score must be greater than 0"):  # inherited from NearDupParams
        DuplicatesParams(min_score=0)
    with pytest.raises(KeyError):
        spec.make_params({"threshold": 0.9})
    ctx, _, _ = planted
    assert run_one(ctx, spec, spec.default_params()).status is Status.FAIL
