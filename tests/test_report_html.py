"""report.html without a browser: the page is self-contained, escaped, and shows only what report.json holds.

``build_demo_report`` (also used by tests/test_browser.py and tests/test_actions.py) writes a small image
dataset with PIL and builds a :class:`Report` straight from findings of every check, with the real file
index and map of ``datacheck.embedding_map`` over a factory-made context.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from datacheck import gate
from datacheck.checks import all_checks
from datacheck.checks.base import CheckResult, Finding, Severity, Status, result
from datacheck.dataset import Dataset
from datacheck.embedding_map import build_map, lay_out
from datacheck.report import Report
from datacheck.report.html import content_security_policy, render_html, script_json, static_text
from datacheck.report.model import json_safe
from datacheck.report.thumbnails import THUMB_SIZE, make_thumbnail, thumb_name, write_thumbnails
from tests.factories import clustered_vectors, make_context

#: Markup that runs script if any layer forgets to escape it (class folder and file names in the XSS test).
XSS = '"><img src=x onerror=alert(1)>'
#: Markup that ends an inline <script> block if the JSON is embedded unescaped (not a valid file name).
SCRIPT_XSS = "</script><script>alert(2)</script><!--"

_COLOURS = {"cat": (200, 120, 60), "dog": (70, 120, 200), "vehicle": (90, 170, 90)}


def mapped(ctx, results, **layout) -> dict:
    """The report's map of ``ctx``: :func:`build_map` on :func:`lay_out` with these options."""
    return build_map(ctx, results, lay_out(ctx, **layout))


def picture(label: str, i: int, size: int = 48) -> Image.Image:
    """A distinct picture per (label, i): a coloured shape on noise."""
    rng = np.random.default_rng([zlib.crc32(label.encode()), i])
    base = rng.integers(0, 60, (size, size, 3), dtype=np.uint8) + 100
    img = Image.fromarray(base.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    colour = _COLOURS.get(label, (220, 40, 160))
    offset = int(rng.integers(2, 12))
    if label == "cat":
        draw.ellipse((offset, offset, size - offset, size - offset), fill=colour)
    elif label == "dog":
        draw.rectangle((offset, offset, size - offset, size - offset), fill=colour)
    else:
        draw.polygon(
            [(size // 2, offset), (size - offset, size - offset), (offset, size - offset)], fill=colour
        )
    return img


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_dataset(
    root: Path, per_class: int, classes: tuple[str, ...], image_size: int = 48
) -> list[tuple[str, str, str]]:
    """``root/<split>/<class>/<name>.png``; returns ``(relative path, label, split)`` rows, sorted by path."""
    rows = []
    for label in classes:
        for i in range(per_class):
            split = "test" if i % 4 == 3 else "train"
            rel = f"{split}/{label}/{label[:12]}_{i:03d}.png"
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            picture(label, i, image_size).save(target)
            rows.append((rel, label, split))
    return sorted(rows)


def build_demo_report(
    parent: Path,
    *,
    per_class: int = 12,
    method: str = "pca",
    hostile: bool = False,
    max_points: int = 20_000,
    image_size: int = 48,
) -> tuple[Report, Path]:
    """A dataset under ``parent/images`` and a report with findings of every check about its files.

    Args:
        parent: Folder to create the dataset in.
        per_class: Images per class (a quarter of them in ``test``).
        method: Map method.
        hostile: Add a class folder and file names made of HTML/JS, and put script-breaking text in messages.
        max_points: Map subsampling threshold.
        image_size: Side of the generated images in pixels.

    Returns:
        The report and the dataset root.
    """
    root = parent / "images"
    classes = ("cat", "dog", "vehicle") + ((XSS,) if hostile else ())
    rows = write_dataset(root, per_class, classes, image_size)
    if hostile:  # file names with markup inside an ordinary class too
        for i in range(2):
            rel = f"train/cat/{XSS}{i}.png"
            picture("cat", 100 + i).save(root / rel)
            rows.append((rel, "cat", "train"))
        rows.sort()
    # an exact duplicate across splits, and an unreadable file
    dup_src, dup_dst = "train/dog/dog_000.png", "test/dog/dog_copy.png"
    (root / dup_dst).write_bytes((root / dup_src).read_bytes())
    rows.append((dup_dst, "dog", "test"))
    rows.sort()
    (root / "train/cat/broken.png").write_bytes(b"not really a png")

    class_names = tuple(sorted(classes))
    labels = np.array([class_names.index(label) for _, label, _ in rows])
    vectors, _ = clustered_vectors([1] * len(class_names), dim=32, seed=1)
    rng = np.random.default_rng(0)
    centres = vectors[labels] * 3
    points = centres + rng.standard_normal((len(rows), 32)).astype(np.float32)
    ctx = make_context(
        points,
        labels,
        class_names=class_names,
        splits=[split for _, _, split in rows],
        paths=[rel for rel, _, _ in rows],
        file_sha256=[_sha(root / rel) for rel, _, _ in rows],
    )
    ctx = dataclasses.replace(ctx, dataset=Dataset(root=root, layout="splits", records=ctx.records))
    specs = all_checks()  # each result shows as its check declares (ReportView), as the runner attaches it
    checks = tuple(dataclasses.replace(r, view=specs[r.id].view) for r in _demo_results(rows, hostile))
    summary = {
        "root": str(root),
        "layout": "splits",
        "images": len(rows) + 1,
        "unreadable": 1,
        "classes": {c: int((labels == i).sum()) for i, c in enumerate(class_names)},
        "splits": {
            s: {c: sum(1 for _, lab, sp in rows if lab == c and sp == s) for c in class_names}
            for s in ("test", "train")
        },
    }
    report = Report(
        dataset=summary,
        embedding={
            "model": "test",
            "image_size": 32,
            "dim": 32,
            "runtime": "test",
            "cached": 0,
            "computed": 1,
        },
        checks=checks,
        gate=gate.evaluate(checks),
        map=mapped(ctx, checks, method=method, max_points=max_points),  # type: ignore[arg-type]
    )
    return report, root


def _demo_results(rows: list[tuple[str, str, str]], hostile: bool) -> tuple[CheckResult, ...]:
    by_label: dict[str, list[str]] = {}
    for rel, label, _ in rows:
        by_label.setdefault(label, []).append(rel)
    cats, dogs, vehicles = by_label["cat"], by_label["dog"], by_label["vehicle"]
    evil = SCRIPT_XSS if hostile else ""
    other = by_label.get(XSS, vehicles)
    return (
        result(
            "files",
            "1 file could not be read",
            [
                Finding(
                    "unreadable",
                    Severity.WARN,
                    "'train/cat/broken.png' could not be decoded: cannot identify image file.",
                    "Delete or replace the file.",
                    ("train/cat/broken.png",),
                    {"reason": "cannot identify image file"},
                )
            ],
        ),
        result(
            "balance",
            f"'vehicle' has fewer images than the others{evil}",
            [
                Finding(
                    "too_few_images",
                    Severity.WARN,
                    f"Class 'vehicle' has only {len(vehicles)} images in 'train'.{evil}",
                    "Collect at least 60 more 'vehicle' images.",
                    (),
                    {"class": "vehicle", "split": "train", "count": len(vehicles), "minimum": 100},
                )
            ],
            {"imbalance_ratio": 1.2},
        ),
        result(
            "quality",
            "1 dark image",
            [
                Finding(
                    "dark",
                    Severity.WARN,
                    f"'{cats[1]}' is much darker than the rest of the dataset.",
                    "Check the exposure; remove it if the object cannot be seen.",
                    (cats[1],),
                    {"issue": "dark", "score": 3.2},
                )
            ],
        ),
        result(
            "duplicates",
            "1 group of exact duplicates",
            [
                Finding(
                    "exact",
                    Severity.WARN,
                    "2 files hold the same picture.",
                    "Keep one copy.",
                    ("test/dog/dog_copy.png", "train/dog/dog_000.png"),
                    {"similarity": 1.0, "classes": ["dog"], "splits": ["test", "train"]},
                )
            ],
        ),
        result(
            "leakage",
            "1 test image duplicated in train",
            [
                Finding(
                    "leak",
                    Severity.FAIL,
                    "'test/dog/dog_copy.png' (test) is a copy of 'train/dog/dog_000.png' (train).",
                    "Remove the test copy, or move both into the same split.",
                    ("test/dog/dog_copy.png", "train/dog/dog_000.png"),
                    {"similarity": 1.0, "splits": ["test", "train"]},
                )
            ],
        ),
        result(
            "labels",
            "2 likely label errors",
            [
                Finding(
                    "label_issue",
                    Severity.WARN,
                    f"'{cats[2]}' is labelled 'cat' but looks like 'dog' (p=0.81 vs 0.10).{evil}",
                    f"Review the label: it looks like 'dog'; relabel or remove the image.{evil}",
                    (cats[2],),
                    {"given": "cat", "suggested": "dog", "score": 0.91},
                ),
                Finding(
                    "label_issue",
                    Severity.WARN,
                    f"'{other[0]}' is labelled '{XSS if hostile else 'vehicle'}' but looks like 'cat'.",
                    "Review the label: it looks like 'cat'.",
                    (other[0],),
                    {"given": XSS if hostile else "vehicle", "suggested": "cat", "score": 0.74},
                ),
            ],
        ),
        result(
            "outliers",
            "1 outlier",
            [
                Finding(
                    "outlier",
                    Severity.WARN,
                    f"'{vehicles[3]}' is far from every other 'vehicle' image.",
                    "Look at it: remove it if it is not a vehicle.",
                    (vehicles[3],),
                    {"label": "vehicle", "nearest_class": "cat", "score": 4.1, "distance": 0.62},
                )
            ],
        ),
        result(
            "shortcuts",
            "1 suspected shortcut: corner:bottom-right (dog)",
            [
                Finding(
                    "shortcut",
                    Severity.WARN,
                    "the bottom-right corner predicts dog better than the object does.",
                    "Look at the example images' marked region and remove or crop what is there.",
                    tuple(dogs[:4]),
                    {
                        "cue": "corner:bottom-right",
                        "classes": ["dog"],
                        "accuracy": 0.71,
                        "baseline": 0.36,
                        "effect": "the bottom-right corner alone tells dog images apart with AUC 0.97",
                        "auc": {"dog": 0.97},
                        "object_auc": {"dog": 0.88},
                        "centre_auc": {"dog": 0.61},
                        "distribution": {
                            "edges": [0.0, 0.25, 0.5, 0.75, 1.0],
                            "classes": {"cat": [5, 3, 1, 0], "dog": [0, 1, 3, 6], "vehicle": [4, 4, 1, 0]},
                        },
                    },
                ),
                Finding(
                    "shortcut",
                    Severity.WARN,
                    "brightness predicts cat.",
                    "Collect cat photos in other light.",
                    tuple(cats[:2]),
                    {
                        "cue": "brightness",
                        "classes": ["cat"],
                        "accuracy": 0.6,
                        "baseline": 0.36,
                        "effect": "cat images are 34% brighter than dog images",
                        "auc": {"cat": 0.8},
                        "object_auc": {"cat": 0.9},
                    },
                ),
            ],
        ),
        result(
            "splits",
            "'cat' falls into 2 groups",
            [
                Finding(
                    "split",
                    Severity.INFO,
                    "class 'cat' falls into 2 well-separated groups: tabby (6) | lynx (rest)",
                    "Split 'cat' into one class per group if the model must tell them apart.",
                    tuple(cats[:4]),
                    {
                        "class": "cat",
                        "score": 0.42,
                        "clusters": [
                            {"size": len(cats[::2]), "name": "tabby / tiger cat", "files": cats[::2]},
                            {"size": len(cats[1::2]), "name": f"lynx{evil}", "files": cats[1::2]},
                        ],
                    },
                ),
                Finding(
                    "merge",
                    Severity.WARN,
                    "classes 'cat' and 'dog' are mixed together in the embedding space.",
                    "Check the two classes' definitions; merge them if they are really one.",
                    (cats[0], dogs[1]),
                    {"classes": ["cat", "dog"], "score": 0.4},
                ),
            ],
        ),
        CheckResult(
            "diversity", Status.PASS, "every class is about as varied as the others", {"spread": 0.5}
        ),
        result(
            "representativeness",
            "the test images are well covered by train",
            [
                Finding(
                    "uncovered",
                    Severity.INFO,
                    f"'{vehicles[0]}' has no close neighbour in train.",
                    "Collect training images like this one.",
                    (vehicles[0],),
                    {"distance": 0.5},
                )
            ],
            {"domain_auc": 0.55},
        ),
    )


# ------------------------------------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Path, Path]:
    parent = tmp_path_factory.mktemp("demo")
    report, root = build_demo_report(parent, hostile=True)
    out = parent / "report"
    report.write(out)
    return report, root, out


def _data_block(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    assert match, "the page must embed report.json in a JSON script block"
    return json.loads(match.group(1))


def test_write_produces_page_json_csv_and_thumbnails(demo: tuple[Report, Path, Path]) -> None:
    report, _, out = demo
    assert {p.name for p in out.iterdir()} >= {"report.json", "findings.csv", "report.html", "thumbs"}
    doc = json.loads((out / "report.json").read_text())
    assert doc["report_id"] == report.report_id and len(doc["report_id"]) == 32
    thumbs = {p.name for p in (out / "thumbs").iterdir()}
    readable = [
        s
        for p, s in zip(doc["map"]["path"], doc["map"]["sha256"], strict=True)
        if p != "train/cat/broken.png"
    ]
    assert thumbs == {thumb_name(s) for s in readable}
    with Image.open(out / "thumbs" / thumb_name(readable[0])) as img:
        assert img.format == "JPEG" and max(img.size) <= THUMB_SIZE


def test_page_embeds_exactly_report_json(demo: tuple[Report, Path, Path]) -> None:
    _, _, out = demo
    html = (out / "report.html").read_text(encoding="utf-8")
    data = _data_block(html)
    assert data["report"] == json.loads((out / "report.json").read_text())
    broken = data["report"]["map"]["sha256"][data["report"]["map"]["path"].index("train/cat/broken.png")]
    assert data["thumbs"] == {"dir": "thumbs", "size": THUMB_SIZE, "missing": [broken]}


def test_page_is_self_contained_with_a_strict_csp(demo: tuple[Report, Path, Path]) -> None:
    _, _, out = demo
    html = (out / "report.html").read_text(encoding="utf-8")
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert content_security_policy(static_text("app.js")) == csp
    # no external resource of any kind: no src/href to a scheme, no @import, no url() but data
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "@import" not in html and not re.search(r"url\((?!data:)", static_text("style.css"))
    assert html.count("<script") == 2  # the JSON block and the viewer


def test_hostile_names_are_escaped_everywhere(demo: tuple[Report, Path, Path]) -> None:
    _, _, out = demo
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<img src=x" not in html
    assert "</script><script>alert(2)" not in html
    head = html.split('<script type="application/json"')[0]
    assert "&lt;/script&gt;" in head  # the summary with SCRIPT_XSS, autoescaped in the overview
    data = _data_block(html)
    assert any(XSS in p for p in data["report"]["map"]["path"])


def test_script_json_cannot_close_the_block() -> None:
    text = script_json({"a": "</script><!-- & \u2028 \u2029 >"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><!-- & \u2028 \u2029 >"}


def test_nan_becomes_null() -> None:
    assert json_safe({"a": [float("nan"), 1.5, float("inf")]}) == {"a": [None, 1.5, None]}
    assert '"a":null' in script_json(json_safe({"a": float("nan")}))


def test_render_needs_no_map_and_no_findings() -> None:
    checks = (CheckResult("balance", Status.PASS, "fine"),)
    report = Report(
        dataset={
            "root": "/x/data",
            "layout": "classes",
            "images": 0,
            "unreadable": 0,
            "classes": {},
            "splits": {},
        },
        embedding={},
        checks=checks,
        gate=gate.evaluate(checks),
    )
    html = render_html(report.to_dict())
    assert _data_block(html)["report"]["map"] is None
    assert "datacheck · data" in html


def test_map_holds_every_named_file_hashes_and_neighbours(demo: tuple[Report, Path, Path]) -> None:
    report, root, _ = demo
    fmap = report.map
    assert fmap["method"] == "pca" and not fmap["subsampled"]
    named = {p for c in report.checks for f in c.findings for p in f.files}
    assert named <= set(fmap["path"])
    for path, sha in zip(fmap["path"], fmap["sha256"], strict=True):
        assert sha == _sha(root / path)
    broken = fmap["path"].index("train/cat/broken.png")
    assert fmap["x"][broken] is None and fmap["class"][broken] == -1
    assert all(0.0 <= x <= 1.0 for x in fmap["x"] if x is not None)
    label_file = report.check("labels").findings[0].files[0]
    near = fmap["neighbours"][str(fmap["path"].index(label_file))]
    assert 1 <= len(near) <= 6 and fmap["path"].index(label_file) not in near


def test_map_subsamples_but_keeps_named_files(tmp_path: Path) -> None:
    report, _ = build_demo_report(tmp_path, per_class=20, max_points=25)
    fmap = report.map
    named = {p for c in report.checks for f in c.findings for p in f.files}
    assert fmap["subsampled"] and fmap["images"] == 61
    assert named <= set(fmap["path"]) and len(fmap["path"]) < 62


def test_changed_findings_keep_the_subsampled_layout(tmp_path: Path, monkeypatch) -> None:
    """Above max_points the layout is of a sample chosen by content: files a finding names are placed."""
    import datacheck.embedding_map as embedding_map

    vectors, labels = clustered_vectors([30, 30], dim=16, spread=0.2, seed=7)
    ctx = make_context(vectors, labels)
    first = mapped(ctx, (), method="pca", max_points=40, store=tmp_path)
    sampled = set(first["path"])
    outside = [p for p in ctx.paths if p not in sampled][:3]
    finding = Finding("demo", Severity.WARN, "look", "look", tuple(outside))
    named = (result("demo", "three files", [finding]),)

    def no_layout(*args, **kwargs):
        raise AssertionError("changed findings must not lay the map out again")

    monkeypatch.setattr(embedding_map, "_layout", no_layout)
    again = mapped(ctx, named, method="pca", max_points=40, store=tmp_path)
    assert again["path"][:40] == first["path"] and again["x"][:40] == first["x"]
    assert set(outside) <= set(again["path"]) and len(again["path"]) == 43
    xy = np.column_stack([again["x"], again["y"]]).astype(float)
    row = {p: i for i, p in enumerate(again["path"])}
    for path in outside:  # each lands among its own blob
        own = [
            row[p] for p in again["path"][:40] if labels[ctx.paths.index(p)] == labels[ctx.paths.index(path)]
        ]
        other = [i for i in range(40) if i not in own]
        point = xy[row[path]]
        assert np.linalg.norm(point - xy[own].mean(axis=0)) < np.linalg.norm(point - xy[other].mean(axis=0))


def test_umap_layout_reuses_the_knn_graph(tmp_path: Path) -> None:
    vectors, labels = clustered_vectors([40, 40], dim=16, spread=0.2)
    ctx = make_context(vectors, labels)
    fmap = mapped(ctx, (), method="umap")
    assert fmap["method"] == "umap" and len(fmap["x"]) == 80
    xs = np.array(fmap["x"])
    # the two blobs stay apart on the map
    assert (
        abs(xs[:40].mean() - xs[40:].mean()) > 0.2
        or abs(np.mean(fmap["y"][:40]) - np.mean(fmap["y"][40:])) > 0.2
    )


def test_stored_layout_is_reused_for_the_same_rows(tmp_path: Path, monkeypatch) -> None:
    import datacheck.embedding_map as embedding_map

    vectors, labels = clustered_vectors([20, 20], dim=16, spread=0.2)
    ctx = make_context(vectors, labels)
    first = mapped(ctx, (), method="pca", store=tmp_path)

    def no_layout(*args, **kwargs):
        raise AssertionError("the layout should have come from the store")

    with monkeypatch.context() as patched:
        patched.setattr(embedding_map, "_layout", no_layout)
        again = mapped(ctx, (), method="pca", store=tmp_path)
    assert (again["x"], again["y"], again["method"]) == (first["x"], first["y"], first["method"])
    moved = make_context(vectors + np.float32(0.01), labels)  # other vectors: laid out afresh
    assert mapped(moved, (), method="pca", store=tmp_path)["x"] != first["x"]
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_map_none_still_indexes_files() -> None:
    vectors, labels = clustered_vectors([5, 5], dim=8)
    ctx = make_context(vectors, labels)
    fmap = mapped(ctx, (), method="none")
    assert fmap["method"] == "none" and len(fmap["path"]) == 10 and set(fmap["x"]) == {None}


def test_thumbnails_skip_existing_and_survive_broken_files(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    Image.new("RGBA", (300, 120), (0, 0, 0, 0)).save(root / "a.png")
    (root / "b.jpg").write_bytes(b"junk")
    files = [
        ("a.png", _sha(root / "a.png")),
        ("b.jpg", _sha(root / "b.jpg")),
        ("gone.png", "0" * 64),
        ("x", None),
    ]
    stats = write_thumbnails(root, files, tmp_path / "t")
    assert (stats.written, stats.existing, stats.failed) == (1, 0, 2)
    with Image.open(tmp_path / "t" / thumb_name(files[0][1])) as img:
        assert img.size == (64, 26) and img.getpixel((5, 5)) == pytest.approx((128, 128, 128), abs=3)
    again = write_thumbnails(root, files[:1], tmp_path / "t")
    assert (again.written, again.existing) == (0, 1)
    with pytest.raises(ValueError):
        thumb_name("../../etc/passwd")


def test_thumbnail_applies_exif_orientation(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "r.jpg", exif=exif.tobytes())
    make_thumbnail(tmp_path / "r.jpg", tmp_path / "t.jpg")
    with Image.open(tmp_path / "t.jpg") as thumb:
        assert thumb.size == (20, 40)  # rotated, never enlarged


def test_templates_and_static_ship_as_package_data() -> None:
    text = Path(__file__).resolve().parents[1].joinpath("pyproject.toml").read_text()
    package_data = tomllib.loads(text)["tool"]["setuptools"]["package-data"]["datacheck"]
    assert "report/templates/*" in package_data and "report/static/*" in package_data


def test_a_few_new_images_are_placed_into_the_stored_layout(tmp_path: Path, monkeypatch) -> None:
    import datacheck.embedding_map as embedding_map

    vectors, labels = clustered_vectors([40, 40], dim=16, spread=0.2, seed=5)
    first = mapped(make_context(vectors[:-2], labels[:-2]), (), method="pca", store=tmp_path)
    grown = make_context(vectors, labels)  # two more images of the second blob

    def no_layout(*args, **kwargs):
        raise AssertionError("a 2.5 % change should be placed into the stored layout")

    with monkeypatch.context() as patched:
        patched.setattr(embedding_map, "_layout", no_layout)
        placed = mapped(grown, (), method="pca", store=tmp_path)
    assert placed["x"][:78] == first["x"] and placed["y"][:78] == first["y"]  # nothing already shown moves
    xy = np.column_stack([placed["x"], placed["y"]]).astype(float)
    blob = xy[40:78]
    for row in (78, 79):  # a new image lands among its own blob, not the other
        assert np.linalg.norm(xy[row] - blob.mean(axis=0)) < np.linalg.norm(xy[row] - xy[:40].mean(axis=0))

    monkeypatch.setattr(embedding_map, "MAX_PLACED_SHARE", 0.01)  # now too large a change: laid out afresh
    calls: list[int] = []
    real = embedding_map._layout
    monkeypatch.setattr(embedding_map, "_layout", lambda c, r, m, s: calls.append(len(r)) or real(c, r, m, s))
    mapped(make_context(vectors[:-4], labels[:-4]), (), method="pca", store=tmp_path)
    assert calls == [76]
