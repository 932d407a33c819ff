"""Every command and the Python example in docs/ci.md run for real, with the exit codes the page promises."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from datacheck.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "ci.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, flags=re.S)


def _commands() -> list[str]:
    """`datacheck …` lines from bash blocks and from YAML `run:` / script lines."""
    lines = [line for block in _blocks("bash") for line in block.splitlines()]
    for block in _blocks("yaml"):
        lines += [re.sub(r"^\s*(- run:|-)\s*", "", line) for line in block.splitlines()]
    return [line.strip() for line in lines if line.strip().startswith("datacheck ")]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_cache: Path) -> Path:
    """``data/images`` with train/test splits and one train image leaked into test, as the page assumes."""
    rng = np.random.default_rng(7)
    images = tmp_path / "data" / "images"
    for split, count in (("train", 6), ("test", 3)):
        for label in ("apple", "pear"):
            (images / split / label).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).resize((48, 48), Image.BICUBIC).save(
                    images / split / label / f"{i}.png"
                )
    shutil.copy(images / "train" / "apple" / "0.png", images / "test" / "apple" / "leak.png")
    (images / "datacheck.toml").write_text('[checks]\nonly = ["files", "duplicates", "leakage"]\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATACHECK_CACHE", str(model_cache))
    monkeypatch.setenv("GITHUB_ACTIONS", "false")
    return tmp_path


def _expected_exit(command: str) -> int:
    if command.startswith("datacheck gate") and "--baseline" not in command:
        return 1  # the planted leak breaks the gate
    return 0


def test_the_page_documents_every_integration():
    commands = _commands()
    assert any("--junit" in c for c in commands) and any("--baseline" in c for c in commands)
    assert any(c.startswith("datacheck diff") for c in commands)
    assert _blocks("python"), "the orchestrator example is missing"
    assert "entry: datacheck gate" in (ROOT / ".pre-commit-hooks.yaml").read_text()


def test_every_documented_command_runs(workdir: Path):
    for command in _commands():
        result = CliRunner().invoke(app, shlex.split(command)[1:])
        assert result.exit_code == _expected_exit(command), (command, result.output[-2000:])
    assert (workdir / "reports" / "datacheck.xml").is_file()
    assert (workdir / "reports" / "datacheck" / "report.json").is_file()


def test_pre_commit_hook_entry_runs(workdir: Path):
    hook = (ROOT / ".pre-commit-hooks.yaml").read_text()
    entry = re.search(r"entry: (.*)", hook).group(1)
    args = re.search(r"args: \[(.*)\]", DOC).group(1)
    result = CliRunner().invoke(app, [*shlex.split(entry)[1:], args])
    assert result.exit_code == 1, result.output  # the leak
    assert (workdir / ".datacheck-report" / "report.json").is_file()


def test_python_example_runs(workdir: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as stop:
        exec(compile(_blocks("python")[0], "docs/ci.md", "exec"), {})
    assert stop.value.code == 1
    assert "leakage" in capsys.readouterr().out
    assert (workdir / "reports" / "datacheck" / "report.json").is_file()
