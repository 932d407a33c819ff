"""The checks. Adding one = a module here + its name in ``CHECK_MODULES`` + a test file + a docs page."""

from __future__ import annotations

import importlib

from datacheck.checks.base import CheckSpec, registered

#: Check modules in report order. Importing a module registers its check.
CHECK_MODULES: tuple[str, ...] = (
    "files",
    "balance",
    "quality",
    "duplicates",
    "leakage",
    "labels",
    "outliers",
    "shortcuts",
    "splits",
    "diversity",
    "representativeness",
)


def all_checks() -> dict[str, CheckSpec]:
    """Every check, in report order (imports the check modules on first call, never at package import)."""
    for name in CHECK_MODULES:
        importlib.import_module(f"datacheck.checks.{name}")
    specs = registered()
    return {name: specs[name] for name in CHECK_MODULES if name in specs}
