import pytest

from datacheck.checks.base import Severity, Status
from datacheck.checks.files import FilesParams, check_files
from datacheck.dataset import FileIssue
from datacheck.params import ParamsError
from tests.factories import clustered_vectors, make_context

ISSUES = [
    FileIssue("cat/broken.jpg", "unreadable", "truncated file: image data ends early (EOF)"),
    FileIssue(
        "cat/notes.txt", "not_an_image", "not an image file: extension '.txt' is not one of .jpg, .png"
    ),
    FileIssue("dog/link.jpg", "duplicate_path", "duplicate path: same file as dog/a.jpg"),
    FileIssue("loose.jpg", "no_label", "no label: the image is directly in the root folder"),
]


def _ctx(issues=ISSUES):
    vectors, labels = clustered_vectors([12, 12], dim=8)
    return make_context(vectors, labels, class_names=["cat", "dog"], failures=issues)


def test_each_bad_file_is_one_finding_with_its_reason():
    res = check_files(_ctx(), FilesParams())
    assert res.status is Status.FAIL
    by_file = {f.files: f for f in res.findings}
    assert set(by_file) == {(i.path,) for i in ISSUES}  # failures and dataset.issues overlap: no repeats
    broken = by_file[("cat/broken.jpg",)]
    assert broken.kind == "unreadable" and broken.severity is Severity.FAIL
    assert "truncated file" in broken.message and broken.extra["reason"] == ISSUES[0].reason
    assert {by_file[(p,)].severity for p in ("cat/notes.txt", "dog/link.jpg", "loose.jpg")} == {Severity.WARN}
    assert res.findings[0].severity is Severity.FAIL  # worst first
    counts = res.metrics["counts"]
    assert {k: n for k, n in counts.items() if n} == {
        "duplicate_path": 1,
        "no_label": 1,
        "not_an_image": 1,
        "unreadable": 1,
    }
    assert counts["missing"] == 0  # every kind is present, so the gate can read counts.unreadable
    assert res.metrics["usable_images"] == 24
    assert all(f.advice.endswith(".") and f.message.endswith(".") for f in res.findings)


def test_clean_dataset_passes():
    res = check_files(_ctx(()), FilesParams())
    assert res.status is Status.PASS and not res.findings
    assert res.metrics["issues"] == 0 and "every file" in res.summary
    assert res.metrics["counts"]["unreadable"] == 0


def test_warn_only_when_nothing_is_unreadable():
    res = check_files(_ctx(ISSUES[1:]), FilesParams())
    assert res.status is Status.WARN


def test_ignore_kinds_and_cap_keep_counts():
    res = check_files(_ctx(), FilesParams(ignore_kinds=("no_label",), max_findings=2))
    assert len(res.findings) == 2 and res.findings[0].kind == "unreadable"
    assert res.metrics["counts"]["no_label"] == 1 and res.metrics["issues"] == 4


def test_params_are_validated():
    with pytest.raises(ParamsError, match="max_findings must be at least 0, got -1"):
        FilesParams(max_findings=-1)
    with pytest.raises(ParamsError, match="fail_kinds must be a list of issue kinds"):
        FilesParams(fail_kinds="unreadable")
    with pytest.raises(ParamsError, match="ignore_kinds must be a list of issue kinds"):
        FilesParams(ignore_kinds=["missing", 3])
    with pytest.raises(ParamsError, match="ignore_kinds must be a list of issue kinds"):
        FilesParams(ignore_kinds=None)
    assert FilesParams(fail_kinds=["missing"]).fail_kinds == ("missing",)
    assert FilesParams(ignore_kinds=(k for k in ["no_label"])).ignore_kinds == ("no_label",)
