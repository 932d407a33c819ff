"""The embed pipeline end to end with the real bundled model: cache, failures, the pure batch step."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from datacheck.cli import app
from datacheck.dataset import discover
from datacheck.embed.pipeline import auto_image_size, embed_batch, embed_dataset
from datacheck.embed.runtime import load_backend
from datacheck.params import EmbedParams, ParamsError

SIZE = 96


@pytest.fixture
def cache_dir(model_cache: Path) -> Path:
    return model_cache


def _scene(seed: int, size: int = 48) -> Image.Image:
    """A smooth random colour field: distinct per seed, natural enough for a CNN."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BICUBIC)


def _tree(root: Path, seed: int, per_class: int = 4) -> Path:
    for k, label in enumerate(("apple", "pear", "plum")):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            _scene(seed * 1000 + 10 * k + i).save(root / label / f"{i}.png")
    return root


def _params(cache_dir: Path) -> EmbedParams:
    return EmbedParams(image_size=SIZE, cache_dir=cache_dir, batch_size=5)


def test_second_run_is_served_from_cache(tmp_path, cache_dir):
    root = _tree(tmp_path / "ds", seed=1)
    (root / "apple" / "empty.jpg").write_bytes(b"")
    (root / "pear" / "truncated.png").write_bytes((root / "pear" / "0.png").read_bytes()[:60])
    first = embed_dataset(discover(root), _params(cache_dir))
    assert (len(first.records), first.computed, first.cached) == (12, 12, 0)
    assert first.vectors.shape == (12, 1280) and first.logits.shape == (12, 1000)
    assert {f.path for f in first.failures} == {"apple/empty.jpg", "pear/truncated.png"}
    assert all(f.kind == "unreadable" and f.reason for f in first.failures)

    second = embed_dataset(discover(root), _params(cache_dir))
    assert (second.computed, second.cached, second.runtime) == (0, 12, "cache")
    assert [r.path for r in second.records] == [r.path for r in first.records]
    # computed rows come back already rounded as the cache stores them: a warm run sees the same bits
    np.testing.assert_array_equal(second.vectors, first.vectors)
    np.testing.assert_array_equal(second.logits, first.logits)
    assert second.stats.equals(first.stats)


def test_rename_is_free_and_one_changed_file_is_recomputed(tmp_path, cache_dir):
    root = _tree(tmp_path / "ds", seed=2)
    embed_dataset(discover(root), _params(cache_dir))
    shutil.move(root / "plum" / "0.png", root / "plum" / "renamed.png")
    shutil.move(root / "pear", root / "pears")
    _scene(999_999).save(root / "apple" / "1.png")
    again = embed_dataset(discover(root), _params(cache_dir))
    assert (again.computed, again.cached) == (1, 11)
    assert "pears/0.png" in {r.path for r in again.records}


def test_unchanged_files_are_not_read_again_but_a_stealthy_edit_is_caught(tmp_path, cache_dir, monkeypatch):
    """Warm runs trust a remembered hash only while size, mtime, ctime, inode and device are unchanged."""
    import os

    from datacheck.embed import pipeline

    root = _tree(tmp_path / "ds", seed=4)
    embed_dataset(discover(root), _params(cache_dir))
    read: list[str] = []
    real = pipeline.file_sha256
    monkeypatch.setattr(pipeline, "file_sha256", lambda path: read.append(path.name) or real(path))
    again = embed_dataset(discover(root), _params(cache_dir))
    assert read == [] and (again.computed, again.cached) == (0, 12)

    target = root / "pear" / "2.png"
    before = target.stat()
    edited = bytearray(target.read_bytes())
    edited[-20] ^= 0xFF  # same size, different content...
    target.write_bytes(bytes(edited))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # ...and the modification time put back
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    third = embed_dataset(discover(root), _params(cache_dir))
    assert read == ["2.png"]  # st_ctime moved: only that file was read again
    assert third.file_sha256 != again.file_sha256


def test_pure_batch_step_matches_the_pipeline(tmp_path, cache_dir):
    root = _tree(tmp_path / "ds", seed=3, per_class=2)
    result = embed_dataset(discover(root), _params(cache_dir))
    backend = load_backend("efficientnet-lite0", SIZE, artifact_dir=cache_dir / "artifacts")
    items = [(r.path, r.abs_path.read_bytes()) for r in result.records] + [("bad.jpg", b"not an image")]
    out = embed_batch(items, backend, SIZE)
    assert [o.name for o in out] == [r.path for r in result.records] + ["bad.jpg"]
    assert out[-1].vector is None and out[-1].error
    vectors = np.stack([o.vector for o in out[:-1]])
    cos = np.sum(vectors * result.vectors, 1) / (
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(result.vectors, axis=1)
    )
    assert cos.min() > 0.999
    assert [o.file_sha256 for o in out[:-1]] == list(result.file_sha256)


def test_fill_cache_a_chunk_at_a_time_from_disk_counts_like_one_pass(tmp_path, cache_dir, monkeypatch):
    """``datacheck embed`` reads the records from disk in chunks: same counts, failures and cache rows."""
    from datacheck import api
    from datacheck.embed import pipeline

    monkeypatch.setattr(pipeline, "_FILL_CHUNK", 4)  # 14 files: 4 chunks of records, 4 of misses
    root = _tree(tmp_path / "ds", seed=29)  # contents no other test embeds into the shared cache
    (root / "apple" / "empty.jpg").write_bytes(b"")
    (root / "plum" / "copy.png").write_bytes((root / "plum" / "0.png").read_bytes())
    (root / "pear" / "notes.txt").write_text("not an image")
    stages: list[tuple[str, int, int]] = []
    first = api.fill_cache(root, _params(cache_dir), progress=lambda *seen: stages.append(seen))
    assert (first.fill.images, first.fill.cached, first.fill.computed) == (13, 0, 13)
    assert (first.dataset.images, first.dataset.root, first.dataset.layout) == (14, root, "classes")
    assert [(p.path, p.kind) for p in first.problems] == [
        ("apple/empty.jpg", "unreadable"),
        ("pear/notes.txt", "not_an_image"),
    ]
    for stage in ("hash", "cache", "embed"):  # one bar per stage over the whole run, never going back
        seen = [(done, total) for name, done, total in stages if name == stage]
        assert all(a[0] <= b[0] for a, b in itertools.pairwise(seen)), (stage, seen)
        assert seen[-1] == (14, 14), (stage, seen)  # 14 files hashed and looked up, 14 misses embedded
    again = api.fill_cache(root, _params(cache_dir))
    assert (again.fill.images, again.fill.cached, again.fill.computed) == (13, 13, 0)
    served = embed_dataset(discover(root), _params(cache_dir))
    assert (served.computed, served.cached) == (0, 13)


def test_auto_image_size_rule():
    assert auto_image_size(32) == 96
    assert auto_image_size(100) == 160
    assert auto_image_size(480) == 224


def test_fill_cache_counts_without_gathering_and_serves_the_same_rows(tmp_path, cache_dir):
    """``datacheck embed``'s path: counts only; the rows it commits are those embed_dataset returns."""
    from datacheck.embed.pipeline import fill_cache

    root = _tree(tmp_path / "ds", seed=17)  # contents no other test embeds into the shared cache
    (root / "apple" / "empty.jpg").write_bytes(b"")
    (root / "plum" / "copy.png").write_bytes((root / "plum" / "0.png").read_bytes())
    filled_cache = cache_dir
    stages: list[tuple[str, int, int]] = []
    first = fill_cache(discover(root), _params(filled_cache), progress=lambda *seen: stages.append(seen))
    assert (first.images, first.cached, first.computed) == (13, 0, 13)
    assert {stage for stage, _, _ in stages} == {"hash", "cache", "embed"}
    assert [s for s in stages if s[0] == "cache"][-1] == ("cache", 14, 14)  # every hashed file looked up
    assert [(f.path, f.kind) for f in first.failures] == [("apple/empty.jpg", "unreadable")]
    assert first.runtime != "cache" and first.timings["model"] > 0
    again = fill_cache(discover(root), _params(filled_cache))
    assert (again.images, again.cached, again.computed, again.runtime) == (13, 13, 0, "cache")

    served = embed_dataset(discover(root), _params(filled_cache))
    shutil.copytree(cache_dir / "artifacts", tmp_path / "fresh" / "artifacts")  # the converted model only
    fresh = embed_dataset(discover(root), _params(tmp_path / "fresh"))
    assert (served.computed, served.cached) == (0, 13)
    np.testing.assert_array_equal(served.vectors, fresh.vectors)
    np.testing.assert_array_equal(served.logits, fresh.logits)
    assert served.stats.equals(fresh.stats)


def test_params_are_validated():
    with pytest.raises(ParamsError, match="image_size"):
        EmbedParams(image_size=7)
    with pytest.raises(ParamsError, match="batch_size"):
        EmbedParams(batch_size=0)


def test_cli_embed_summary_and_exit_codes(tmp_path, cache_dir):
    root = _tree(tmp_path / "ds", seed=4, per_class=2)
    (root / "plum" / "notes.txt").write_text("not an image")
    runner = CliRunner()
    ok = runner.invoke(app, ["embed", str(root), "--cache", str(cache_dir), "--image-size", str(SIZE)])
    assert ok.exit_code == 0, ok.output
    assert "computed now" in ok.output and "not_an_image" in ok.output
    missing = runner.invoke(app, ["embed", str(tmp_path / "nope"), "--cache", str(cache_dir)])
    assert missing.exit_code == 3
    bad = runner.invoke(app, ["embed", str(root), "--cache", str(cache_dir), "--image-size", "7"])
    assert bad.exit_code == 2


def test_cli_import_does_not_load_tensorflow():
    code = "import sys, datacheck.cli; print('tensorflow' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_logits_are_held_as_float16_without_loss():
    from datacheck.embed.cache_codec import as_stored
    from datacheck.embed.pipeline import _half_if_exact

    rows = np.stack([as_stored(np.random.default_rng(i).normal(0, 8, 1000)) for i in range(3)])
    held = _half_if_exact(rows)
    assert held.dtype == np.float16
    np.testing.assert_array_equal(held.astype(np.float32), rows)  # every cached value is exact
    huge = np.concatenate([rows, np.full((1, 1000), 1e6, np.float32)])  # past float16 (never cached)
    kept = _half_if_exact(huge)
    assert kept.dtype == np.float32
    np.testing.assert_array_equal(kept, huge)


def test_nothing_decodable_gives_empty_arrays_of_the_usual_shapes(tmp_path):
    """Every file unreadable: no model is loaded, and the empty result keeps its arrays' row shapes."""
    root = tmp_path / "ds"
    for label in ("apple", "pear"):
        (root / label).mkdir(parents=True)
        (root / label / "x.png").write_bytes(b"not an image")
    result = embed_dataset(discover(root), _params(tmp_path / "cache"))
    assert len(result.failures) == 2 and result.logits is None
    assert result.stats.thumbs.shape == (0, 32, 32, 3) and result.stats.thumbs.dtype == np.uint8


def test_rows_are_let_go_as_they_are_gathered():
    from datacheck.embed.pipeline import _gathered, _Slot

    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)
    held = [_Slot(record=None, sha=f"{i}", vector=matrix[i]) for i in range(4)]  # type: ignore[arg-type]
    out = _gathered(held, "vector", np.float32)
    np.testing.assert_array_equal(out, matrix)
    assert not np.shares_memory(out, matrix)
    assert all(slot.vector is None for slot in held)  # the decoded chunk is no longer referenced


def test_the_audit_lets_go_of_the_embedding_result_before_the_checks_run(tmp_path, cache_dir, monkeypatch):
    """The context holds what the checks read; the raw result (vectors, statistics objects) is freed."""
    import gc
    import weakref

    from datacheck import api, runner

    root = _tree(tmp_path / "ds", seed=3)
    made: list[weakref.ref] = []
    alive_during_checks: list[bool] = []

    def embed(*args, **kwargs):
        result = embed_dataset(*args, **kwargs)
        made.append(weakref.ref(result))
        return result

    def checks(*args, **kwargs):
        gc.collect()
        alive_during_checks.append(made[0]() is not None)
        return run_checks(*args, **kwargs)

    run_checks = runner.run_checks
    monkeypatch.setattr(api, "embed_dataset", embed)
    monkeypatch.setattr(runner, "run_checks", checks)
    report = api.audit(root, checks=["balance"], cache_dir=cache_dir, image_size=SIZE, map_method="none")
    assert alive_during_checks == [False]
    assert report.checks[0].id == "balance"


def test_spilled_thumbnails_and_logits_give_the_same_audit(tmp_path, cache_dir, monkeypatch):
    """``spill_rows=1``: thumbnails, logits in temporary files, float16 vectors: same arrays and findings."""
    from datacheck import api
    from datacheck.context import build_context
    from datacheck.halfrows import HalfUnitRows
    from datacheck.spool import MappedRows

    root = tmp_path / "ds"
    train, _ = _tree(root / "train", seed=4, per_class=6), _tree(root / "test", seed=5, per_class=4)
    shutil.copy(train / "apple" / "0.png", train / "pear" / "copy.png")  # a duplicate, conflicting label
    Image.open(train / "plum" / "1.png").transpose(Image.FLIP_LEFT_RIGHT).save(root / "test/plum/mirror.png")
    in_memory = embed_dataset(discover(root), _params(cache_dir))
    spilled = embed_dataset(discover(root), _params(cache_dir).replace(spill_rows=1))
    assert isinstance(spilled.logits, MappedRows) and isinstance(spilled.stats.thumbs, MappedRows)
    np.testing.assert_array_equal(np.asarray(spilled.logits), in_memory.logits)
    assert spilled.vectors.dtype == np.float16  # the cache's rows as they are: half the memory, no loss
    np.testing.assert_array_equal(spilled.vectors.astype(np.float32), in_memory.vectors)
    contexts = [build_context(discover(root), result) for result in (spilled, in_memory)]
    assert isinstance(contexts[0].vectors, HalfUnitRows)
    np.testing.assert_array_equal(np.asarray(contexts[0].vectors), contexts[1].vectors)
    assert contexts[0].fingerprint == contexts[1].fingerprint
    assert spilled.stats.equals(in_memory.stats)
    assert not list(cache_dir.glob("datacheck-spool-*"))  # unlinked: nothing left behind, even on a crash

    monkeypatch.setattr(api, "_derived_root", lambda params: None)  # both audits compute everything

    def findings(**options) -> list:
        report = api.audit(root, cache_dir=cache_dir, image_size=SIZE, map_method="none", **options)
        return [(r.id, r.status, r.metrics, [f.to_dict() for f in r.findings]) for r in report.checks]

    spilled_findings = findings(spill_rows=1)
    assert spilled_findings == findings()
    ran = {check: status for check, status, *_ in spilled_findings}
    assert ran["representativeness"] != "skipped" and ran["leakage"] != "skipped"  # they read the vectors


def test_map_laid_out_beside_the_checks_equals_the_map_laid_out_after_them(tmp_path, cache_dir, monkeypatch):
    from datacheck import api

    root = _tree(tmp_path / "ds", seed=6, per_class=12)  # 36 images: above the map's UMAP minimum
    monkeypatch.setattr(api, "_derived_root", lambda params: None)  # every layout computed, none stored

    def audited(workers: int) -> tuple[list, dict]:
        report = api.audit(root, cache_dir=cache_dir, image_size=SIZE, check_workers=workers)
        return [
            (r.id, r.status, r.metrics, [f.to_dict() for f in r.findings]) for r in report.checks
        ], report.map

    after_results, after_map = audited(1)  # one worker: the layout after the last check
    beside_results, beside_map = audited(2)  # the layout on its own thread while two run the checks
    assert after_map["method"] == "umap" and after_map["x"] and None not in after_map["x"]
    assert beside_map == after_map  # same rows, positions and neighbours, to the last rounded digit
    assert beside_results == after_results
