import numpy as np
import pytest

from datacheck.index import KnnParams, build_knn, l2_normalise


def _brute_force(unit: np.ndarray, k: int) -> np.ndarray:
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1)[:, :k]


def _recall(graph, truth) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(graph.indices, truth, strict=True)]))


def test_full_dimensional_search_matches_brute_force():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((20, 256))
    x = (centres[rng.integers(0, 20, 3000)] + 0.5 * rng.standard_normal((3000, 256))).astype(np.float32)
    graph = build_knn(x, KnnParams(k=10, search_dim=0, candidates=10, block=700))
    assert _recall(graph, _brute_force(l2_normalise(x), 10)) > 0.999
    assert graph.method == "exact"


def test_reduced_search_always_retrieves_near_copies():
    rng = np.random.default_rng(3)
    basis = rng.standard_normal((48, 512))  # embeddings live near a low-dimensional subspace
    x = (rng.standard_normal((4000, 48)) @ basis + 0.3 * rng.standard_normal((4000, 512))).astype(np.float32)
    copies = x[:200] + 0.05 * rng.standard_normal((200, 512)).astype(np.float32)
    x = np.concatenate([x, copies])
    graph = build_knn(x, KnnParams(k=10, search_dim=64, candidates=40, block=1000))
    partners = np.arange(4000, 4200)
    assert all(partners[i] in graph.indices[i] for i in range(200))
    assert _recall(graph, _brute_force(l2_normalise(x), 10)) > 0.9


def test_similarities_are_full_dimensional_and_sorted():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((500, 200)).astype(np.float32)
    graph = build_knn(x, KnnParams(k=8, search_dim=32, candidates=20))
    unit = l2_normalise(x)
    expected = np.einsum("nd,nkd->nk", unit, unit[graph.indices])
    # a float32 dot product of d terms is within d·eps of the exact one (unit vectors), in any order
    np.testing.assert_allclose(graph.similarities, expected, atol=x.shape[1] * np.finfo(np.float32).eps)
    assert np.all(np.diff(graph.similarities, axis=1) <= 1e-6)


def test_never_lists_itself_even_with_exact_copies():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((100, 32)).astype(np.float32)
    x[1] = x[0]
    x[2] = x[0]
    graph = build_knn(x, KnnParams(k=5, search_dim=0, candidates=10))
    assert all(i not in row for i, row in enumerate(graph.indices))
    assert set(graph.indices[0][:2]) == {1, 2}
    assert graph.similarities[0][0] == pytest.approx(1.0, abs=1e-5)


def test_pairs_are_unique_and_ordered():
    x = np.array([[1, 0], [1, 0.01], [0, 1], [0.01, 1], [-1, 0]], dtype=np.float32)
    graph = build_knn(x, KnnParams(k=2, search_dim=0, candidates=3))
    pairs = graph.pairs(0.99)
    assert pairs.tolist() == [[0, 1], [2, 3]]


def test_tiny_inputs():
    assert build_knn(np.zeros((0, 8), np.float32)).indices.shape == (0, 0)
    assert build_knn(np.ones((1, 8), np.float32)).indices.shape == (1, 0)
    two = build_knn(np.eye(2, dtype=np.float32))
    assert two.indices.tolist() == [[1], [0]]


def test_invalid_params_are_rejected():
    with pytest.raises(ValueError, match="candidates must be at least k"):
        KnnParams(k=10, candidates=5)
    with pytest.raises(ValueError, match="k must be at least 1"):
        KnnParams(k=0)
    with pytest.raises(ValueError, match="search_dim must be at least 0"):
        KnnParams(search_dim=-1)
    with pytest.raises(ValueError, match="block must be at least 1"):
        KnnParams(block=0)


def test_approximate_path_finds_most_neighbours():
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((30, 64))
    x = (centres[rng.integers(0, 30, 6000)] + 0.3 * rng.standard_normal((6000, 64))).astype(np.float32)
    graph = build_knn(x, KnnParams(k=5, search_dim=0, candidates=10, exact_max=1000))
    assert graph.method == "approximate"
    assert graph.indices.shape == (6000, 5)
    assert all(i not in row for i, row in enumerate(graph.indices[:500]))
    assert _recall(graph, _brute_force(l2_normalise(x), 5)) > 0.8


def test_cached_graph_is_reused_only_for_the_same_vectors(tmp_path, monkeypatch):
    import datacheck.index as index

    vectors = l2_normalise(np.random.default_rng(3).normal(size=(300, 64)).astype(np.float32))
    params = KnnParams(k=5, candidates=10, search_dim=0)
    first = index.build_knn_cached(vectors, params, tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1

    def no_build(*args, **kwargs):
        raise AssertionError("the graph should have come from the store")

    with monkeypatch.context() as patched:
        patched.setattr(index, "build_knn", no_build)
        again = index.build_knn_cached(vectors, params, tmp_path)
    np.testing.assert_array_equal(again.indices, first.indices)
    np.testing.assert_array_equal(again.similarities, first.similarities)
    assert again.method == first.method

    changed = vectors.copy()
    changed[0] = changed[1]  # one image changed: a new key, a new build
    rebuilt = index.build_knn_cached(changed, params, tmp_path)
    assert rebuilt.indices[0, 0] == 1 and len(list(tmp_path.glob("*.npz"))) == 2
    other = index.build_knn_cached(vectors, KnnParams(k=3, candidates=10, search_dim=0), tmp_path)
    assert other.k == 3  # parameters are part of the key


def test_damaged_stored_graph_is_rebuilt(tmp_path):
    from datacheck.index import build_knn_cached

    vectors = l2_normalise(np.random.default_rng(4).normal(size=(50, 16)).astype(np.float32))
    params = KnnParams(k=4, candidates=8, search_dim=0)
    first = build_knn_cached(vectors, params, tmp_path)
    (stored,) = tmp_path.glob("*.npz")
    stored.write_bytes(b"not a graph")
    again = build_knn_cached(vectors, params, tmp_path)
    np.testing.assert_array_equal(again.indices, first.indices)
    assert np.load(stored)["indices"].shape == (
        50,
        8,
    )  # written again (k = 4 and the spare, within 8 candidates)


def _clustered(n: int, dim: int, clusters: int, spread: float, seed: int) -> np.ndarray:
    """``n`` unit rows around ``clusters`` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    rows = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim))
    return l2_normalise(rows.astype(np.float32))


def test_a_stored_graph_is_updated_for_a_few_added_and_removed_rows(tmp_path, monkeypatch):
    import datacheck.index as index

    x = _clustered(430, 48, clusters=12, spread=0.6, seed=7)
    params = KnnParams(k=8, candidates=8, search_dim=0)  # exact in the full space: a rebuild is the truth
    index.build_knn_cached(x[:400], params, tmp_path)
    final = np.concatenate([x[7:400], x[400:], x[:2]])  # 7 removed, 30 added, 2 moved to the end (kept)

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt although a stored graph covers all but 9 % of the rows")

    monkeypatch.setattr(index, "MAX_UPDATE_SHARE", 0.1)
    with monkeypatch.context() as patched:
        patched.setattr(index, "build_knn", no_build)
        updated = index.build_knn_cached(final, params, tmp_path)
    truth = build_knn(final, params)
    assert _recall(updated, truth.indices) == 1.0
    # similarities: both are dot products of the same unit vectors, d * eps apart at most
    np.testing.assert_allclose(
        np.sort(updated.similarities, axis=1),
        np.sort(truth.similarities, axis=1),
        rtol=0,
        atol=48 * np.finfo(np.float32).eps,
    )

    monkeypatch.setattr(index, "MAX_UPDATE_SHARE", 0.01)  # 10 of 414 rows (2.4 %) is now too large a change
    built: list[int] = []
    real = index.build_knn
    monkeypatch.setattr(
        index, "build_knn", lambda v, p=None, s=None, **kw: built.append(len(v)) or real(v, p, s, **kw)
    )
    index.build_knn_cached(final[:-10], params, tmp_path)
    assert built == [len(final) - 10]


def test_the_stored_graph_nearest_to_the_data_is_updated_not_the_latest(tmp_path):
    import datacheck.index as index

    rng = np.random.default_rng(8)
    x = l2_normalise(rng.standard_normal((1020, 64)).astype(np.float32))
    params = KnnParams(k=6, candidates=6, search_dim=4, exact_max=0)  # approximate: an update differs
    first = index.build_knn_cached(x[:1000], params, tmp_path)
    index.build_knn_cached(x, params, tmp_path)  # 20 added: an update, the latest stored graph
    # the same 1,000 images as at first, in another order (files renamed or relabelled): the first graph,
    # permuted, is found again, not the 1,020-row one with 20 rows taken out again
    order = rng.permutation(1000)
    again = index.build_knn_cached(x[:1000][order], params, tmp_path)
    position = np.argsort(order)  # old row -> new row
    expected = np.where(first.indices >= 0, position[np.maximum(first.indices, 0)], -1)
    np.testing.assert_array_equal(again.indices, expected[order])
    np.testing.assert_array_equal(again.similarities, first.similarities[order])


def test_closest_stored_entry_by_row_ids(tmp_path):
    from datacheck import derived

    derived.store(
        tmp_path, "a", {"ids": np.arange(10, dtype=np.uint64), "label": np.array("x"), "v": np.zeros(1)}
    )
    derived.store(
        tmp_path, "b", {"ids": np.arange(20, dtype=np.uint64), "label": np.array("x"), "v": np.ones(1)}
    )
    derived.store(
        tmp_path, "c", {"ids": np.arange(10, dtype=np.uint64), "label": np.array("y"), "v": np.ones(1)}
    )
    assert derived.closest(tmp_path, "x", np.arange(11, dtype=np.uint64))["v"][0] == 0.0  # 1 vs 9 changed
    assert derived.closest(tmp_path, "x", np.arange(19, dtype=np.uint64))["v"][0] == 1.0
    assert derived.closest(tmp_path, "z", np.arange(10, dtype=np.uint64)) is None


def test_removed_neighbours_are_replaced_by_the_spare_ones_without_a_search(tmp_path, monkeypatch):
    import datacheck.index as index

    x = _clustered(400, 32, clusters=8, spread=0.5, seed=11)
    params = KnnParams(k=6, candidates=20, search_dim=0)  # exact in the full space: a rebuild is the truth
    index.build_knn_cached(x, params, tmp_path)
    final = np.delete(x, [3, 50, 120], axis=0)  # no row loses more than 3 of its 6 + 5 stored neighbours

    searched: list[int] = []
    search = index._exact_neighbours

    def counting(unit, rows, k):
        searched.append(len(rows))
        return search(unit, rows, k)

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt although a stored graph covers all but 3 rows")

    monkeypatch.setattr(index, "_exact_neighbours", counting)
    monkeypatch.setattr(index, "build_knn", no_build)
    updated = index.build_knn_cached(final, params, tmp_path)
    assert searched == []  # the spare neighbours stood in for the removed ones
    monkeypatch.undo()
    truth = build_knn(final, params)
    np.testing.assert_array_equal(updated.indices, truth.indices)
    np.testing.assert_allclose(
        updated.similarities, truth.similarities, rtol=0, atol=32 * np.finfo(np.float32).eps
    )


def test_approximate_search_searches_more_lists_until_the_sample_reaches_min_recall():
    # isotropic rows have no clusters for the inverted file to follow: 16 lists find few true neighbours
    x = l2_normalise(np.random.default_rng(7).standard_normal((6000, 24)).astype(np.float32))
    truth = _brute_force(x, 10)
    fixed = build_knn(x, KnnParams(k=10, candidates=10, search_dim=0, exact_max=0, min_recall=0.0))
    calibrated = build_knn(x, KnnParams(k=10, candidates=10, search_dim=0, exact_max=0, min_recall=0.9))
    assert fixed.method == calibrated.method == "approximate"
    assert fixed.search_recall < 0.9 <= calibrated.search_recall
    # the sample's estimate agrees with every row's recall (search space = full space, no ties); its
    # standard error is at most 0.5 / sqrt(1,000) rows: 4 of them
    tolerance = 4 * 0.5 / np.sqrt(1000)
    for graph in (fixed, calibrated):
        assert abs(_recall(graph, truth) - graph.search_recall) <= tolerance


def test_exact_search_reports_full_recall_and_the_store_keeps_the_measured_one(tmp_path):
    from datacheck.index import build_knn_cached

    x = l2_normalise(np.random.default_rng(8).standard_normal((3000, 16)).astype(np.float32))
    assert build_knn(x, KnnParams(k=5, candidates=5, search_dim=0)).search_recall == 1.0
    params = KnnParams(k=5, candidates=5, search_dim=0, exact_max=0, min_recall=0.0)
    built = build_knn_cached(x, params, tmp_path)
    served = build_knn_cached(x, params, tmp_path)
    assert built.search_recall < 1.0
    assert served.search_recall == built.search_recall


def test_compiled_rescoring_scores_what_the_gathered_product_scores():
    from datacheck.halfrows import HalfUnitRows
    from datacheck.index import _rescore, _rescore_blocked

    rng = np.random.default_rng(7)
    n, dim, m, k = 5000, 96, 12, 5
    raw = rng.normal(size=(n, dim)).astype(np.float16)
    half = HalfUnitRows.of(raw)  # the large-set path: rows gathered as float32 blocks
    unit = np.asarray(half)  # the same unit rows as one float32 array: the compiled kernel
    candidates = rng.integers(0, n, size=(n, m)).astype(np.int32)
    ids, sims = _rescore_blocked(unit, candidates, k)
    ids_half, sims_half = _rescore_blocked(half, candidates, k)
    ids_ref, sims_ref = _rescore(unit, unit, candidates, k)
    # two float32 dot products of unit rows, summed in different orders, differ by at most 2·d·2⁻²⁴
    bound = 2 * dim * 2.0**-24
    for got_ids, got in ((ids, sims), (ids_half, sims_half)):
        np.testing.assert_allclose(got, sims_ref, rtol=0, atol=bound)  # position by position
        assert (np.diff(got, axis=1) <= 0).all()  # most similar first
        assert (got_ids == ids_ref).mean() > 0.99  # only near-ties may swap places
    exact = np.einsum("nd,nkd->nk", unit.astype(np.float64), unit[candidates].astype(np.float64))
    best = np.sort(exact, axis=1)[:, ::-1][:, :k]
    np.testing.assert_allclose(sims, best, rtol=0, atol=bound)  # against float64 arithmetic
