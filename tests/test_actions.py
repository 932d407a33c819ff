"""`datacheck apply` / `undo`: plans checked against the report, journalled moves, exact undo, crashes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datacheck import actions
from datacheck.cli import app
from tests.test_report_html import build_demo_report

REPO = Path(__file__).resolve().parents[1]


def tree(root: Path) -> dict[str, str]:
    """Every file (sha256) and folder ("dir") under root."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(folder, name), root)] = "dir"
        for name in files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


@pytest.fixture
def audited(tmp_path: Path) -> tuple[dict, Path, Path]:
    """A dataset, its report.json (written to tmp/report) and the report dict."""
    report, root = build_demo_report(tmp_path, per_class=8, method="none")
    out = tmp_path / "report"
    report.write(out, html=False)
    return json.loads((out / "report.json").read_text()), root, out / "report.json"


def decisions_doc(report: dict, entries: list[tuple[str, str, str | None]]) -> dict:
    """A decisions.json document as report.html exports it."""
    fmap = report["map"]
    sha = dict(zip(fmap["path"], fmap["sha256"], strict=True))
    return {
        "schema": "datacheck-decisions",
        "version": 1,
        "report_id": report["report_id"],
        "dataset_root": report["dataset"]["root"],
        "exported_at": "2024-01-01T00:00:00Z",
        "decisions": [
            {"file": f, "action": a, "target": t, "finding": "labels/0", "note": "", "sha256": sha.get(f)}
            for f, a, t in entries
        ],
    }


def write_decisions(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "decisions.json"
    path.write_text(json.dumps(doc))
    return path


STANDARD = [
    ("train/cat/cat_000.png", "remove", None),
    ("test/dog/dog_copy.png", "remove", None),
    ("train/cat/cat_001.png", "relabel", "dog"),
    ("train/cat/cat_002.png", "relabel", "lion"),  # a class folder that does not exist yet
    ("train/dog/dog_001.png", "keep", None),
    ("train/dog/dog_002.png", "ignore", None),
    ("train/vehicle/vehicle_000.png", "relabel", "vehicle"),  # its own class: nothing to do
]


def test_apply_then_undo_restores_the_tree_exactly(audited: tuple[dict, Path, Path], tmp_path: Path) -> None:
    report, root, _ = audited
    # name collisions in the relabel target and in the quarantine
    (root / "train/dog/cat_001.png").write_bytes(b"someone else's file")
    quarantine = actions.default_quarantine(root)
    (quarantine / "train/cat").mkdir(parents=True)
    (quarantine / "train/cat/cat_000.png").write_bytes(b"quarantined earlier")
    before, q_before = tree(root), tree(quarantine)

    plan = actions.plan(
        actions.load_decisions(write_decisions(tmp_path, decisions_doc(report, STANDARD))), report
    )
    assert (plan.count("remove"), plan.count("relabel"), len(plan.unchanged)) == (2, 2, 3)
    assert {m.file for m in plan.renamed} == {"train/cat/cat_000.png", "train/cat/cat_001.png"}
    assert tree(root) == before  # planning touches nothing

    outcome = actions.execute(plan)
    assert outcome.complete and outcome.moved == 4
    after = tree(root)
    moved = {m.file: Path(m.dst) for m in plan.moves}
    assert moved["train/cat/cat_000.png"] == quarantine / "train/cat/cat_000-1.png"
    assert moved["test/dog/dog_copy.png"] == quarantine / "test/dog/dog_copy.png"
    assert moved["train/cat/cat_001.png"] == root / "train/dog/cat_001-1.png"
    assert moved["train/cat/cat_002.png"] == root / "train/lion/cat_002.png"
    for move in plan.moves:
        assert not Path(move.src).exists() and actions.file_sha256(Path(move.dst)) == move.sha256
    assert after["train/dog/cat_001.png"] == before["train/dog/cat_001.png"]  # not overwritten
    assert (quarantine / "train/cat/cat_000.png").read_bytes() == b"quarantined earlier"

    journal = actions.read_journal(outcome.journal)
    assert journal.complete and journal.done == {0, 1, 2, 3}
    assert str(root / "train/lion") in journal.made_dirs

    undone = actions.undo(outcome.journal)
    assert undone.complete and undone.moved == 4
    assert tree(root) == before  # byte-identical, and the folder 'lion' is gone again
    # what datacheck keeps there: its journals, and the marker that keeps audits out of the quarantine
    kept = ("journals", ".datacheck-output")
    assert {k: v for k, v in tree(quarantine).items() if not k.startswith(kept)} == q_before
    assert actions.undo(outcome.journal).moved == 0  # idempotent


def test_cli_dry_run_then_yes_then_undo(audited: tuple[dict, Path, Path], tmp_path: Path) -> None:
    report, root, report_json = audited
    decisions = write_decisions(tmp_path / "report", decisions_doc(report, STANDARD))  # beside report.json
    before = tree(root)
    runner = CliRunner()
    dry = runner.invoke(app, ["apply", str(decisions)], env={"COLUMNS": "200"})
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.output and "train/cat/cat_001.png" in dry.output and "relabel → dog" in dry.output
    assert tree(root) == before

    done = runner.invoke(
        app, ["apply", str(decisions), "--report", str(report_json), "--yes"], env={"COLUMNS": "80"}
    )
    assert done.exit_code == 0, done.output
    assert "moved 4 of 4 files" in done.output
    journal = next(actions.default_quarantine(root).glob("journals/*.jsonl"))
    # not a terminal, 80 columns: the command a user copies from a CI log is one unbroken line
    assert len(f"undo with: datacheck undo {journal}") > 80
    assert f"undo with: datacheck undo {journal}" in done.output.splitlines()
    assert tree(root) != before

    undo = runner.invoke(app, ["undo", str(journal)])
    assert undo.exit_code == 0, undo.output
    assert "restored 4 of 4 files" in undo.output
    assert tree(root) == before


def test_stale_decisions_are_refused_and_nothing_moves(
    audited: tuple[dict, Path, Path], tmp_path: Path
) -> None:
    report, root, report_json = audited
    doc = decisions_doc(report, STANDARD)
    (root / "train/cat/cat_001.png").write_bytes(b"edited after the audit")
    (root / "test/dog/dog_copy.png").unlink()
    before = tree(root)
    with pytest.raises(actions.DecisionsError) as err:
        actions.plan(actions.load_decisions(write_decisions(tmp_path, doc)), report)
    text = str(err.value)
    assert "2 of the decisions no longer match" in text
    assert "'train/cat/cat_001.png': changed since the audit (hash mismatch)" in text
    assert "'test/dog/dog_copy.png': missing" in text
    assert tree(root) == before

    result = CliRunner().invoke(
        app, ["apply", str(write_decisions(tmp_path, doc)), "--report", str(report_json), "--yes"]
    )
    assert result.exit_code == 2 and "changed since the audit" in result.output
    assert tree(root) == before


def test_wrong_report_or_root_or_tampered_hash_is_refused(
    audited: tuple[dict, Path, Path], tmp_path: Path
) -> None:
    report, root, _ = audited
    doc = decisions_doc(report, STANDARD[:1])
    other = dict(doc, report_id="0" * 32)
    with pytest.raises(actions.DecisionsError, match="made on report 0000"):
        actions.plan(actions.load_decisions(write_decisions(tmp_path, other)), report)
    moved_root = dict(doc, dataset_root=str(root.parent / "elsewhere"))
    with pytest.raises(actions.DecisionsError, match="are for the dataset at"):
        actions.plan(actions.load_decisions(write_decisions(tmp_path, moved_root)), report)
    tampered = json.loads(json.dumps(doc))
    tampered["decisions"][0]["sha256"] = "a" * 64
    with pytest.raises(actions.DecisionsError, match="not the one in the report"):
        actions.plan(actions.load_decisions(write_decisions(tmp_path, tampered)), report)
    outside = decisions_doc(report, [("../escape.png", "remove", None)])
    with pytest.raises(actions.DecisionsError, match="not a plain dataset-relative path"):
        actions.plan(actions.load_decisions(write_decisions(tmp_path, outside)), report)
    bad_target = decisions_doc(report, [("train/cat/cat_001.png", "relabel", "../x")])
    with pytest.raises(actions.DecisionsError, match="cannot be a class folder name"):
        actions.plan(actions.load_decisions(write_decisions(tmp_path, bad_target)), report)
    write_decisions(tmp_path, {"schema": "something else"})
    with pytest.raises(actions.DecisionsError, match="not a datacheck decisions file"):
        actions.load_decisions(tmp_path / "decisions.json")


def test_relabel_is_refused_for_a_manifest_layout(audited: tuple[dict, Path, Path], tmp_path: Path) -> None:
    report, _, _ = audited
    report = dict(report, dataset=dict(report["dataset"], layout="manifest"))
    doc = decisions_doc(report, [("train/cat/cat_001.png", "relabel", "dog")])
    with pytest.raises(actions.DecisionsError, match="edit the manifest's label"):
        actions.plan(actions.load_decisions(write_decisions(tmp_path, doc)), report)


def test_a_file_appearing_at_the_destination_is_never_overwritten(
    audited: tuple[dict, Path, Path], tmp_path: Path
) -> None:
    report, root, _ = audited
    plan = actions.plan(
        actions.load_decisions(write_decisions(tmp_path, decisions_doc(report, STANDARD[2:3]))), report
    )
    (root / "train/dog/cat_001.png").write_bytes(b"arrived after planning")
    outcome = actions.execute(plan)
    assert not outcome.complete and outcome.moved == 0
    assert "exists and is another file" in outcome.conflicts[0][1]
    assert (root / "train/dog/cat_001.png").read_bytes() == b"arrived after planning"
    assert (root / "train/cat/cat_001.png").exists()


@pytest.mark.parametrize("crash", ["after_link", "after_copy", "torn_journal_line"])
def test_every_crash_state_can_be_finished_or_undone(
    audited: tuple[dict, Path, Path], tmp_path: Path, crash: str
) -> None:
    report, root, _ = audited
    before = tree(root)
    plan = actions.plan(
        actions.load_decisions(write_decisions(tmp_path, decisions_doc(report, STANDARD))), report
    )
    # the journal is written, the first move is done, the second is caught half-way
    journal = tmp_path / "journal.jsonl"
    first, second = plan.moves[0], plan.moves[1]
    partial = actions.Plan(plan.root, plan.quarantine, plan.report_id, plan.moves[:1])
    actions.execute(partial, journal=tmp_path / "scratch.jsonl")
    header = json.loads((tmp_path / "scratch.jsonl").read_text().splitlines()[0])
    header["moves"] = [dataclasses.asdict(m) for m in plan.moves]
    lines = [json.dumps(header), json.dumps({"type": "done", "index": 0})]
    Path(second.dst).parent.mkdir(parents=True, exist_ok=True)
    if crash == "after_link":
        os.link(second.src, second.dst)
    elif crash == "after_copy":
        Path(second.dst).write_bytes(Path(second.src).read_bytes())
    else:
        lines.append('{"type": "done", "ind')  # kill -9 in the middle of a write
    journal.write_text("\n".join(lines) + ("" if crash == "torn_journal_line" else "\n"))
    assert Path(first.dst).exists()

    finished = actions.resume(journal)
    assert finished.complete
    for move in plan.moves:
        assert not Path(move.src).exists() and actions.file_sha256(Path(move.dst)) == move.sha256
    assert actions.undo(journal).complete
    assert tree(root) == before


DRIVER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from datacheck import actions

    decisions, report, journal, pause = sys.argv[1:5]
    plan = actions.plan(actions.load_decisions(Path(decisions)), actions.load_report(Path(report)))
    print("planned", len(plan.moves), flush=True)

    def progress(done, total):
        print("moved", done, flush=True)
        time.sleep(float(pause))

    actions.execute(plan, journal=Path(journal), progress=progress)
    print("finished", flush=True)
    """
)


def _run_and_kill(
    tmp_path: Path, report: dict, report_json: Path, entries: list, pause: float, after: int
) -> Path:
    """Start an apply in a subprocess and SIGKILL it once ``after`` files have moved; return the journal."""
    decisions = write_decisions(tmp_path, decisions_doc(report, entries))
    journal = tmp_path / "kill.jsonl"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, str(driver), str(decisions), str(report_json), str(journal), str(pause)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == f"moved {after}":
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return journal


def test_kill_9_mid_apply_then_resume_then_undo(audited: tuple[dict, Path, Path], tmp_path: Path) -> None:
    report, root, report_json = audited
    before = tree(root)
    entries = [
        (p, "remove", None) for p in report["map"]["path"] if p.startswith("train/") and "broken" not in p
    ]
    journal = _run_and_kill(tmp_path, report, report_json, entries, pause=0.3, after=3)
    state = actions.read_journal(journal)
    assert 3 <= len(state.done) < len(state.moves) and not state.complete

    finished = actions.resume(journal)
    assert finished.complete and finished.moved + finished.already == len(state.moves)
    assert all(not (root / p).exists() for p, _, _ in entries)
    assert actions.undo(journal).complete
    assert tree(root) == before


def test_kill_9_at_a_random_point_then_undo(audited: tuple[dict, Path, Path], tmp_path: Path) -> None:
    report, root, report_json = audited
    before = tree(root)
    entries = [(p, "relabel", "vehicle") for p in report["map"]["path"] if "/cat/" in p and "broken" not in p]
    entries += [(p, "remove", None) for p in report["map"]["path"] if "/dog/" in p]
    journal = _run_and_kill(tmp_path, report, report_json, entries, pause=0.0, after=1)
    time.sleep(0.05)
    undone = actions.undo(journal)
    assert undone.complete, undone.conflicts
    assert tree(root) == before
