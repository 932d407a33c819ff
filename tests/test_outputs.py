"""An audit never reads what datacheck wrote: reports, caches, models, quarantines are marked and skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datacheck import outputs
from datacheck.cli import app
from datacheck.dataset import discover
from datacheck.embed.cache import Cache
from tests.factories import random_scene, splits_dataset


def test_marked_folders_are_skipped_and_the_split_layout_kept(tmp_path):
    root = splits_dataset(tmp_path / "data")
    before = discover(root)
    report = root / "report"
    outputs.mark(report, "report")
    random_scene(1).save(report / "thumb.png")
    (report / "thumbs").mkdir()
    random_scene(2).save(report / "thumbs" / "x.png")
    with Cache(root / "cache") as cache:  # a cache created inside the dataset marks itself
        cache.artifact_path("knn")
    after = discover(root)
    assert after.layout == "splits" == before.layout
    assert after.records == before.records
    assert after.issues == before.issues


def test_an_unmarked_folder_named_like_an_output_is_still_data(tmp_path):
    root = tmp_path / "data"
    for label in ("report", "cat"):
        (root / label).mkdir(parents=True)
        random_scene(len(label)).save(root / label / "0.png")
    assert discover(root).classes == ("cat", "report")


def test_claim_marks_only_folders_inside_the_dataset(tmp_path, caplog):
    root = splits_dataset(tmp_path / "data")
    outside = tmp_path / "elsewhere"
    outputs.claim(outside, "report", root)
    assert not outside.exists(), "a folder outside the dataset is created when it is written, not before"
    with caplog.at_level("WARNING", logger="datacheck.outputs"):
        outputs.claim(root / "report", "report", root)
    assert outputs.is_marked(root / "report")
    assert [r.getMessage() for r in caplog.records if "inside the dataset" in r.getMessage()]


def _findings(doc: dict) -> list:
    return [(c["id"], c["status"], c["findings"]) for c in doc["checks"]]


@pytest.mark.slow
def test_audit_dot_twice_inside_the_dataset_gives_the_same_findings(tmp_path, model_cache, monkeypatch):
    root = splits_dataset(tmp_path / "data")
    monkeypatch.chdir(root)
    runner = CliRunner()
    docs, outs = [], []
    for _ in range(2):
        result = runner.invoke(app, ["audit", ".", "--cache", str(model_cache), "--map", "pca"])
        assert result.exit_code == 0, result.output
        outs.append(result.output)
        docs.append(json.loads((root / "report" / "report.json").read_text()))
    first, second = docs
    assert first["dataset"] == second["dataset"]
    assert first["dataset"]["layout"] == "splits" and first["dataset"]["images"] == 18
    assert set(first["dataset"]["classes"]) == {"apple", "pear"}
    assert _findings(first) == _findings(second)
    assert outputs.is_marked(root / "report")
    assert all("inside the dataset" in out for out in outs), "say where the report goes, on every run"


def test_a_default_audit_writes_nothing_on_stderr(tmp_path: Path, model_cache: Path) -> None:
    """Issue 22's clean-output target, in a real process: no third-party warnings, native log lines or
    progress remnants on stderr when the output is a log (not a terminal)."""
    import subprocess
    import sys

    root = splits_dataset(tmp_path / "ds", train=3, test=2)
    script = Path(sys.executable).with_name("datacheck")  # the installed console script, as a user runs it
    cmd = [str(script), "audit", str(root), "--out", str(tmp_path / "r")]
    cmd += ["--cache", str(model_cache), "--image-size", "96"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == ""
    assert "wrote " in proc.stdout
