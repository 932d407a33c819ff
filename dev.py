#!/usr/bin/env python3
"""Set-up and run in one command: ``python3 dev.py demo`` or ``python3 dev.py test``.

Needs only Python >= 3.11: creates ``.venv`` beside this file, installs datacheck with its dev extras
(again only when pyproject.toml changed), then runs the demo audit on the bundled sample dataset or the
whole test suite. Extra arguments after ``test`` go to pytest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".datacheck-installed"
SAMPLE = ROOT / "sample_datasets" / "shapes"
#: Test processes at most: each holds its own TensorFlow (~1-2 GB); two halve the suite on a 2-core laptop.
TEST_WORKERS = 4


def _run(*cmd: str | Path) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT)


def ensure_venv() -> None:
    """Create the virtualenv and install the package when pyproject.toml changed since the last install."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this script must explain itself on old Pythons
        sys.exit(f"datacheck needs Python >= 3.11; this is {sys.version.split()[0]}")
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == want:
        return
    if not BIN.exists():
        venv.create(VENV, with_pip=True)
    pip = [BIN / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if _run(*pip, "--upgrade", "pip") or _run(*pip, "-e", ".[dev]"):
        sys.exit("installing datacheck failed; see the pip output above")
    STAMP.write_text(want)


def demo() -> int:
    """Audit the bundled sample dataset and write report/."""
    return _run(BIN / "datacheck", "audit", SAMPLE, "--out", ROOT / "report")


def test(args: list[str]) -> int:
    """Run the whole test suite; pytest's "no tests collected" (5) counts as a failure.

    The tests run on up to :data:`TEST_WORKERS` processes (pytest-xdist), one test file per process at a time
    so a file's module fixtures (a Ray cluster, a CIFAR-10 extract) are built once; ``-n`` or
    ``-p no:xdist`` in ``args`` take over.
    """
    code = _run(BIN / "python", "-m", "pytest", *_worker_args(args), *(args or ["-q"]))
    return 1 if code == 5 else code


def _worker_args(args: list[str]) -> list[str]:
    """``-n N --dist loadfile`` for N = min(CPUs, TEST_WORKERS), or nothing on one CPU or when args choose."""
    chosen = any(a == "no:xdist" or a.startswith(("-n", "--numprocesses")) for a in args)
    workers = min(os.cpu_count() or 1, TEST_WORKERS)
    return [] if chosen or workers < 2 else ["-n", str(workers), "--dist", "loadfile"]


def main() -> None:
    """Dispatch ``demo`` or ``test``."""
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test"):
        sys.exit("usage: python3 dev.py demo | test [pytest args...]")
    ensure_venv()
    sys.exit(demo() if sys.argv[1] == "demo" else test(sys.argv[2:]))


if __name__ == "__main__":
    main()
