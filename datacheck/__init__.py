"""datacheck: audit image-classification datasets before you train on them.

Importing this package is cheap: the library API is loaded on first attribute access, and TensorFlow and
the model only when embedding actually has to run.
"""

from __future__ import annotations

from typing import Any

from datacheck._version import __version__

__all__ = ["Report", "__version__", "audit", "compare", "embed", "predict", "retrain"]


def __getattr__(name: str) -> Any:
    if name in ("audit", "embed"):
        from datacheck import api

        return getattr(api, name)
    if name == "Report":
        from datacheck.report import Report

        return Report
    if name in ("retrain", "predict", "compare"):
        from datacheck import train

        return getattr(train, name)
    raise AttributeError(f"module 'datacheck' has no attribute {name!r}")
