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


def test_umap_layout_epochs_release_the_gil_and_lay_out_the_same(monkeypatch) -> None:
    import numba

    from datacheck.embedding_map import _NOGIL_EPOCH

    umap = _import_umap()
    layouts = sys.modules["umap.layouts"]
    epoch = getattr(layouts, _NOGIL_EPOCH)
    assert epoch.targetoptions["nogil"]  # the layout can run beside the checks' Python threads
    # its own name on disk: numba's cache does not key on nogil, so the GIL-holding build is never served
    assert epoch.py_func.__qualname__.endswith("_nogil")
    points = np.random.default_rng(0).normal(size=(120, 6)).astype(np.float32)

    def layout() -> np.ndarray:
        return umap.UMAP(n_neighbors=8, random_state=0, n_epochs=30, init="random").fit_transform(points)

    released = layout()
    monkeypatch.setattr(layouts, _NOGIL_EPOCH, numba.njit(epoch.py_func, fastmath=True, parallel=False))
    np.testing.assert_array_equal(released, layout())  # umap-learn's own build, holding the GIL
