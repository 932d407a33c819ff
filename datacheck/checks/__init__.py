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
    """Every check, in report order (imports the check modules on first call, never at package import).

    Raises:
        RuntimeError: A module listed here registered no check under its own name, or a check was
            registered that no module here lists (its id would silently be left out of every audit).
    """
    for name in CHECK_MODULES:
        importlib.import_module(f"datacheck.checks.{name}")
    specs = registered()
    missing = [name for name in CHECK_MODULES if name not in specs]
    unlisted = sorted(set(specs) - set(CHECK_MODULES))
    if missing or unlisted:
        raise RuntimeError(
            "every check module must register the check named after it: "
            f"modules without their check: {missing or 'none'}; checks no module lists: {unlisted or 'none'}"
        )
    return {name: specs[name] for name in CHECK_MODULES}
