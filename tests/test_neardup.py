"""datacheck.neardup: tolerance to edits, rejection of look-alikes, candidate pairs, the shared pairs."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from datacheck import neardup
from datacheck.checks.duplicates import DuplicatesParams
from datacheck.checks.leakage import LeakageParams
from datacheck.index import KnnGraph
from datacheck.neardup import NearDupParams, candidate_pairs, duplicate_pairs, verify_pairs
from tests.factories import make_context

# ------------------------------------------------------------------------------------------ image helpers


def textures(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
    """``n`` distinct random colour textures (smooth noise at three scales): ``uint8[n, size, size, 3]``."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size, 3))
    for sigma, weight in ((1.0, 0.6), (2.5, 1.0), (5.0, 1.0)):
        noise = rng.standard_normal((n, size, size, 3))
        out += weight * sigma * ndimage.gaussian_filter(noise, (0, sigma, sigma, 0), mode="wrap")
    out -= out.mean(axis=(1, 2, 3), keepdims=True)
    out /= out.std(axis=(1, 2, 3), keepdims=True)
    out = out * rng.uniform(30, 50, (n, 1, 1, 1)) + rng.uniform(80, 170, (n, 1, 1, 3))
    return np.clip(out, 0, 255).astype(np.uint8)


def shifted(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translated by ``(dy, dx)`` pixels, the uncovered border filled by edge replication."""
    padded = np.pad(img, ((4, 4), (4, 4), (0, 0)), mode="edge")
    return padded[4 - dy : 4 - dy + img.shape[0], 4 - dx : 4 - dx + img.shape[1]]


def brightened(img: np.ndarray, gain: float = 1.25, offset: float = 20) -> np.ndarray:
    """Brightness/contrast change."""
    return np.clip(img.astype(float) * gain + offset, 0, 255).astype(np.uint8)


def flipped(img: np.ndarray) -> np.ndarray:
    """Mirrored left-right."""
    return np.ascontiguousarray(img[:, ::-1])


def cropped(img: np.ndarray, side: int = 28) -> np.ndarray:
    """A central crop resized back (a zoom of 32 / side)."""
    o = (img.shape[0] - side) // 2
    return np.asarray(Image.fromarray(img[o : o + side, o : o + side]).resize(img.shape[:2], Image.BICUBIC))


def rotated(img: np.ndarray, degrees: float) -> np.ndarray:
    """Rotated about the centre, resampled at 4× the size (black corners, outside the compared crop)."""
    big = Image.fromarray(img).resize((128, 128), Image.BICUBIC).rotate(degrees, Image.BICUBIC)
    return np.asarray(big.resize(img.shape[:2], Image.LANCZOS))


def jpeg(img: np.ndarray, quality: int = 40) -> np.ndarray:
    """Re-encoded as a low-quality JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def scores(originals: np.ndarray, edited: np.ndarray) -> neardup.Verification:
    """Verification of each original against its edited copy (every pair refined)."""
    n = len(originals)
    pairs = np.stack([np.arange(n), np.arange(n, 2 * n)], axis=1)
    return verify_pairs(np.concatenate([originals, edited]), pairs, refine_above=-2.0)


# ------------------------------------------------------------------------------------------ verification

IMAGES = textures(12, seed=3)

EDITS = {
    "shift 2 px": lambda x: shifted(x, 2, 0),
    "shift 3 px diagonal": lambda x: shifted(x, -3, 3),
    "shift 4 px": lambda x: shifted(x, 4, -1),
    "brighter": brightened,
    "darker, less contrast": lambda x: brightened(x, 0.6, -10),
    "flip": flipped,
    "crop and resize": cropped,
    "rotate 6°": lambda x: rotated(x, 6),
    "rotate -8°": lambda x: rotated(x, -8),
    "jpeg": jpeg,
    "flip + shift + brighter": lambda x: brightened(shifted(flipped(x), 1, 2)),
}


@pytest.mark.parametrize("edit", EDITS)
def test_edited_copies_verify_above_the_default(edit):
    edited = np.stack([EDITS[edit](x) for x in IMAGES])
    ver = scores(IMAGES, edited)
    assert ver.score.min() >= NearDupParams().min_score, edit
    assert ver.coarse.min() >= NearDupParams().min_score - neardup._COARSE_SLACK  # the cascade keeps them


def test_flip_is_reported():
    ver = scores(IMAGES, np.stack([flipped(x) for x in IMAGES]))
    assert ver.flip.all()
    assert not scores(IMAGES, np.stack([shifted(x, 1, 1) for x in IMAGES])).flip.any()


def test_brightness_and_contrast_do_not_matter():
    ver = scores(IMAGES, np.stack([brightened(x, 0.8, 30) for x in IMAGES]))  # no clipping: exact affine map
    assert ver.score.min() > 0.99


def test_distinct_images_score_low():
    images = textures(40, seed=5)
    pairs = np.array([(i, j) for i in range(40) for j in range(i + 1, 40)])
    ver = verify_pairs(images, pairs, refine_above=-2.0)
    assert np.nanmax(ver.score) < NearDupParams().min_score - 0.1


def test_look_alikes_with_the_same_layout_are_rejected():
    """Same composition (bright sky over dark ground, same colours) but different content."""
    layout = np.linspace(200, 60, 32)[:, None, None] * np.ones((32, 32, 3))
    details = textures(8, seed=7).astype(float)
    images = np.clip(layout + 0.4 * (details - details.mean(axis=(1, 2, 3), keepdims=True)), 0, 255)
    images = images.astype(np.uint8)
    pairs = np.array([(i, j) for i in range(8) for j in range(i + 1, 8)])
    assert np.nanmax(verify_pairs(images, pairs, refine_above=-2.0).score) < NearDupParams().min_score


def test_flat_images_do_not_match_anything():
    flat = np.full((2, 32, 32, 3), 128, np.uint8)
    images = np.concatenate([flat, IMAGES[:2]])
    ver = verify_pairs(images, np.array([[0, 1], [0, 2], [3, 1]]), refine_above=-2.0)
    assert np.all(ver.score < 0.1)


def test_cascade_leaves_low_coarse_pairs_unrefined():
    images = np.concatenate([IMAGES[:2], shifted(IMAGES[0], 1, 0)[None]])
    ver = verify_pairs(images, np.array([[0, 2], [0, 1]]), refine_above=0.7)
    assert ver.score[0] > 0.95 and np.isnan(ver.score[1])
    assert verify_pairs(images, np.zeros((0, 2), int), refine_above=0.7).score.shape == (0,)


def test_rotated_copies_reach_the_fine_stage():
    """An 11° turn: the coarse search turns too, so the cascade refines every copy and accepts it."""
    n = len(IMAGES)
    images = np.concatenate([IMAGES, np.stack([rotated(x, 11) for x in IMAGES])])
    pairs = np.stack([np.arange(n), np.arange(n, 2 * n)], axis=1)
    defaults = NearDupParams()
    ver = verify_pairs(images, pairs, refine_above=defaults.min_score - neardup._COARSE_SLACK)
    assert not np.isnan(ver.score).any()
    assert ver.score.min() >= defaults.min_score


def test_a_pair_scores_the_same_in_either_order():
    """The search shifts the first image and zooms the second; near the bar both orders are searched."""
    n = len(IMAGES)
    images = np.concatenate([IMAGES, np.stack([cropped(x, 24) for x in IMAGES])])
    pairs = np.stack([np.arange(n), np.arange(n, 2 * n)], axis=1)
    forward = verify_pairs(images, pairs, refine_above=0.65)
    backward = verify_pairs(images, pairs[:, ::-1], refine_above=0.65)
    assert not np.isnan(forward.score).any()
    # The same products batched differently: float32 sums of 576 unit-scale terms differ by at most ~1e-5.
    np.testing.assert_allclose(forward.score, backward.score, atol=1e-4)


def test_many_pairs_per_image_are_batched_correctly():
    """A hub image with more pairs than one batch row holds: every pair is still scored on its own."""
    hub = IMAGES[0]
    copies = [shifted(hub, dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]  # 25 copies
    images = np.concatenate([hub[None], np.stack(copies), IMAGES[1:]])
    others = np.arange(26, len(images))
    pairs = np.array([(0, j) for j in [*range(1, 26), *others]])
    ver = verify_pairs(images, pairs, refine_above=-2.0)
    assert (ver.score[:25] > 0.95).all() and (ver.score[25:] < 0.6).all()


# ------------------------------------------------------------------------------------------ candidates


def test_candidate_pairs_dedupe_and_floor():
    indices = np.array([[1, 2], [0, 2], [0, 1], [-1, -1]], np.int32)
    sims = np.array([[0.9, 0.4], [0.9, 0.6], [0.4, 0.6], [0, 0]], np.float32)
    pairs, cos = candidate_pairs(KnnGraph(indices, sims, "exact"), 0.5)
    assert pairs.tolist() == [[0, 1], [1, 2]]  # each once, in the orientation of the first row listing it
    assert cos.tolist() == pytest.approx([0.9, 0.6])


def test_params_validation_and_shared_definition():
    with pytest.raises(ValueError, match="min_score must be greater than 0"):
        NearDupParams(min_score=0)
    with pytest.raises(ValueError, match="min_cosine must be at most 1"):
        NearDupParams(min_cosine=1.5)
    with pytest.raises(ValueError, match="min_score must be at most 1"):
        DuplicatesParams(min_score=1.5)  # subclasses check the inherited ranges too
    dup, leak = DuplicatesParams(max_findings=3), LeakageParams(test_split="val")
    assert dup.near_params() == leak.near_params() == NearDupParams()


# ------------------------------------------------------------------------------------------ duplicate pairs


def _ctx(stats: pd.DataFrame | None = None, sha: list[str] | None = None):
    images = textures(10, seed=11)
    thumbs = np.concatenate([images, images[:1], shifted(images[1], 2, 1)[None]])  # 10 exact of 0, 11 near 1
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((10, 16)).astype(np.float32)
    vectors = np.concatenate([vectors, vectors[:1], vectors[1:2] + 0.1 * rng.standard_normal((1, 16))])
    hashes = [f"p{i}" for i in range(10)] + ["p0", "p11"]
    return make_context(
        vectors,
        [0] * 12,
        thumbs=thumbs,
        stats=stats if stats is not None else pd.DataFrame({"pixel_hash": hashes}),
        file_sha256=sha,
    )


def test_duplicate_pairs_exact_and_near():
    df = duplicate_pairs(_ctx(), NearDupParams())
    assert list(df.columns) == list(neardup.PAIR_COLUMNS)
    rows = {(int(r.i), int(r.j)): r for r in df.itertuples()}
    assert set(rows) == {(0, 10), (1, 11)}
    assert rows[(0, 10)].kind == "exact" and rows[(0, 10)].score == 1.0
    assert rows[(1, 11)].kind == "near" and rows[(1, 11)].score > 0.9
    assert df.attrs["candidates"] >= 1


def test_exact_falls_back_to_the_file_hash():
    sha = [f"{i:064x}" for i in range(10)] + [f"{0:064x}", f"{11:064x}"]
    df = duplicate_pairs(_ctx(stats=pd.DataFrame(index=range(12)), sha=sha), NearDupParams(near=False))
    assert df[["i", "j", "kind"]].values.tolist() == [[0, 10, "exact"]]


def test_pairs_are_computed_once_per_context_and_definition():
    ctx = _ctx()
    first = duplicate_pairs(ctx, DuplicatesParams())
    assert duplicate_pairs(ctx, LeakageParams(max_findings=5)) is first  # same definition, same frame
    assert duplicate_pairs(ctx, NearDupParams(min_score=0.95)) is not first
    assert duplicate_pairs(_ctx(), DuplicatesParams()) is not first  # another context


def test_exact_groups_link_every_member_across_splits():
    keys = np.array(["a", "b", "a", "a", "a", "c"], dtype=object)
    splits = ["train", "train", "test", "train", "val", "test"]
    pairs = {tuple(p) for p in neardup._exact_pairs(keys, splits).tolist()}
    # every copy is linked to its own split's first copy and to each other split's first copy
    assert pairs == {(0, 2), (0, 3), (0, 4), (2, 3), (2, 4), (3, 4)}


def test_groups_are_stars_not_chains():
    """A chain of look-alikes (0≈1≈2≈3≈4≈5) does not become one group; identical copies stay together."""
    chain = [(k, k + 1) for k in range(5)]
    pairs = pd.DataFrame({"i": [a for a, _ in chain], "j": [b for _, b in chain], "score": 0.9})
    keys = np.array(["k0", "k1", "k2", "k3", "k4", "k5", "same", "same", "k0"], dtype=object)
    groups = [g.tolist() for g in neardup.duplicate_groups(9, pairs, keys)]
    assert sorted(groups) == [[0, 1, 2, 8], [3, 4, 5], [6, 7]]
    assert [g.tolist() for g in neardup.duplicate_groups(3, pairs.iloc[:0])] == []


def _growing_ctx(n: int, derived_dir):
    """``n`` textures whose odd rows are shifted copies of the row before; hashes follow the content."""
    import dataclasses

    base = textures(n, seed=21)
    thumbs = np.stack([shifted(base[i - 1], 1, 2) if i % 2 else base[i] for i in range(n)])
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((n, 16)).astype(np.float32)
    vectors[1::2] = vectors[0::2][: n // 2] + 0.05 * rng.standard_normal((n // 2, 16))
    sha = [f"{i // 2:015x}{i % 2}" + "0" * 48 for i in range(n)]
    ctx = make_context(vectors, [0] * n, thumbs=thumbs, file_sha256=sha)
    return dataclasses.replace(ctx, derived_dir=derived_dir)


def test_pair_scores_are_reused_and_only_new_pairs_verified(tmp_path, monkeypatch):
    verified: list[int] = []
    real = neardup.verify_pairs

    def counting(thumbs, pairs, refine_above):
        verified.append(len(pairs))
        return real(thumbs, pairs, refine_above)

    monkeypatch.setattr(neardup.store, "verify_pairs", counting)  # the module pair_scores calls it from
    params = NearDupParams()
    first = duplicate_pairs(_growing_ctx(12, tmp_path), params)
    assert len(first) == 6 and verified and verified[-1] > 0
    verified.clear()
    again = duplicate_pairs(_growing_ctx(12, tmp_path), params)  # a new context over the same images
    assert verified == []  # every pair scored by the earlier audit
    pd.testing.assert_frame_equal(again, first)

    grown = duplicate_pairs(_growing_ctx(16, tmp_path), params)  # 4 images added
    fresh = duplicate_pairs(_growing_ctx(16, None), params)  # from scratch, nothing stored
    assert len(grown) == 8
    pd.testing.assert_frame_equal(grown.drop(columns="score"), fresh.drop(columns="score"))
    # A score is a float32 mean over a 32x32 map; batches of other sizes sum in another order, which moves
    # a sum of n terms by at most n * eps (Higham), so a stored score and a fresh one agree to that.
    tol = 32 * 32 * np.finfo(np.float32).eps
    np.testing.assert_allclose(grown["score"], fresh["score"], rtol=0, atol=tol)
    assert 0 < verified[0] < verified[-1]  # the incremental run verified only pairs it had not seen


def test_a_pair_of_nearest_neighbours_counts_from_nearest_score_and_is_judged() -> None:
    """Rows 0-1 are each other's nearest neighbours; 2-3 score the same, but 2's nearest is 4, 3's is 1."""
    from datacheck.neardup.pairs import _near_pairs

    indices = np.array([[1, 2], [0, 3], [4, 3], [1, 2], [2, 0]])
    sims = np.full(indices.shape, 0.9, np.float32)
    scores_of = {(0, 1): 0.8, (2, 3): 0.8, (2, 4): 0.95, (0, 2): 0.1, (1, 3): 0.1, (0, 4): 0.1}
    seen_bars: list[float] = []

    def scores(pairs: np.ndarray, refine_above: float) -> np.ndarray:
        seen_bars.append(refine_above)
        return np.array([scores_of[tuple(sorted(map(int, p)))] for p in pairs], np.float32)

    keys = np.array(["a", "b", "c", "d", "e"], dtype=object)
    df = _near_pairs(KnnGraph(indices, sims, "exact"), keys, NearDupParams(), scores)
    assert {(int(i), int(j)) for i, j in zip(df["i"], df["j"], strict=True)} == {
        (0, 1),
        (2, 4),
    }  # (2, 3): not nearest
    assert min(seen_bars) < NearDupParams().nearest_score  # nearest pairs were refined down to their bar
    off = _near_pairs(KnnGraph(indices, sims, "exact"), keys, NearDupParams(nearest_score=0.85), scores)
    assert {(int(i), int(j)) for i, j in zip(off["i"], off["j"], strict=True)} == {(2, 4)}


def test_a_nearest_pair_counts_only_when_it_stands_out_from_its_neighbourhood() -> None:
    """Rows 0-1 and 2-3 are mutual nearest neighbours scoring 0.8; 0-1 stand far above their other five
    neighbours' cosines (a copy), 2-3 barely above theirs (a look-alike in a crowd)."""
    from datacheck.neardup.pairs import _near_pairs

    n, crowd = 14, [4, 5, 6, 7, 8]
    indices = np.array([[1, *crowd], [0, *crowd], [3, *crowd], [2, *crowd]] + [[9, 10, 11, 12, 13, 0]] * 10)
    spread = np.array([0.50, 0.52, 0.54, 0.56, 0.58], np.float32)  # mean 0.54, population sd ~0.028
    sims = np.vstack(
        [np.r_[0.95, spread], np.r_[0.95, spread], np.r_[0.60, spread], np.r_[0.60, spread]]
        + [np.full(6, 0.3, np.float32)] * 10
    ).astype(np.float32)

    def scores(pairs: np.ndarray, refine_above: float) -> np.ndarray:
        return np.array([0.8 if set(map(int, p)) in ({0, 1}, {2, 3}) else 0.1 for p in pairs], np.float32)

    keys = np.array([f"k{i}" for i in range(n)], dtype=object)
    graph = KnnGraph(indices.astype(np.int32), sims, "exact")
    found = _near_pairs(graph, keys, NearDupParams(min_cosine=0.2), scores)
    assert {(int(i), int(j)) for i, j in zip(found["i"], found["j"], strict=True)} == {(0, 1)}
    # (0.60 - 0.54) / 0.028 = 2.1 standard deviations: counted once the bar is below that
    relaxed = _near_pairs(graph, keys, NearDupParams(min_cosine=0.2, nearest_standout=2.0), scores)
    assert {(int(i), int(j)) for i, j in zip(relaxed["i"], relaxed["j"], strict=True)} == {(0, 1), (2, 3)}


def test_pairs_are_judged_exact_same_shot_or_look_alike() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    thumbs = np.stack([base, base, np.clip(base.astype(int) + 6, 0, 255).astype(np.uint8)])
    vectors = np.tile(rng.standard_normal(16).astype(np.float32), (3, 1)) + rng.normal(0, 0.01, (3, 16))
    ctx = make_context(
        vectors.astype(np.float32), [0, 0, 0], thumbs=thumbs, file_sha256=["a" * 64] * 2 + ["b" * 64]
    )
    pairs = duplicate_pairs(ctx, NearDupParams())
    judged = {
        (int(i), int(j)): str(k) for i, j, k in zip(pairs["i"], pairs["j"], pairs["judgement"], strict=True)
    }
    assert judged[(0, 1)] == "exact" and judged[(0, 2)] == "same_shot"
    strict = duplicate_pairs(ctx, NearDupParams(same_shot_score=1.0))
    assert set(strict.loc[strict["kind"] == "near", "judgement"]) == {"look_alike"}


def _smooth_thumbs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (n, 4, 4, 3)).astype(np.float32)
    return np.clip(ndimage.zoom(coarse, (1, 8, 8, 1), order=1), 0, 255).astype(np.uint8)


def test_the_layout_index_proposes_a_mirrored_recoloured_copy_and_not_strangers() -> None:
    from datacheck.neardup.candidates import layout_candidates, layouts

    thumbs = _smooth_thumbs(40, 0)
    copy = np.clip(thumbs[3, :, ::-1].astype(np.float32) * 0.8 + 20, 0, 255).astype(np.uint8)
    proposed = layout_candidates(layouts(np.concatenate([thumbs, copy[None]])), k=5)
    assert [3, 40] in proposed.tolist()
    assert all(40 not in pair or pair == [3, 40] for pair in proposed.tolist())
    assert layout_candidates(layouts(thumbs), k=0).shape == (0, 2)


def test_the_inverted_lists_of_a_large_layout_index_find_what_the_exact_search_finds(monkeypatch) -> None:
    from datacheck.neardup import candidates

    thumbs = _smooth_thumbs(3000, 4)
    rng = np.random.default_rng(5)
    originals = rng.choice(3000, 30, replace=False)
    copies = np.clip(thumbs[originals, :, ::-1].astype(np.float32) * 0.9 + 10, 0, 255).astype(np.uint8)
    grid = candidates.layouts(np.concatenate([thumbs, copies]))
    exact = candidates.layout_candidates(grid, k=5)
    monkeypatch.setattr(candidates, "LAYOUT_EXACT_MAX", 1000)  # 3,030 rows: the approximate index
    monkeypatch.setattr(candidates, "LAYOUT_LIST_SIZE", 64)  # 47 lists, 8 of them searched per query
    approximate = candidates.layout_candidates(grid, k=5)
    planted = {(int(o), 3000 + c) for c, o in enumerate(originals)}
    assert planted <= {tuple(p) for p in approximate.tolist()}
    assert {tuple(p) for p in approximate.tolist()} <= {tuple(p) for p in exact.tolist()}
    np.testing.assert_array_equal(candidates.layout_candidates(grid, k=5), approximate)  # repeatable


def test_a_copy_whose_embedding_moved_is_found_through_the_layout_index() -> None:
    thumbs = _smooth_thumbs(30, 1)
    thumbs = np.concatenate([thumbs, thumbs[7:8]])  # row 30: the same picture as row 7 ...
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((31, 64)).astype(np.float32)  # ... but an unrelated embedding
    ctx = make_context(vectors, np.arange(31) % 3, thumbs=thumbs)
    with_layouts = duplicate_pairs(ctx, NearDupParams())
    assert (7, 30) in set(zip(with_layouts["i"].tolist(), with_layouts["j"].tolist(), strict=True))
    knn_only = duplicate_pairs(ctx, NearDupParams(layout_neighbours=0))
    assert (7, 30) not in set(zip(knn_only["i"].tolist(), knn_only["j"].tolist(), strict=True))


def test_layout_agreement_sees_mirrors_and_refuses_opposite_layouts() -> None:
    from datacheck.neardup.candidates import layout_agreement, layouts

    thumbs = _smooth_thumbs(2, 3)
    mirrored, negative = thumbs[0, :, ::-1], 255 - thumbs[0]
    grid = layouts(np.stack([thumbs[0], mirrored, negative, thumbs[1]]))
    agreement = layout_agreement(grid, np.array([[0, 1], [0, 2], [0, 3]]))
    eps = float(np.finfo(np.float32).eps) * 64 * 4  # 64-term float32 dot products of unit vectors
    assert agreement[0] == pytest.approx(1.0, abs=eps)  # a mirror image agrees fully
    assert agreement[1] < 0  # the same layout with light and dark swapped does not
    assert -1 - eps <= agreement[2] <= 1 + eps


def _copies_and_random_pairs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """44 thumbnails (12 images, their shifted copies, 20 textures): the 12 copy pairs and 300 random ones."""
    images = np.concatenate([IMAGES, np.stack([shifted(x, 1, 2) for x in IMAGES]), textures(20, seed=9)])
    rng = np.random.default_rng(seed)
    pairs = np.concatenate(
        [np.stack([np.arange(12), np.arange(12, 24)], axis=1), rng.integers(0, 44, (300, 2))]
    )
    return images, pairs


def test_the_coarse_search_in_parts_scores_as_in_one(monkeypatch):
    """Past a memory budget the half-size maps and candidates' crops are made part by part: same scores."""
    images, pairs = _copies_and_random_pairs(0)
    whole = verify_pairs(images, pairs, refine_above=0.3)
    monkeypatch.setattr(neardup.verify, "_CROP_BYTES", 10_000)  # a few candidate images per part ...
    monkeypatch.setattr(neardup.verify, "_PART_STEP", 2)  # ... counted two pairs at a time
    parts = verify_pairs(images, pairs, refine_above=0.3)
    # the same products batched differently: float32 sums of 144 unit-scale terms agree to ~1e-6
    np.testing.assert_allclose(parts.coarse, whole.coarse, atol=1e-5)
    np.testing.assert_allclose(np.nan_to_num(parts.score), np.nan_to_num(whole.score), atol=1e-5)


def test_the_fine_stage_in_parts_scores_as_in_one(monkeypatch):
    """Past a memory budget the full-resolution maps are made for a part of the refined pairs at a time."""
    images, pairs = _copies_and_random_pairs(1)
    whole = verify_pairs(images, pairs, refine_above=0.0)
    monkeypatch.setattr(neardup.verify, "_FINE_MAP_BYTES", 8 * 2048 * 5)  # five images' maps per part
    monkeypatch.setattr(neardup.verify, "_PART_STEP", 2)
    parts = verify_pairs(images, pairs, refine_above=0.0)
    assert np.isfinite(whole.score).sum() > 12  # the planted copies and some others were refined
    # each image's maps are computed alone either way (per-image gray, blur and band-pass): the same scores
    # up to float32 sums of 1,024-term products batched differently
    np.testing.assert_allclose(np.nan_to_num(parts.score), np.nan_to_num(whole.score), atol=1e-5)
    assert np.nan_to_num(whole.score[:12]).min() > 0.9


def test_parts_count_the_images_each_part_holds(monkeypatch):
    """Each part's distinct images stay within the budget (give or take one step), whatever their spread."""
    monkeypatch.setattr(neardup.verify, "_PART_STEP", 10)
    rng = np.random.default_rng(0)
    pairs = np.stack([np.repeat(np.arange(100), 5), rng.integers(0, 2000, 500)], axis=1)  # spread candidates
    bounds = neardup.verify._parts(pairs, (1, 3), budget=120)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(pairs)
    assert all(a < b and b == c for (a, b), (c, _) in itertools.pairwise(bounds))  # consecutive, none empty
    for a, b in bounds:
        held = len(np.unique(pairs[a:b, 0])) + 3 * len(np.unique(pairs[a:b, 1]))
        assert held <= 120 + 10 * (1 + 3)  # one step of ten pairs past the budget at most
    # the old rule (the whole list's distinct images over the number of parts) held ~3x its budget here
    assert len(bounds) > (len(np.unique(pairs[:, 0])) + 3 * len(np.unique(pairs[:, 1]))) / 120


def _with_mirrored_copies(thumbs: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, ...]:
    """``thumbs`` with mirrored, dimmed copies of ``count`` of them appended; the originals; a key per row."""
    originals = np.random.default_rng(seed).choice(len(thumbs), count, replace=False)
    copies = np.clip(thumbs[originals, :, ::-1].astype(np.float32) * 0.9 + 10, 0, 255).astype(np.uint8)
    both = np.concatenate([thumbs, copies])
    return both, originals, np.array([f"pixels:{i:04d}" for i in range(len(both))], dtype=object)


def test_layout_pairs_depend_on_the_images_not_their_order_and_are_kept_by_content(tmp_path, monkeypatch):
    from datacheck.neardup import candidates

    thumbs, originals, keys = _with_mirrored_copies(_smooth_thumbs(600, 6), 12, seed=7)
    rng = np.random.default_rng(7)
    rng.choice(600, 12, replace=False)  # the draw above, so the permutation below stays as it was
    monkeypatch.setattr(
        candidates, "LAYOUT_EXACT_MAX", 100
    )  # the approximate index: its sample follows order
    monkeypatch.setattr(candidates, "LAYOUT_LIST_SIZE", 32)
    first = candidates.stored_layout_candidates(candidates.layouts(thumbs), 5, keys)
    assert {(int(o), 600 + c) for c, o in enumerate(originals)} <= {tuple(p) for p in first.tolist()}

    # the same images listed in another order (renamed, relabelled): the same pairs of images
    order = rng.permutation(len(thumbs))
    shuffled = candidates.stored_layout_candidates(
        candidates.layouts(thumbs[order]), 5, keys[order], tmp_path
    )
    as_images = {tuple(sorted((int(order[i]), int(order[j])))) for i, j in shuffled.tolist()}
    assert as_images == {tuple(p) for p in first.tolist()}

    def no_search(*args, **kwargs):
        raise AssertionError("the pairs should have come from the store")

    monkeypatch.setattr(candidates, "layout_candidates", no_search)
    again = candidates.stored_layout_candidates(candidates.layouts(thumbs), 5, keys, tmp_path)
    np.testing.assert_array_equal(again, first)


def test_layout_pairs_are_updated_for_added_and_removed_images_as_a_fresh_search_finds_them(
    tmp_path, monkeypatch
):
    from datacheck.neardup import candidates

    thumbs, originals, keys = _with_mirrored_copies(_smooth_thumbs(600, 9), 12, seed=10)
    grid = candidates.layouts(thumbs)
    older = np.r_[0:590, 600:606]  # 10 images and 6 of the copies not there yet
    candidates.stored_layout_candidates(grid[older], 5, keys[older], tmp_path)

    def fresh(rows: np.ndarray) -> np.ndarray:
        return candidates.stored_layout_candidates(grid[rows], 5, keys[rows])  # nothing stored: searched

    searched: list[int] = []
    search = candidates.layout_candidates
    monkeypatch.setattr(candidates, "layout_candidates", lambda g, k: searched.append(len(g)) or search(g, k))
    everything = np.arange(len(thumbs))
    grown = candidates.stored_layout_candidates(grid, 5, keys, tmp_path)  # 16 added: updated
    assert searched == []
    planted = {(int(o), 600 + c) for c, o in enumerate(originals)}
    assert planted <= {tuple(p) for p in grown.tolist()}
    np.testing.assert_array_equal(grown, fresh(everything))
    fewer = np.setdiff1d(everything, [3, 601, 602])  # 3 removed, copies among them: updated again
    searched.clear()
    shrunk = candidates.stored_layout_candidates(grid[fewer], 5, keys[fewer], tmp_path)
    assert searched == []
    np.testing.assert_array_equal(shrunk, fresh(fewer))


def test_many_pairs_are_verified_in_a_local_order_with_the_same_scores(monkeypatch):
    """From _LOCAL_ORDER_MIN pairs they are verified grouped by neighbourhood; results come back in order."""
    images, pairs = _copies_and_random_pairs(2)
    given = verify_pairs(images, pairs, refine_above=0.3)
    monkeypatch.setattr(neardup.verify, "_LOCAL_ORDER_MIN", 1)
    monkeypatch.setattr(neardup.verify, "_CROP_BYTES", 10_000)  # in parts, where the order matters
    monkeypatch.setattr(neardup.verify, "_PART_STEP", 2)
    local = verify_pairs(images, pairs, refine_above=0.3)
    np.testing.assert_allclose(local.coarse, given.coarse, atol=1e-5)  # the same products, batched otherwise
    np.testing.assert_allclose(np.nan_to_num(local.score), np.nan_to_num(given.score), atol=1e-5)
    np.testing.assert_array_equal(local.flip, given.flip)


def test_the_local_order_keeps_neighbourhoods_and_first_images_together(monkeypatch):
    """Two groups of images whose rows interleave: each group's pairs come out as one run."""
    monkeypatch.setattr(neardup.verify, "_LOCAL_ORDER_MIN", 1)
    rng = np.random.default_rng(0)
    groups = [np.arange(0, 400, 2), np.arange(1, 400, 2)]  # even rows pair with even rows, odd with odd
    pairs = np.concatenate([rng.choice(g, (600, 2)) for g in groups])
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    order = neardup.verify._local_order(pairs)
    assert sorted(order.tolist()) == list(range(len(pairs)))  # a permutation
    parity = pairs[order, 0] % 2
    assert np.count_nonzero(np.diff(parity)) == 1  # one run of each group
    first = pairs[order, 0]
    assert len(np.unique(first)) == np.count_nonzero(np.diff(first)) + 1  # each first image once, contiguous


def test_compiled_crops_equal_a_sparse_resampling_normalised_by_numpy():
    """The compiled crops: bilinear resampling (four taps, weights summing to 1), zero mean, unit norm."""
    from scipy import sparse

    verify = neardup.verify
    maps = verify.thumbnail_maps(np.concatenate([IMAGES, textures(4, seed=3)]))
    maps[0, 1] = 7.0  # a flat map: its crops are all zero
    for variants, margin in ((verify._FINE_VARIANTS, verify._FINE_SHIFT), (verify._COARSE_VARIANTS, 2)):
        taps, weights = verify._variant_taps(32, variants, margin)
        assert np.allclose(weights.sum(axis=1), 1.0, atol=1e-6) and (np.diff(taps, axis=1) > 0).all()
        rows = np.repeat(np.arange(len(taps)), 4)
        matrix = sparse.csr_matrix((weights.ravel(), (rows, taps.ravel())), shape=(len(taps), 32 * 32))
        flat = maps.reshape(-1, 32 * 32)
        expected = (matrix @ flat.T).T.reshape(len(maps), 2, len(variants), -1).astype(np.float32)
        expected -= expected.mean(axis=-1, keepdims=True)
        norms = np.sqrt(np.square(expected).sum(axis=-1, keepdims=True))
        pixels = expected.shape[-1]
        expected *= np.where(norms < verify._FLAT_STD * np.sqrt(pixels), 0, 1 / np.maximum(norms, 1e-30))
        got = verify._transformed(maps, variants, margin)
        assert got.shape == expected.shape and got.dtype == np.float32
        # the taps are summed in the same order; numpy's float32 pairwise mean and norm of <= 576 terms err by
        # ~log2(576) ulps (~6e-7 relative), the compiled ones (float64 sums) by less: entries are <= 1
        np.testing.assert_allclose(got, expected, atol=2e-6)
        assert not got[0, 1].any()
