"""``engine="ray"``: the same vectors as in-process, on a local 2-CPU Ray instance; resume; clear errors.

Every cache starts with the converted model of a module-wide warm cache (what a user's cache holds after
the first run): each Ray actor then loads the ``.tflite`` file instead of building and converting the Keras
model again (~25 s per actor), and the conversion itself is tested in ``test_runtime.py``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from datacheck.cli import app
from datacheck.dataset import discover
from datacheck.embed.cache import ARTIFACTS_DIR
from datacheck.embed.pipeline import embed_dataset
from datacheck.errors import UsageError
from datacheck.params import EmbedParams
from tests.factories import random_scene, splits_dataset

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'datacheck[ray]'")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def converted_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The artifacts folder of a cache that has converted the model (in this process, once)."""
    warm = tmp_path_factory.mktemp("warm-cache")
    embed_dataset(discover(splits_dataset(warm / "ds", train=1, test=1)), _params(warm / "cache"))
    return warm / "cache" / ARTIFACTS_DIR


def _cache(converted_model: Path, path: Path) -> Path:
    """A new cache folder at ``path`` that already holds the converted model."""
    shutil.copytree(converted_model, path / ARTIFACTS_DIR)
    return path


def _params(cache: Path, **changes) -> EmbedParams:
    return EmbedParams(cache_dir=cache, image_size=96, batch_size=8, **changes)


def test_same_vectors_as_in_process_and_bad_files_reported(
    tmp_path: Path, local_ray, converted_model
) -> None:
    root = splits_dataset(tmp_path / "ds")
    (root / "train" / "apple" / "broken.png").write_bytes(b"not a png at all")
    on_ray = embed_dataset(discover(root), _params(_cache(converted_model, tmp_path / "c1"), engine="ray"))
    local = embed_dataset(discover(root), _params(_cache(converted_model, tmp_path / "c2")))
    assert on_ray.runtime == "ray" and (on_ray.computed, on_ray.cached) == (18, 0)
    assert [r.path for r in on_ray.records] == [r.path for r in local.records]
    a, b = on_ray.vectors, local.vectors
    cosine = np.einsum("ij,ij->i", a, b) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 1 - 1e-6
    assert on_ray.stats.equals(local.stats)
    assert [(f.path, f.kind) for f in on_ray.failures] == [("train/apple/broken.png", "unreadable")]


def test_a_rerun_sends_only_what_the_cache_lacks_and_a_quiet_run_shows_no_ray_progress(
    tmp_path: Path, local_ray, converted_model, capfd
) -> None:
    from datacheck.embed.ray_engine import prefill_cache

    root = splits_dataset(tmp_path / "ds", train=3, test=2)
    params = _params(_cache(converted_model, tmp_path / "cache"), engine="ray")
    capfd.readouterr()
    first = prefill_cache(discover(root), params, 96)  # no progress callback: a quiet run
    assert (first.submitted, first.embedded, first.failed) == (10, 10, 0)
    err = capfd.readouterr().err
    assert "Running Dataset" not in err and "Total Progress" not in err, err[-2000:]
    assert ray.data.DataContext.get_current().enable_progress_bars  # restored for the caller's own datasets
    for i in range(3):  # three new images, and one copy of an existing one (same content: not sent)
        random_scene(90_000 + i).save(root / "train" / "pear" / f"new{i}.png")
    (root / "test" / "pear" / "copy.png").write_bytes((root / "train" / "pear" / "0.png").read_bytes())
    second = prefill_cache(discover(root), params, 96)
    assert (second.submitted, second.embedded) == (3, 3)
    assert prefill_cache(discover(root), params, 96).submitted == 0


def test_cli_engine_ray(tmp_path: Path, local_ray, converted_model) -> None:
    root = splits_dataset(tmp_path / "ds", train=2, test=1)
    cache = _cache(converted_model, tmp_path / "c")
    args = ["embed", str(root), "--cache", str(cache), "--image-size", "96", "--engine", "ray"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "ray" in result.output


def test_fill_cache_on_ray_counts_what_the_cluster_embedded(
    tmp_path: Path, local_ray, converted_model
) -> None:
    """``datacheck embed --engine ray``: counts only; what the cluster cannot read is worded in-process."""
    from datacheck.embed.pipeline import fill_cache

    root = splits_dataset(tmp_path / "ds", train=2, test=1)
    (root / "train" / "apple" / "broken.png").write_bytes(b"not a png at all")
    params = _params(_cache(converted_model, tmp_path / "cache"), engine="ray")
    first = fill_cache(discover(root), params)
    assert (first.images, first.cached, first.computed, first.runtime) == (6, 0, 6, "ray")
    assert [(f.path, f.kind) for f in first.failures] == [("train/apple/broken.png", "unreadable")]
    again = fill_cache(discover(root), params)
    assert (again.cached, again.computed, again.runtime) == (6, 0, "cache")
    served = embed_dataset(discover(root), _params(tmp_path / "cache"))
    assert (served.computed, served.cached) == (0, 6)


def test_missing_ray_says_how_to_install(tmp_path: Path, monkeypatch) -> None:
    from datacheck.embed import ray_engine

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(UsageError, match=r"pip install 'datacheck\[ray\]'"):
        ray_engine.ray_module()
    root = splits_dataset(tmp_path / "ds", train=1, test=1)
    args = ["embed", str(root), "--cache", str(tmp_path / "c"), "--engine", "ray"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "datacheck[ray]" in result.output


def test_engine_is_validated() -> None:
    with pytest.raises(ValueError, match="engine must be one of local, ray, got 'spark'"):
        EmbedParams(engine="spark")  # type: ignore[arg-type]


def test_the_same_readers_feed_the_cluster(tmp_path: Path, local_ray, converted_model) -> None:
    """WebDataset members are read on the workers by offset, exactly as in-process."""
    from tests.test_sources import _images, write_folder, write_webdataset

    images = _images(2, 1)
    shards = write_webdataset(tmp_path / "wds", images)
    on_ray = embed_dataset(discover(shards), _params(_cache(converted_model, tmp_path / "c1"), engine="ray"))
    folder = write_folder(tmp_path / "folder", images)
    local = embed_dataset(discover(folder), _params(_cache(converted_model, tmp_path / "c2")))
    assert on_ray.runtime == "ray" and on_ray.computed == len(set(local.file_sha256))
    by_sha = dict(zip(local.file_sha256, local.vectors, strict=True))
    for sha, vector in zip(on_ray.file_sha256, on_ray.vectors, strict=True):
        np.testing.assert_array_equal(vector, by_sha[sha])


def test_a_killed_worker_is_retried_without_lost_or_doubled_rows(
    tmp_path: Path, local_ray, converted_model
) -> None:
    """A decode task's process and an embedding actor each die once mid-run; Ray re-runs their batches."""
    import os

    import pyarrow.parquet as pq

    from datacheck.embed import ray_engine
    from datacheck.embed.pipeline import cache_misses

    root = splits_dataset(tmp_path / "ds", train=3, test=2)
    params = _params(_cache(converted_model, tmp_path / "cache"), engine="ray")
    todo = cache_misses(discover(root).records, params, 96)
    decode_died, embed_died = tmp_path / "decode-died", tmp_path / "embed-died"

    def decode_dying_once(batch, **kwargs):  # defined here: Ray ships it by value
        if not decode_died.exists():
            decode_died.touch()
            os._exit(1)  # the worker process dies, as when killed or out of memory
        return ray_engine.decode_rows(batch, **kwargs)

    class EmbedderDyingOnce(ray_engine._Embedder):
        def __call__(self, batch):
            if not embed_died.exists():
                embed_died.touch()
                os._exit(1)
            return super().__call__(batch)

    out, listed = tmp_path / "shards", tmp_path / "todo"
    rows = ray_engine._write_todo([todo[:3], todo[3:]], listed, rows_per_file=4)  # files of 4, 4 and 2 rows
    assert rows == len(todo) == 10 and len(list(listed.glob("*.parquet"))) == 3
    ray_engine._run_pipeline(
        ray,
        listed,
        rows,
        params,
        96,
        str(params.cache_dir / ARTIFACTS_DIR),
        out,
        decode=decode_dying_once,
        embedder=EmbedderDyingOnce,
    )
    assert decode_died.exists() and embed_died.exists()
    table = pq.read_table(out)
    assert sorted(table.column("sha").to_pylist()) == sorted(sha for _, sha in todo)  # none lost, none twice
    assert all(table.column("vector").to_pylist()) and not any(table.column("error").to_pylist())


def test_cpu_split_always_leaves_decoding_a_cpu() -> None:
    from datacheck.embed.ray_engine import cpu_split

    assert cpu_split(2, 1) == (1.0, 1.0)
    assert cpu_split(2, 2) == (1.0, 0.5)  # asking 1 each took both CPUs: decoding never started
    assert cpu_split(1, 1) == (0.5, 0.5)
    assert cpu_split(16, 4) == (1.0, 1.0)
    for cpus, actors in [(1, 1), (1, 3), (2, 1), (2, 2), (2, 5), (3, 2), (16, 40)]:
        decode, actor = cpu_split(cpus, actors)
        assert decode > 0 and actor > 0 and decode + actors * actor <= cpus


def test_more_actors_than_spare_cpus_still_finishes(tmp_path: Path, local_ray, converted_model) -> None:
    """Two actors on the 2-CPU instance: before, they held both CPUs and the decode tasks never ran."""
    import threading

    from datacheck.embed.ray_engine import prefill_cache

    root = splits_dataset(tmp_path / "ds", train=2, test=1)
    params = _params(_cache(converted_model, tmp_path / "cache"), engine="ray", ray_actors=2)
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(prefill_cache(discover(root), params, 96)))
    worker.daemon = True
    worker.start()
    worker.join(timeout=240)
    assert outcome, "the Ray pipeline with 2 actors on 2 CPUs did not finish in 240 s (decode tasks starved)"
    assert (outcome[0].submitted, outcome[0].embedded) == (6, 6)
