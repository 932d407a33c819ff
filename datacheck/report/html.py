"""report.html: one self-contained page that renders report.json for annotators.

The page is a Jinja2 template (autoescaped) holding the overview, the report document itself as JSON in a
``<script type="application/json">`` block, and a small vanilla-JS viewer (``static/app.js``) inlined into
the page, which draws the map, the galleries and the decision controls from that JSON. It computes nothing
new: every number it shows is in report.json. Images come from the ``thumbs/`` folder beside the page.

Safety: the JSON block is escaped so that no string in it (a file called ``</script>…``) can end the block;
the viewer only ever creates DOM nodes and text (never ``innerHTML`` with data); and a Content-Security-Policy
forbids every remote load and every script except the viewer itself (by hash). See docs/html-report.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from pathlib import Path, PurePath
from typing import Any

import jinja2
from markupsafe import Markup

from datacheck.report.model import json_safe
from datacheck.report.thumbnails import THUMB_SIZE, THUMBS_DIR

logger = logging.getLogger(__name__)

TEMPLATE = "report.html.j2"
STATIC_FILES = ("app.js", "style.css")

#: What the page may load: its own thumbnails and inline styles, and only the viewer script (by hash).
CSP_TEMPLATE = (
    "default-src 'none'; img-src 'self' data: blob:; style-src 'unsafe-inline'; "
    "script-src '{script_hash}'; base-uri 'none'; form-action 'none'"
)

# Characters that must not appear literally inside an inline <script> block.
_SCRIPT_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def render_html(report: Mapping[str, Any], *, missing_thumbs: Iterable[str] = ()) -> str:
    """The report.html text for a report.json document.

    Args:
        report: ``Report.to_dict()``.
        missing_thumbs: Content hashes without a thumbnail (shown as placeholders, never requested).

    Returns:
        A complete HTML page; it expects the thumbnails in ``thumbs/`` beside it.
    """
    script = static_text("app.js")
    if "</script" in script.lower():  # the viewer is ours; keep it inlinable
        raise ValueError("static/app.js must not contain '</script'")
    payload = {
        "report": json_safe(report),
        "thumbs": {"dir": THUMBS_DIR, "size": THUMB_SIZE, "missing": sorted(missing_thumbs)},
    }
    root = str(report.get("dataset", {}).get("root", ""))
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            report=report,
            dataset_name=PurePath(root).name or root or "dataset",
            csp=Markup(content_security_policy(script)),  # our constant text and a base64 hash
            style=Markup(static_text("style.css")),
            script=Markup(script),
            data_json=Markup(script_json(payload)),
        )
    )


def write_html(report: Mapping[str, Any], out_dir: Path, *, missing_thumbs: Iterable[str] = ()) -> Path:
    """Write ``out_dir/report.html`` atomically; return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_html(report, missing_thumbs=missing_thumbs), encoding="utf-8")
    tmp.replace(path)
    logger.debug("wrote %s", path)
    return path


def script_json(data: Any) -> str:
    """JSON that is safe inside an HTML ``<script>`` element: no ``<``, ``>``, ``&`` or line separators.

    The escapes are JSON string escapes, so ``JSON.parse`` returns the original strings.
    """
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return "".join(_SCRIPT_ESCAPES.get(ch, ch) for ch in text)


def content_security_policy(script: str) -> str:
    """The page's CSP: nothing remote, and no script but ``script`` (allowed by its SHA-256)."""
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return CSP_TEMPLATE.format(script_hash=f"sha256-{digest}")


@cache
def static_text(name: str) -> str:
    """A file of ``datacheck/report/static`` (shipped as package data)."""
    if name not in STATIC_FILES:
        raise ValueError(f"unknown static file {name!r}")
    return resources.files("datacheck.report").joinpath("static", name).read_text(encoding="utf-8")


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("datacheck.report", "templates"),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["thousands"] = _thousands
    return env


def _thousands(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value or 0)
