"""HalfUnitRows: float16 rows and their norms read back as exactly the float32 unit rows."""

from __future__ import annotations

import numpy as np
import pytest

from datacheck import derived, halfrows
from datacheck.halfrows import HalfUnitRows, as_rows, row_blocks
from datacheck.index import KnnParams, StoredGraph, build_knn, l2_normalise, row_ids, unit_rows, update_knn
from datacheck.reduce import SharedBasis


def _raw(n: int = 300, d: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = (rng.normal(size=(n, d)) * rng.uniform(0.1, 30, (n, 1))).astype(np.float16)
    raw[7] = 0  # a zero row stays zero
    return raw


@pytest.fixture(autouse=True)
def small_reads(monkeypatch):
    """Steps of 64 rows, so that every multi-row read below crosses steps."""
    monkeypatch.setattr(halfrows, "READ_ROWS", 64)


@pytest.mark.parametrize(
    "index",
    [
        5,
        -1,
        np.int64(299),
        slice(None),
        slice(10, 200),
        slice(250, 400),
        slice(5, 5),
        slice(None, None, 3),
        slice(None, None, -1),
        np.array([3, 3, 299, 0]),
        np.arange(300)[::-1].reshape(30, 10),  # a [rows, candidates] gather, as the kNN re-scoring's
        np.arange(300) % 7 == 0,
        [1, 2, 4],
        (slice(None), slice(None, 8)),  # content_sample's leading columns
        (np.array([4, 1]), 3),
        (slice(0, 100), np.array([0, 23])),
    ],
)
def test_every_read_equals_the_normalised_float32_rows(index):
    raw = _raw()
    expected = l2_normalise(raw.astype(np.float32))
    got = HalfUnitRows.of(raw)[index]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected[index])  # bit for bit: the same division by the same norms


def test_shape_dtype_memory_and_whole_reads():
    raw = _raw()
    rows = HalfUnitRows.of(raw)
    assert rows.shape == (300, 24) and len(rows) == 300 and rows.ndim == 2 and rows.dtype == np.float32
    assert rows.nbytes == raw.nbytes + 300 * 4  # half a float32 copy, plus the norms
    np.testing.assert_array_equal(np.asarray(rows), l2_normalise(raw.astype(np.float32)))
    assert not np.asarray(rows)[7].any()
    blocks = list(row_blocks(rows, rows=100))
    assert [start for start, _ in blocks] == [0, 100, 200]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), np.asarray(rows))
    assert as_rows(rows) is rows and unit_rows(rows) is rows


def test_bad_indices_raise_as_numpy_does():
    rows = HalfUnitRows.of(_raw())
    with pytest.raises(IndexError):
        rows[np.ones(299, bool)]
    with pytest.raises(IndexError):
        rows[np.array([0, 300])]
    with pytest.raises(IndexError):
        rows[300]


def test_only_float16_rows_with_their_norms_are_accepted():
    with pytest.raises(ValueError, match="float16"):
        HalfUnitRows(np.zeros((3, 4), np.float32), np.ones(3, np.float32))
    with pytest.raises(ValueError):
        HalfUnitRows(np.zeros((3, 4), np.float16), np.ones(2, np.float32))


def test_keys_ids_basis_and_graph_equal_the_float32_arrays():
    """What the context derives from its vectors is the same whichever form they are held in."""
    raw = _raw(n=400, d=48, seed=1)
    unit = l2_normalise(raw.astype(np.float32))
    half = HalfUnitRows.of(raw)
    assert derived.content_key("x", half) == derived.content_key("x", unit)
    np.testing.assert_array_equal(row_ids(half), row_ids(unit))
    np.testing.assert_array_equal(SharedBasis(half).reduced(16), SharedBasis(unit).reduced(16))
    params = KnnParams(k=5, search_dim=16, candidates=12)
    a, b = build_knn(half, params), build_knn(unit, params)
    np.testing.assert_array_equal(a.indices, b.indices)
    # the same rows, but the re-scoring's queries are a copy here and a view there: numpy's summation may
    # take another path, so a cosine of 48 unit-length terms can differ by rounding (48 ulps of 1 at most)
    np.testing.assert_allclose(a.similarities, b.similarities, rtol=0, atol=48 * np.finfo(np.float32).eps)


def test_updated_graph_agrees_with_the_float32_update():
    """The update's exact searches read the rows block by block: the same neighbours, cosines to rounding."""
    raw = _raw(n=400, d=48, seed=2)
    params = KnnParams(k=5, search_dim=0, candidates=12)
    old = build_knn(raw[:380].astype(np.float32), params)
    base = StoredGraph(old, row_ids(l2_normalise(raw[:380].astype(np.float32))))
    unit = l2_normalise(raw.astype(np.float32))
    half = HalfUnitRows.of(raw)
    a = update_knn(half, row_ids(half), base, params)
    b = update_knn(unit, row_ids(unit), base, params)
    np.testing.assert_array_equal(a.indices, b.indices)
    # a dot product of 48 unit-length float32 terms, summed in another order: within 48 roundings of 1
    np.testing.assert_allclose(a.similarities, b.similarities, rtol=0, atol=48 * np.finfo(np.float32).eps)
