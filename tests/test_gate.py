"""The pre-training gate end to end: exit codes, config, JUnit, GitHub output, baselines, diff, init."""

from __future__ import annotations

import json
import shutil
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datacheck.cli import app
from datacheck.config import ConfigError, load_config
from tests.factories import splits_dataset

POLICY = '[checks]\nonly = ["files", "duplicates", "leakage"]\n'


@pytest.fixture
def cache_dir(model_cache: Path) -> Path:
    return model_cache


def _dataset(root: Path, *, leak: bool) -> Path:
    splits_dataset(root)
    if leak:
        shutil.copy(root / "train" / "apple" / "0.png", root / "test" / "apple" / "leaked.png")
    (root / "datacheck.toml").write_text(POLICY)
    return root


def _gate(cache_dir: Path, root: Path, *extra: str, env: dict | None = None):
    args = ["gate", str(root), "--cache", str(cache_dir), "--map", "none", "--image-size", "96", *extra]
    return CliRunner().invoke(app, args, env=env or {"GITHUB_ACTIONS": "false"})


def test_planted_leak_fails_with_junit_then_baseline_passes(tmp_path, cache_dir):
    root = _dataset(tmp_path / "ds", leak=True)
    junit = tmp_path / "junit.xml"
    res = _gate(cache_dir, root, "--out", str(tmp_path / "r1"), "--junit", str(junit))
    assert res.exit_code == 1, res.output
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite" and int(suite.get("failures")) >= 1
    leak = next(c for c in suite.iter("testcase") if c.get("name") == "leakage")
    failure_text = " ".join(f.text or "" for f in leak.iter("failure"))
    assert "train/apple/0.png" in failure_text and "test/apple/leaked.png" in failure_text
    assert {c.get("name") for c in suite.iter("testcase")} == {"files", "duplicates", "leakage"}

    # Adopt the gate today: the same findings are forgiven, even after the leaked file is renamed.
    (root / "test" / "apple" / "leaked.png").rename(root / "test" / "apple" / "renamed.png")
    res = _gate(
        cache_dir, root, "--out", str(tmp_path / "r2"), "--baseline", str(tmp_path / "r1" / "report.json")
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert doc["gate"]["passed"] and doc["gate"]["baseline"]["findings_forgiven"] >= 1

    # ...but a new leak is still caught.
    shutil.copy(root / "train" / "pear" / "1.png", root / "test" / "pear" / "new_leak.png")
    res = _gate(
        cache_dir, root, "--out", str(tmp_path / "r3"), "--baseline", str(tmp_path / "r1" / "report.json")
    )
    assert res.exit_code == 1
    violation = json.loads((tmp_path / "r3" / "report.json").read_text())["gate"]["violations"][0]
    assert violation["check"] == "leakage" and violation["value"] == 1

    diff = CliRunner().invoke(
        app,
        [
            "diff",
            str(tmp_path / "r1" / "report.json"),
            str(tmp_path / "r3" / "report.json"),
            "--format",
            "json",
        ],
    )
    assert diff.exit_code == 0
    changes = json.loads(diff.output)
    assert any("test/pear/new_leak.png" in f["files"] for f in changes["new"])
    assert changes["gate"] == {"before": False, "after": False}


def test_clean_dataset_passes_and_json_format_keeps_stdout_pure(tmp_path, cache_dir):
    root = _dataset(tmp_path / "ds", leak=False)
    res = _gate(cache_dir, root, "--out", str(tmp_path / "r"), "--format", "json", "--quiet")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["gate"]["passed"] and [c["id"] for c in doc["checks"]] == ["files", "duplicates", "leakage"]


def test_github_annotations_and_step_summary(tmp_path, cache_dir):
    root = _dataset(tmp_path / "ds", leak=True)
    summary = tmp_path / "summary.md"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    res = _gate(cache_dir, root, "--out", str(tmp_path / "r"), "--quiet", env=env)
    assert res.exit_code == 1
    lines = [line for line in res.stdout.splitlines() if line.startswith("::")]
    assert any(line.startswith("::error file=") and "title=datacheck leakage::" in line for line in lines), (
        res.stdout
    )
    assert "❌ **gate failed**" in summary.read_text() and "| leakage |" in summary.read_text()


def test_exit_code_3_when_the_dataset_cannot_be_read(tmp_path, cache_dir):
    assert _gate(cache_dir, tmp_path / "missing").exit_code == 3
    (tmp_path / "empty").mkdir()
    assert _gate(cache_dir, tmp_path / "empty").exit_code == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[checks.balance]\nmin_imgs = 5\n", "unknown key 'checks.balance.min_imgs'"),
        ('[checks.balance]\nmin_images = "many"\n', "checks.balance.min_images has the wrong type"),
        ("[gate]\nmax_leak_pairs = -1\n", "max_leak_pairs must be at least 0"),
        ('fail_on = "sometimes"\n', "fail_on must be 'warn' or 'fail'"),
        ('[checks]\nskip = ["nope"]\n', "unknown check 'nope'"),
        ('[checks.leakage]\nseverity = "loud"\n', "checks.leakage.severity must be one of"),
        ("[embed\n", "cannot read the configuration"),
    ],
)
def test_config_errors_name_key_and_file(tmp_path, cache_dir, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=r"bad\.toml") as err:
        load_config(config)
    assert message in str(err.value)
    root = _dataset(tmp_path / "ds", leak=False)
    res = _gate(cache_dir, root, "--config", str(config), "--out", str(tmp_path / "r"))
    assert res.exit_code == 2 and "bad.toml" in res.output


def test_usage_errors_exit_2(tmp_path, cache_dir):
    root = _dataset(tmp_path / "ds", leak=False)
    assert _gate(cache_dir, root, "--checks", "nonsense").exit_code == 2
    assert _gate(cache_dir, root, "--fail-on", "sometimes").exit_code == 2


def test_pyproject_tool_table_and_severity_override(tmp_path, cache_dir, monkeypatch):
    root = _dataset(tmp_path / "ds", leak=True)
    (root / "datacheck.toml").unlink()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.datacheck]\n[tool.datacheck.checks]\nonly = ["leakage"]\n'
        '[tool.datacheck.checks.leakage]\nseverity = "warn"\n[tool.datacheck.gate]\nmax_leak_pairs = 5\n'
    )
    res = _gate(cache_dir, root, "--out", str(tmp_path / "r"))
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [c["id"] for c in doc["checks"]] == ["leakage"]
    assert {f["severity"] for f in doc["checks"][0]["findings"]} == {"warn"}


def test_init_writes_every_default_and_it_parses(tmp_path):
    target = tmp_path / "datacheck.toml"
    assert CliRunner().invoke(app, ["init", str(target)]).exit_code == 0
    text = target.read_text()
    for key in (
        '# fail_on = "fail"',
        "[checks.balance]",
        "# min_images = 100",
        "[gate]",
        "# max_leak_pairs = 0",
    ):
        assert key in text
    parsed = tomllib.loads(text)  # every value commented out: only the tables remain
    assert (
        set(parsed) == {"embed", "checks", "gate"} and parsed["gate"] == {} and "balance" in parsed["checks"]
    )
    assert load_config(target).fail_on == "fail"
    uncommented = "\n".join(
        line[2:] if line.startswith("# ") and "(unset)" not in line else line for line in text.splitlines()
    )
    target.write_text(uncommented)
    assert load_config(target).gate.max_leak_pairs == 0  # every default is itself valid
    assert CliRunner().invoke(app, ["init", str(target)]).exit_code == 2  # no silent overwrite


def test_audit_without_a_gate_says_what_the_gate_would_do(tmp_path, cache_dir):
    root = _dataset(tmp_path / "ds", leak=True)  # its datacheck.toml: files, duplicates, leakage
    args = ["--cache", str(cache_dir), "--map", "none", "--image-size", "96"]
    audit = CliRunner().invoke(app, ["audit", str(root), "--out", str(tmp_path / "a"), *args])
    assert audit.exit_code == 0, audit.output
    assert "would fail on" in audit.output and "gate failed" not in audit.output
    gate = CliRunner().invoke(app, ["gate", str(root), "--out", str(tmp_path / "g"), *args])
    assert gate.exit_code == 1 and "gate failed" in gate.output


def test_reference_folder_from_the_command_line(tmp_path, cache_dir):
    """--reference feeds the representativeness check, as the API's ``reference=`` does."""
    from tests.factories import random_scene

    root = splits_dataset(tmp_path / "ds")
    deployed = tmp_path / "deployed"
    deployed.mkdir()
    for i in range(12):  # the check needs 10 of each side
        random_scene(50_000 + i).save(deployed / f"shot{i}.png")
    args = ["--checks", "representativeness", "--out", str(tmp_path / "r")]
    res = _gate(cache_dir, root, *args, "--reference", str(deployed))
    assert res.exit_code in (0, 1), res.output
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    (check,) = doc["checks"]
    assert check["metrics"]["mode"] == "reference" and check["metrics"]["reference_images"] == 12


def test_config_embed_table_applies_when_no_flag_is_given(tmp_path, cache_dir):
    root = splits_dataset(tmp_path / "ds", train=2, test=1)
    (root / "datacheck.toml").write_text("[embed]\nimage_size = 64\n")
    args = ["audit", str(root), "--cache", str(cache_dir), "--map", "none", "--checks", "files"]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    embedding = json.loads((tmp_path / "a" / "report.json").read_text())["embedding"]
    assert embedding["image_size"] == 64
    assert embedding["neighbours"] == {"method": "exact", "search_recall": 1.0}  # a small set: exact search
    res = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "b"), "--image-size", "96"]
    )  # the flag wins
    assert json.loads((tmp_path / "b" / "report.json").read_text())["embedding"]["image_size"] == 96
