"""Transfer learning on the cached bottlenecks: ``retrain``, ``predict`` and ``compare``.

Importing this package is cheap; the names below load their modules (and Keras) on first access.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CompareParams",
    "HeadParams",
    "RetrainParams",
    "SplitParams",
    "compare",
    "load_model",
    "predict",
    "retrain",
]

_HOMES = {
    "HeadParams": "datacheck.train.params",
    "RetrainParams": "datacheck.train.params",
    "load_model": "datacheck.train.export",
    "predict": "datacheck.train.export",
    "retrain": "datacheck.train.retrain",
    "CompareParams": "datacheck.train.compare",
    "compare": "datacheck.train.compare",
    "SplitParams": "datacheck.train.splits",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'datacheck.train' has no attribute {name!r}")
