"""umap-learn's numba functions keep their compiled code on disk, so only the first audit compiles them."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np

from datacheck.embedding_map import _import_umap, _keep_compiled_code

_MODULE = """
import numba

@numba.njit
def triple(x):
    return 3 * x
"""


def test_uncached_numba_functions_get_an_on_disk_cache(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "dc_fake_numba_mod.py").write_text(_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("dc_fake_numba_mod")
    try:
        assert _keep_compiled_code(("dc_fake_numba_mod",)) == 1
        assert _keep_compiled_code(("dc_fake_numba_mod",)) == 0  # already cached: left alone
        assert module.triple(np.int64(5)) == 15
        stored = list((tmp_path / "__pycache__").glob("dc_fake_numba_mod.triple-*.nbi"))
        assert stored, "numba kept no compiled code for the function"
    finally:
        del sys.modules["dc_fake_numba_mod"]


def test_umap_functions_are_cached_once_imported() -> None:
    from numba.core.registry import CPUDispatcher

    _import_umap()
    layouts = sys.modules["umap.layouts"]
    functions = [v for v in vars(layouts).values() if isinstance(v, CPUDispatcher)]
    assert functions and all(type(f._cache).__name__ != "NullCache" for f in functions)
