"""Every check's doc page lists every parameter with its real default (one test per registered check)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from datacheck.checks import all_checks

DOCS = Path(__file__).resolve().parents[1] / "docs" / "checks"


def documented_parameters(page: str) -> dict[str, object]:
    """Parameter → default from the ``## Parameters`` table of a check's docs page."""
    section = re.search(r"^## Parameters\n(.*?)(?=^## |\Z)", page, flags=re.MULTILINE | re.DOTALL)
    assert section, "the page has no '## Parameters' section"
    rows = re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", section.group(1), flags=re.MULTILINE)
    return {name: json.loads(value) for name, value in rows}


@pytest.mark.parametrize("check_id", list(all_checks()))
def test_docs_page_lists_every_parameter_with_its_default(check_id: str) -> None:
    spec = all_checks()[check_id]
    page = DOCS / f"{check_id}.md"
    assert page.is_file(), f"docs/checks/{check_id}.md is missing"
    documented = documented_parameters(page.read_text())
    defaults = spec.default_params()
    for field in dataclasses.fields(defaults):
        assert field.name in documented, f"{check_id}: parameter {field.name} is not in the table"
        value = getattr(defaults, field.name)
        expected = list(value) if isinstance(value, tuple) else value
        assert documented[field.name] == expected, f"{check_id}.{field.name}"
    unknown = set(documented) - {f.name for f in dataclasses.fields(defaults)}
    assert not unknown, f"{check_id}: documented but not a parameter: {sorted(unknown)}"


def test_configuration_docs_list_every_gate_limit_with_its_check_and_default() -> None:
    from datacheck.gate import declared_limits

    page = (DOCS.parent / "configuration.md").read_text()
    section = re.search(r"^## Gate limits\n(.*?)(?=^## |\Z)", page, flags=re.MULTILINE | re.DOTALL)
    assert section, "docs/configuration.md has no '## Gate limits' section"
    rows = re.findall(
        r"^\| `(\w+)` \| (\w+) \| `([^`]*)` \| [^|]+ \| ([^|]+) \|", section.group(1), re.MULTILINE
    )
    documented = {name: (check, metric, default.strip()) for name, check, metric, default in rows}
    declared = declared_limits()
    assert set(documented) == set(declared)
    for name, (check_id, limit) in declared.items():
        default = "unset" if limit.default is None else f"`{limit.default:g}`"
        assert documented[name] == (check_id, limit.metric, default), name
