"""The shared principal-component basis: not whitened, nested, content-chosen, one fit per audit."""

from __future__ import annotations

import numpy as np

from datacheck.reduce import SharedBasis, content_sample, fit_basis
from tests.factories import make_context


def _anisotropic(n: int = 400, d: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) * np.geomspace(3, 0.01, d)).astype(np.float32)


def test_projection_rotates_without_whitening() -> None:
    x = _anisotropic()
    z = fit_basis(x, 16).project(x)
    assert z.shape == (400, 16)
    eps = float(np.finfo(np.float32).eps)
    # float32 column sums of 400 values: within 400·eps of their magnitude
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=400 * eps * float(np.abs(z).max()))
    variances = z.var(axis=0)
    assert np.all(np.diff(variances) <= 0), "components come in order of decreasing variance"
    # not whitened: each component keeps its own variance (by construction the 16th direction has ~1/33
    # of the 1st's variance; whitening would make them equal)
    assert variances[0] > 10 * variances[-1]
    full = fit_basis(x, 50).project(x)  # every dimension: the centred rows themselves, not rotated
    np.testing.assert_array_equal(full, x - x.mean(axis=0, dtype=np.float64).astype(np.float32))


def test_axes_are_nested_so_one_fit_serves_every_smaller_consumer() -> None:
    x = _anisotropic()
    small, large = fit_basis(x, 8).axes, fit_basis(x, 32).axes[:, :8]
    # the same eigenvectors up to sign; float64 eigensolve of a well-separated spectrum
    np.testing.assert_allclose(np.abs((small * large).sum(axis=0)), 1.0, atol=1e-5)


def test_sample_is_chosen_by_content_so_added_rows_leave_it_alone() -> None:
    x = _anisotropic(n=5_000)
    picked = content_sample(x, 1_000)
    assert 800 < len(picked) < 1_200
    extra = np.concatenate([_anisotropic(n=100, seed=1), x])  # 100 rows added in front
    again = content_sample(extra, int(1_000 * len(extra) / len(x)))
    assert set(x[picked].tobytes() for _ in [0]) and set(map(bytes, x[picked])) <= set(
        map(bytes, extra[again])
    )


def test_shared_basis_fits_once_and_grows_on_demand(monkeypatch) -> None:
    import datacheck.reduce as reduce_mod

    calls: list[int] = []
    real = reduce_mod.fit_basis
    monkeypatch.setattr(reduce_mod, "fit_basis", lambda v, d, *a: calls.append(d) or real(v, d, *a))
    shared = SharedBasis(_anisotropic(d=300))
    assert shared.reduced(32).shape == (400, 32) and shared.reduced(128).shape == (400, 128)
    assert calls == [reduce_mod.DEFAULT_AXES]  # one fit for both
    assert shared.reduced(290).shape == (400, 290) and calls == [reduce_mod.DEFAULT_AXES, 290]
    assert not shared.reduced(8).flags.writeable


def test_context_reads_one_basis_and_a_copy_with_other_vectors_gets_its_own() -> None:
    rng = np.random.default_rng(0)
    ctx = make_context(rng.standard_normal((60, 40)).astype(np.float32), np.arange(60) % 3)
    assert ctx.reduced(4).shape == (60, 4)
    import dataclasses

    other = dataclasses.replace(ctx, vectors=np.ascontiguousarray(ctx.vectors[::-1]))
    np.testing.assert_allclose(np.abs(other.reduced(4)), np.abs(ctx.reduced(4)[::-1]), atol=1e-5)
