"""docs/adding-a-check.md works as written: its module, registry line, test and docs page, run for real.

The code blocks are taken from the page verbatim. The example check is installed for the duration of the
test only (its module registered under ``datacheck.checks.aspect``, its id added to ``CHECK_MODULES``) and
then the consumers are exercised without any change to them: the runner, report.json, the HTML page data,
the config file, the starter config and the gate.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import datacheck.checks as checks_pkg
from datacheck.checks import all_checks
from datacheck.checks.base import _REGISTRY
from datacheck.config import load_config, starter_config
from datacheck.gate import GatePolicy, evaluate
from datacheck.runner import build_params, run_checks, select_checks
from tests.factories import make_context

PAGE = Path(__file__).resolve().parents[1] / "docs" / "adding-a-check.md"


def _block(name: str) -> str:
    """The fenced code block that follows ``<!-- walkthrough: name -->`` on the page."""
    match = re.search(rf"<!-- walkthrough: {re.escape(name)} -->\n```\w*\n(.*?)```", PAGE.read_text(), re.S)
    assert match, f"docs/adding-a-check.md has no walkthrough block '{name}'"
    return match.group(1)


@pytest.fixture
def aspect_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """The page's module as ``datacheck.checks.aspect`` and the page's registry line in ``CHECK_MODULES``."""
    source = tmp_path / "aspect.py"
    source.write_text(_block("datacheck/checks/aspect.py"))
    spec = importlib.util.spec_from_file_location("datacheck.checks.aspect", source)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "datacheck.checks.aspect", module)
    spec.loader.exec_module(module)
    line = _block("CHECK_MODULES").strip().rstrip(",")
    monkeypatch.setattr(checks_pkg, "CHECK_MODULES", (*checks_pkg.CHECK_MODULES, json.loads(line)))
    try:
        yield module
    finally:
        _REGISTRY.pop("aspect", None)


def _context() -> object:
    labels = np.array([0] * 12 + [1] * 12)
    widths, heights = np.full(24, 300), np.full(24, 200)
    widths[5], heights[20] = 1200, 900  # a panorama cat, a tall dog
    stats = pd.DataFrame({"width": widths, "height": heights})
    vectors = np.random.default_rng(0).standard_normal((24, 16)).astype(np.float32)
    return make_context(vectors, labels, class_names=["cat", "dog"], stats=stats)


def test_the_pages_test_file_passes(aspect_installed: object) -> None:
    namespace: dict[str, object] = {}
    exec(compile(_block("tests/test_check_aspect.py"), "test_check_aspect.py", "exec"), namespace)
    tests = [fn for name, fn in namespace.items() if name.startswith("test_") and callable(fn)]
    assert len(tests) == 2
    for test in tests:
        test()


def test_the_runner_report_and_page_data_pick_the_check_up(aspect_installed: object) -> None:
    assert "aspect" in all_checks()
    ctx = _context()
    specs = select_checks(["aspect"], ())
    (res,) = run_checks(ctx, specs, build_params(specs, {}))
    assert sorted(f.files[0] for f in res.findings) == sorted([ctx.paths[5], ctx.paths[20]])
    doc = res.to_dict()
    assert doc["view"]["card"] == "generic" and doc["metrics"]["odd_aspect"] == 2


def test_config_starter_config_and_gate_pick_its_params_and_limit_up(
    aspect_installed: object, tmp_path: Path
) -> None:
    config = tmp_path / "datacheck.toml"
    config.write_text("[checks.aspect]\nmax_ratio = 3.0\n[gate]\nmax_odd_aspect_fraction = 0.05\n")
    loaded = load_config(config)
    assert loaded.check_params["aspect"] == {"max_ratio": 3.0}
    starter = starter_config()
    assert "[checks.aspect]" in starter and "# max_odd_aspect_fraction = (unset)" in starter
    ctx = _context()
    specs = select_checks(["aspect"], ())
    results = run_checks(ctx, specs, build_params(specs, {}))
    assert evaluate(results).passed  # warnings only, and no limit set: the gate passes at fail_on=fail
    verdict = evaluate(results, policy=loaded.gate)
    assert not verdict.passed and verdict.violations[0]["rule"] == "max_odd_aspect_fraction"
    assert evaluate(results, policy=GatePolicy(max_odd_aspect_fraction=0.2)).passed
    config.write_text("[checks.aspect]\nmax_ratio = 0.5\n")
    with pytest.raises(Exception, match="max_ratio"):
        build_params(specs, load_config(config).check_params)


def test_the_pages_docs_table_matches_the_params(aspect_installed: object) -> None:
    from tests.test_docs_checks import documented_parameters

    documented = documented_parameters(_block("docs/checks/aspect.md"))
    defaults = all_checks()["aspect"].default_params()
    assert documented == {"max_ratio": 2.0, "min_class_size": 5}
    assert documented == {"max_ratio": defaults.max_ratio, "min_class_size": defaults.min_class_size}
