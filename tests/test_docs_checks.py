"""Every check's doc page lists every parameter with its real default (one test per registered check)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from datacheck.checks import all_checks

DOCS = Path(__file__).resolve().parents[1] / "docs" / "checks"


@pytest.mark.parametrize("check_id", list(all_checks()))
def test_docs_page_lists_every_parameter_with_its_default(check_id: str) -> None:
    spec = all_checks()[check_id]
    page = DOCS / f"{check_id}.md"
    assert page.is_file(), f"docs/checks/{check_id}.md is missing"
    section = re.search(r"^## Parameters\n(.*?)(?=^## |\Z)", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    assert section, f"docs/checks/{check_id}.md has no '## Parameters' section"
    documented = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", section.group(1), flags=re.MULTILINE))
    defaults = spec.default_params()
    for field in dataclasses.fields(defaults):
        assert field.name in documented, f"{check_id}: parameter {field.name} is not in the table"
        value = getattr(defaults, field.name)
        expected = list(value) if isinstance(value, tuple) else value
        assert json.loads(documented[field.name]) == expected, f"{check_id}.{field.name}"
    unknown = set(documented) - {f.name for f in dataclasses.fields(defaults)}
    assert not unknown, f"{check_id}: documented but not a parameter: {sorted(unknown)}"
