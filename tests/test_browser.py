"""report.html in a real browser: Debian's Chromium driven headless by Playwright (no browser download).

Skipped with a clear message when /usr/bin/chromium or the playwright package is missing (.ci/run installs
both). Every page load asserts no console error, no page error, no dialog and no request that is not a local
file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from datacheck import actions
from datacheck.report import Report
from tests.test_report_html import XSS, build_demo_report, picture, write_dataset

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "browser tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="browser tests need the playwright package (pip install playwright)"
)

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Map padding in app.js (layoutMap), to find a point's position on the canvas.
MAP_PAD = 12


@dataclass
class Watch:
    """Everything a page did that a report must never do."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def attach(self, page) -> None:
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on("dialog", self._dialog)
        page.on("request", self._request)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _request(self, request) -> None:
        self.requests.append(request.url)
        if not request.url.startswith(("file://", "data:", "blob:")):
            self.remote.append(request.url)

    def assert_clean(self) -> None:
        assert not self.console_errors, self.console_errors
        assert not self.page_errors, self.page_errors
        assert not self.dialogs, f"a script ran: {self.dialogs}"
        assert not self.remote, f"network requests: {self.remote}"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport={"width": 1280, "height": 900},
            accept_downloads=True,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Path, Path]:
    """A report over a dataset with HTML/JS in a class folder name and in file names."""
    parent = tmp_path_factory.mktemp("hostile")
    report, root = build_demo_report(parent, hostile=True)
    out = parent / "report"
    report.write(out)
    return report, root, out / "report.html"


def open_report(browser, html: Path) -> tuple[object, Watch]:
    page = browser.new_page()
    watch = Watch()
    watch.attach(page)
    page.goto(html.as_uri())
    page.wait_for_selector("html[data-ready]", timeout=10_000)
    return page, watch


def test_loads_offline_without_errors_and_shows_every_check(browser, hostile) -> None:
    report, _, html = hostile
    page, watch = open_report(browser, html)
    try:
        for check in report.checks:
            assert page.locator(f"section#check-{check.id}").count() == 1
        assert page.locator(".card").count() == len(report.checks)
        assert page.locator("#recommendations li").count() >= 5
        first = page.locator("#recommendations li").first.inner_text()
        assert first.startswith("FAIL") and "leakage" in first  # the worst problem is listed first
        assert page.locator("#balance-chart svg rect").count() == 4 * 2  # 4 classes × 2 splits
        page.locator("#check-shortcuts").scroll_into_view_if_needed()
        assert page.locator("#check-shortcuts .region").count() == 4  # corner cue outlined on 4 examples
        assert page.locator("#check-splits .strip").count() == 2
        page.wait_for_timeout(200)
        watch.assert_clean()
        assert all(u.startswith("file://") for u in watch.requests)
    finally:
        page.close()


def test_map_renders_points_and_hover_shows_the_thumbnail(browser, hostile) -> None:
    report, _, html = hostile
    page, watch = open_report(browser, html)
    try:
        fmap = report.map
        on_map = [i for i, x in enumerate(fmap["x"]) if x is not None]
        canvas = page.locator("#map-canvas")
        canvas.scroll_into_view_if_needed()
        assert int(canvas.get_attribute("data-points")) == len(on_map)
        painted = page.evaluate(
            """() => { const c = document.getElementById('map-canvas');
                 const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                 let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"""
        )
        assert painted > 50 * len(on_map) / 10

        box = canvas.bounding_box()
        target = on_map[len(on_map) // 2]
        x = box["x"] + MAP_PAD + fmap["x"][target] * (box["width"] - 2 * MAP_PAD)
        y = box["y"] + MAP_PAD + (1 - fmap["y"][target]) * (box["height"] - 2 * MAP_PAD)
        page.mouse.move(x, y)
        tooltip = page.locator("#map-tooltip")
        tooltip.wait_for(state="visible")
        shown = tooltip.locator(".tooltip-path").inner_text()
        assert shown in fmap["path"]
        img = tooltip.locator("img")
        assert img.get_attribute("src") == f"thumbs/{fmap['sha256'][fmap['path'].index(shown)]}.jpg"
        _wait_until(page, "document.querySelector('#map-tooltip img').naturalWidth > 0")

        # clicking a point filters the galleries to its class
        page.mouse.click(x, y)
        label = fmap["classes"][fmap["class"][fmap["path"].index(shown)]]
        assert page.locator("#filter-class").input_value() == label
        assert int(canvas.get_attribute("data-lit")) == sum(
            1 for i in on_map if fmap["classes"][fmap["class"][i]] == label
        )
        watch.assert_clean()
    finally:
        page.close()


def _wait_until(page, expression: str, timeout_s: float = 15.0) -> None:
    """Poll ``expression`` until it is true.

    Playwright's ``wait_for_function`` re-evaluates a string predicate with ``eval`` inside the page, which
    the report's Content-Security-Policy (no 'unsafe-eval') refuses whenever the first check is false; an
    ``evaluate`` call from here goes through the debugging protocol, which the policy does not apply to.
    """
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout_s:.0f} s: {expression}"
        page.wait_for_timeout(50)


def _until_committed(browser, html: Path, key: str, count: int) -> None:
    """Wait until a second page of the report sees ``count`` decisions stored under ``key``.

    Chromium hands localStorage writes to the browser process asynchronously; a reload that races the hand-off
    can start from the old value (seen once on a loaded CI machine). A second page reads through the browser
    process, so once it sees the decisions, a reload does too.
    """
    probe = browser.new_page()
    try:
        probe.goto(html.as_uri())
        probe.wait_for_selector("html[data-ready]", timeout=10_000)
        stored = f"Object.keys(JSON.parse(localStorage.getItem('{key}') || '{{}}')).length"
        _wait_until(probe, f"{stored} >= {count}")
    finally:
        probe.close()


def _tile(page, finding: str, n: int = 0):
    return page.locator(f'article[data-finding="{finding}"] .gallery').first.locator(".tile").nth(n)


def test_decisions_survive_a_reload_and_keyboard_works(browser, hostile) -> None:
    report, _, html = hostile
    page, watch = open_report(browser, html)
    try:
        page.evaluate("localStorage.clear()")
        page.reload()
        page.wait_for_selector("html[data-ready]")
        tile = _tile(page, "labels/0")
        tile.locator("button[data-action=remove]").click()
        assert "d-remove" in tile.get_attribute("class")

        dup = _tile(page, "duplicates/0", 0)
        dup.focus()
        page.keyboard.press("k")  # keep, and focus moves on
        second = _tile(page, "duplicates/0", 1)
        assert second.evaluate("node => node === document.activeElement")
        page.keyboard.press("ArrowLeft")
        assert dup.evaluate("node => node === document.activeElement")
        page.keyboard.press("ArrowDown")  # next finding's first image
        assert _tile(page, "leakage/0", 0).evaluate("node => node === document.activeElement")

        _until_committed(browser, html, f"datacheck-decisions:{report.report_id}", 2)
        page.reload()
        page.wait_for_selector("html[data-ready]")
        assert "d-remove" in _tile(page, "labels/0").get_attribute("class")
        assert "d-keep" in _tile(page, "duplicates/0", 0).get_attribute("class")
        assert page.locator("#decided-count").inner_text().startswith("2 decisions")
        stored = page.evaluate(f"localStorage.getItem('datacheck-decisions:{report.report_id}')")
        assert set(json.loads(stored)) == {
            report.check("labels").findings[0].files[0],
            report.check("duplicates").findings[0].files[0],
        }
        watch.assert_clean()
    finally:
        page.evaluate("localStorage.clear()")
        page.close()


def test_export_round_trips_through_apply_and_undo(browser, hostile, tmp_path: Path) -> None:
    report, root, html = hostile
    page, watch = open_report(browser, html)
    before = {p: actions.file_sha256(p) for p in root.rglob("*") if p.is_file()}
    try:
        page.evaluate("localStorage.clear()")
        page.reload()
        page.wait_for_selector("html[data-ready]")
        relabel = _tile(page, "labels/0").locator("select")
        relabel.focus()  # the class list is filled on first use
        relabel.select_option("dog")
        _tile(page, "leakage/0", 0).locator("button[data-action=remove]").click()
        outlier = _tile(page, "outliers/0")
        outlier.locator("button[data-action=ignore]").click()
        outlier.locator("button", has_text="Note").click()
        outlier.locator("input.note").fill('looks odd but fine "<b>"')
        outlier.locator("input.note").press("Enter")
        with page.expect_download() as info:
            page.locator("#export").click()
        path = tmp_path / "decisions.json"
        info.value.save_as(path)
        watch.assert_clean()
    finally:
        page.evaluate("localStorage.clear()")
        page.close()

    doc = json.loads(path.read_text())
    assert doc["schema"] == "datacheck-decisions" and doc["version"] == 1
    assert doc["report_id"] == report.report_id and doc["dataset_root"] == str(root)
    by_file = {d["file"]: d for d in doc["decisions"]}
    label_file = report.check("labels").findings[0].files[0]
    leak_file = report.check("leakage").findings[0].files[0]
    outlier_file = report.check("outliers").findings[0].files[0]
    assert by_file[label_file] | {"sha256": None} == {
        "file": label_file,
        "action": "relabel",
        "target": "dog",
        "finding": "labels/0",
        "note": "",
        "sha256": None,
    }
    assert by_file[leak_file]["action"] == "remove" and by_file[leak_file]["finding"] == "leakage/0"
    assert by_file[outlier_file]["note"] == 'looks odd but fine "<b>"'
    sha = dict(zip(report.map["path"], report.map["sha256"], strict=True))
    assert all(d["sha256"] == sha[d["file"]] for d in doc["decisions"])

    plan = actions.plan(actions.load_decisions(path), report.to_dict())
    assert (plan.count("relabel"), plan.count("remove"), len(plan.unchanged)) == (1, 1, 1)
    outcome = actions.execute(plan, journal=tmp_path / "journal.jsonl")
    assert outcome.complete and not (root / label_file).exists()
    assert (root / label_file.replace("/cat/", "/dog/")).exists()
    assert actions.undo(outcome.journal).complete
    assert {p: actions.file_sha256(p) for p in root.rglob("*") if p.is_file()} == before
    assert not actions.default_quarantine(root).exists()  # undo removed the folders the apply made


def test_html_in_file_and_class_names_never_runs(browser, hostile, tmp_path: Path) -> None:
    _, _, html = hostile
    page, watch = open_report(browser, html)
    try:
        # the hostile names are on the page as text, in galleries, filters, the chart and the overview
        assert page.get_by_text(XSS, exact=False).count() >= 3
        assert page.locator("#filter-class option", has_text=XSS).count() == 1
        page.locator("#filter-class").select_option(XSS)
        assert page.locator("#check-labels article.finding").count() == 1
        page.locator("#check-labels").scroll_into_view_if_needed()
        hostile_tile = page.locator(".tile", has_text=XSS).first
        hostile_tile.scroll_into_view_if_needed()
        hostile_tile.hover()
        page.wait_for_timeout(300)
        injected = page.evaluate(
            """() => ({
                 imgX: document.querySelectorAll('img[src="x"]').length,
                 handlers: document.querySelectorAll('[onerror], [onload], [onclick], [onmouseover]').length,
                 scripts: document.scripts.length })"""
        )
        assert injected == {"imgX": 0, "handlers": 0, "scripts": 2}
        page.screenshot(path=str(tmp_path / "xss.png"))
        watch.assert_clean()  # in particular: no alert() dialog
    finally:
        page.close()


def test_screenshot(browser, hostile, tmp_path: Path) -> None:
    """A screenshot of the overview and the map; kept under $DATACHECK_SCREENSHOTS when set."""
    _, _, html = hostile
    page, watch = open_report(browser, html)
    try:
        page.wait_for_timeout(300)
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=False)
        assert shot.stat().st_size > 20_000
        keep = os.environ.get("DATACHECK_SCREENSHOTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(keep) / "report.png")
        watch.assert_clean()
    finally:
        page.close()


@pytest.mark.slow
def test_audit_end_to_end_with_hostile_names(browser, tmp_path: Path) -> None:
    """The real pipeline (model, checks, UMAP, thumbnails) on a dataset with HTML in its names."""
    from datacheck import api

    root = tmp_path / "images"
    write_dataset(root, 12, ("cat", "dog", XSS))
    for i in range(2):
        picture("cat", 50 + i).save(root / f"train/cat/{XSS}{i}.png")
    report = api.audit(root, cache_dir=tmp_path / "cache", image_size=96)
    written = report.write(tmp_path / "report")
    assert report.map["method"] == "umap" and len(report.map["path"]) == 38
    assert {"json", "csv", "html", "thumbs"} <= set(written)
    assert len(list(written["thumbs"].iterdir())) == 38
    page, watch = open_report(browser, written["html"])
    try:
        assert int(page.locator("#map-canvas").get_attribute("data-points")) == 38
        for check in report.checks:
            assert page.locator(f"section#check-{check.id}").count() == 1
        page.locator("#filter-class").select_option(XSS)
        assert int(page.locator("#map-canvas").get_attribute("data-lit")) == 12
        assert page.get_by_text(XSS, exact=False).count() >= 1
        injected = page.evaluate(
            "() => document.querySelectorAll('img[src=\"x\"], [onerror], [onload], [onmouseover]').length"
        )
        assert injected == 0
        watch.assert_clean()
    finally:
        page.close()


@pytest.mark.slow
def test_ten_thousand_images_stay_small_and_paint_fast(browser, tmp_path: Path) -> None:
    """10,000 images on the map, every one with a thumbnail: size and first paint of the page."""
    report, _ = build_demo_report(tmp_path, per_class=3333, method="pca", image_size=32)
    out = tmp_path / "report"
    report.write(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.name != "findings.csv")
    assert len(report.map["path"]) >= 10_000
    assert size < 30e6, f"report is {size / 1e6:.1f} MB"
    page = browser.new_page()
    watch = Watch()
    watch.attach(page)
    start = time.perf_counter()
    page.goto((out / "report.html").as_uri())
    page.wait_for_selector("html[data-ready]")
    ready = time.perf_counter() - start
    _wait_until(page, "performance.getEntriesByName('first-contentful-paint').length > 0")
    paint = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime")
    page.close()
    print(f"10k report: {size / 1e6:.1f} MB, first contentful paint {paint:.0f} ms, ready {ready:.2f} s")
    assert paint <= 2000
    watch.assert_clean()
