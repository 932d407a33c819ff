from __future__ import annotations

import json
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image, ImageFilter
from PIL.JpegImagePlugin import JpegImageFile

from datacheck.images import (
    BACKGROUND_RGB,
    STATS_VERSION,
    THUMB_SIDE,
    DecodedImage,
    ImageDecodeError,
    ImageStats,
    StatsFormatError,
    decode_image,
    estimate_jpeg_quality,
    read_file,
)
from datacheck.params import MAX_IMAGE_PIXELS
from datacheck.report.thumbnails import make_thumbnail

if TYPE_CHECKING:
    from conftest import ImageFactory

SIZE = 32
RED, GREEN, BLUE = (220, 30, 30), (30, 200, 40), (30, 40, 220)  # the colours conftest's factory draws


def decode_path(path: Path, size: int = SIZE) -> DecodedImage:
    return decode_image(read_file(path), size, name=os.fsdecode(path.name))


def decode_fails(path: Path) -> str:
    with pytest.raises(ImageDecodeError) as info:
        decode_path(path)
    reason = info.value.reason
    assert reason == str(info.value)
    assert "\n" not in reason
    return reason


def close_to(pixel: np.ndarray, color: tuple[int, int, int], tol: int = 12) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(color)) <= tol))


# ------------------------------------------------------------------------------------------ good images


def test_rgb_jpeg_gives_model_input_and_stats(image_factory: ImageFactory) -> None:
    path = image_factory.save("photo.jpg", image_factory.noise((60, 40)), quality=85)
    decoded = decode_path(path, size=48)
    assert decoded.pixels.shape == (48, 48, 3)
    assert decoded.pixels.dtype == np.uint8
    assert decoded.pixels.flags.writeable
    stats = decoded.stats
    assert (stats.width, stats.height, stats.mode, stats.format) == (60, 40, "RGB", "JPEG")
    assert stats.file_size == path.stat().st_size
    assert stats.frames == 1
    assert stats.jpeg_quality == 85
    assert stats.camera is None
    assert not stats.grayscale
    assert decoded.notes == ()


def test_one_by_one_image(image_factory: ImageFactory) -> None:
    decoded = decode_path(image_factory.solid("dot.png", (1, 1), GREEN))
    assert decoded.pixels.shape == (SIZE, SIZE, 3)
    assert np.all(decoded.pixels == np.array(GREEN, np.uint8))
    assert (decoded.stats.width, decoded.stats.height) == (1, 1)
    assert decoded.stats.entropy == 0.0
    assert decoded.stats.contrast == pytest.approx(0.0, abs=1e-3)


def test_tiny_image_decodes_and_is_visible_in_stats(image_factory: ImageFactory) -> None:
    decoded = decode_path(image_factory.save("tiny.png", image_factory.noise((4, 3))))
    assert (decoded.stats.width, decoded.stats.height) == (4, 3)
    assert "tiny image: 4x3 px" in decoded.notes
    assert decoded.pixels.shape == (SIZE, SIZE, 3)


def test_whole_image_is_squashed_not_cropped(image_factory: ImageFactory) -> None:
    decoded = decode_path(image_factory.save("wide.png", Image.new("RGB", (90, 10), RED)))
    # A wide red image fills the whole square input: no padding, no crop.
    assert close_to(decoded.pixels.reshape(-1, 3).min(axis=0), RED, tol=2)


def test_grayscale_flag(image_factory: ImageFactory) -> None:
    assert decode_path(image_factory.grayscale_jpeg()).stats.grayscale
    gray_rgb = image_factory.noise((32, 32)).convert("L").convert("RGB")
    assert decode_path(image_factory.save("gray_rgb.png", gray_rgb)).stats.grayscale
    assert not decode_path(image_factory.save("colour.png", image_factory.noise((32, 32)))).stats.grayscale


def test_colour_brightness_and_saturation(image_factory: ImageFactory) -> None:
    red = decode_path(image_factory.solid("red.png", (20, 20), (255, 0, 0))).stats
    white = decode_path(image_factory.solid("white.png", (20, 20), (255, 255, 255))).stats
    assert red.saturation == pytest.approx(1.0)
    assert (red.mean_r, red.mean_g, red.mean_b) == pytest.approx((255, 0, 0))
    assert red.brightness == pytest.approx(0.299 * 255, abs=0.5)
    assert white.brightness == pytest.approx(255, abs=0.5)
    assert white.saturation == pytest.approx(0.0)


def test_sharpness_entropy_and_border(image_factory: ImageFactory) -> None:
    sharp = image_factory.noise((200, 200), seed=1)
    blurred = sharp.filter(ImageFilter.GaussianBlur(4))
    sharp_stats = decode_path(image_factory.save("sharp.png", sharp)).stats
    blurred_stats = decode_path(image_factory.save("blurred.png", blurred)).stats
    assert sharp_stats.sharpness > 10 * blurred_stats.sharpness
    assert sharp_stats.entropy > 6.0
    assert decode_path(image_factory.solid("flat.png", (50, 50))).stats.entropy == 0.0

    framed = Image.new("RGB", (200, 200), (0, 0, 0))
    framed.paste(image_factory.noise((160, 160), seed=2), (20, 20))
    stats = decode_path(image_factory.save("framed.png", framed)).stats
    assert (stats.border_r, stats.border_g, stats.border_b) == pytest.approx((0, 0, 0), abs=1.0)
    assert stats.border_std < 1.0
    assert sharp_stats.border_std > 30


def test_sharpness_is_comparable_across_sizes(image_factory: ImageFactory) -> None:
    base = image_factory.noise((64, 64), seed=3).filter(ImageFilter.GaussianBlur(1))
    small = decode_path(image_factory.save("small.png", base.resize((256, 256), Image.Resampling.BICUBIC)))
    large = decode_path(image_factory.save("large.png", base.resize((1024, 1024), Image.Resampling.BICUBIC)))
    ratio = small.stats.sharpness / large.stats.sharpness
    assert 0.5 < ratio < 2.0


def test_pixel_hash_ignores_container_but_not_content(image_factory: ImageFactory) -> None:
    img = image_factory.noise((20, 12), seed=4)
    png = decode_path(image_factory.save("a.png", img)).stats.pixel_hash
    bmp = decode_path(image_factory.save("a.bmp", img)).stats.pixel_hash
    tif = decode_path(image_factory.save("a.tif", img)).stats.pixel_hash
    other = decode_path(image_factory.save("b.png", image_factory.noise((20, 12), seed=5))).stats.pixel_hash
    assert png == bmp == tif
    assert png != other
    assert len(png) == 64


@pytest.mark.parametrize("quality", [30, 50, 75, 95])
def test_jpeg_quality_estimate(image_factory: ImageFactory, quality: int) -> None:
    path = image_factory.save(f"q{quality}.jpg", image_factory.noise((16, 16)), quality=quality)
    assert decode_path(path).stats.jpeg_quality == quality


def test_jpeg_quality_is_none_for_other_formats(image_factory: ImageFactory) -> None:
    assert decode_path(image_factory.save("a.png", image_factory.noise((8, 8)))).stats.jpeg_quality is None
    assert estimate_jpeg_quality({}) is None


def test_content_that_does_not_match_the_extension_is_noted(image_factory: ImageFactory) -> None:
    path = image_factory.save("really_a_png.jpg", image_factory.noise((8, 8)), fmt="PNG")
    decoded = decode_path(path)
    assert decoded.stats.format == "PNG"
    assert "content is PNG but the name ends in .jpg" in decoded.notes


def test_size_must_be_positive(image_factory: ImageFactory) -> None:
    with pytest.raises(ValueError, match="positive"):
        decode_image(image_factory.encode(image_factory.noise((4, 4)), "PNG"), 0)


# ------------------------------------------------------------------------------------ modes and formats


def test_16_bit_png_is_scaled_not_clipped(image_factory: ImageFactory) -> None:
    decoded = decode_path(image_factory.png16(), size=64)
    assert decoded.stats.mode == "I;16"
    assert decoded.stats.grayscale
    row = decoded.pixels[8, :, 0].astype(int)
    assert row[0] <= 3
    assert row[-1] >= 252
    assert 110 < row[32] < 145  # mid-ramp is mid-grey, not white
    assert np.all(np.diff(row) >= 0)
    assert decoded.stats.brightness == pytest.approx(127.5, abs=6)


def test_cmyk_jpeg_is_converted(image_factory: ImageFactory) -> None:
    decoded = decode_path(image_factory.cmyk_jpeg())
    assert decoded.stats.mode == "CMYK"
    assert close_to(decoded.pixels[SIZE // 2, SIZE // 2], (255, 0, 0), tol=10)


def test_palette_png_with_transparency_is_composited_on_grey(image_factory: ImageFactory) -> None:
    decoded = decode_path(image_factory.palette_png_transparent())
    assert decoded.stats.mode == "P"
    assert close_to(decoded.pixels[SIZE // 2, 2], BACKGROUND_RGB, tol=2)  # not black
    assert close_to(decoded.pixels[SIZE // 2, -3], RED, tol=2)
    assert any("composited" in note for note in decoded.notes)


def test_la_png_is_composited_on_grey(image_factory: ImageFactory) -> None:
    decoded = decode_path(image_factory.la_png())
    assert decoded.stats.mode == "LA"
    assert close_to(decoded.pixels[SIZE // 2, 2], BACKGROUND_RGB, tol=2)
    assert close_to(decoded.pixels[SIZE // 2, -3], (255, 255, 255), tol=2)
    assert decoded.stats.grayscale


def test_rgba_png_is_composited_on_grey(image_factory: ImageFactory) -> None:
    decoded = decode_path(image_factory.rgba_png())
    assert decoded.stats.mode == "RGBA"
    assert close_to(decoded.pixels[SIZE // 2, 2], BACKGROUND_RGB, tol=2)
    assert close_to(decoded.pixels[SIZE // 2, -3], BLUE, tol=2)


def test_opaque_rgba_has_no_compositing_note(image_factory: ImageFactory) -> None:
    decoded = decode_path(image_factory.save("opaque.png", image_factory.noise((8, 8)).convert("RGBA")))
    assert decoded.notes == ()


def test_animated_gif_uses_first_frame_and_notes_frame_count(image_factory: ImageFactory) -> None:
    decoded = decode_path(image_factory.animated_gif())
    assert decoded.stats.frames == 3
    assert "animated GIF: first frame used (3 frames)" in decoded.notes
    assert close_to(decoded.pixels[SIZE // 2, SIZE // 2], RED, tol=20)


def test_multi_page_tiff_uses_first_page(image_factory: ImageFactory) -> None:
    pages = [Image.new("RGB", (16, 16), c) for c in (GREEN, RED)]
    path = image_factory.save("pages.tif", pages[0], save_all=True, append_images=pages[1:])
    decoded = decode_path(path)
    assert decoded.stats.frames == 2
    assert "multi-page TIFF: first page used (2 pages)" in decoded.notes
    assert close_to(decoded.pixels[SIZE // 2, SIZE // 2], GREEN, tol=2)


@pytest.mark.parametrize(
    ("orientation", "top", "bottom", "size"),
    [
        (6, RED, BLUE, (20, 40)),  # rotate 90° clockwise to display: the left half ends on top
        (8, BLUE, RED, (20, 40)),  # rotate 90° counter-clockwise: the left half ends at the bottom
        (1, None, None, (40, 20)),
    ],
)
def test_exif_orientation_is_applied(
    image_factory: ImageFactory,
    orientation: int,
    top: tuple[int, int, int] | None,
    bottom: tuple[int, int, int] | None,
    size: tuple[int, int],
) -> None:
    decoded = decode_path(image_factory.exif_rotated_jpeg(orientation=orientation))
    assert (decoded.stats.width, decoded.stats.height) == size
    assert decoded.stats.camera == "Canon EOS 5D"
    if top is not None and bottom is not None:
        assert close_to(decoded.pixels[2, SIZE // 2], top, tol=25)
        assert close_to(decoded.pixels[-3, SIZE // 2], bottom, tol=25)
    else:
        assert close_to(decoded.pixels[SIZE // 2, 2], RED, tol=25)
        assert close_to(decoded.pixels[SIZE // 2, -3], BLUE, tol=25)


def test_large_jpeg_decodes_fast_with_draft(large_jpeg_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requested: list[tuple[int, int] | None] = []
    original = JpegImageFile.draft

    def spy(self: JpegImageFile, mode: str | None, size: tuple[int, int] | None):
        requested.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    data = read_file(large_jpeg_path)
    start = time.perf_counter()
    decoded = decode_image(data, 224)
    elapsed = time.perf_counter() - start
    assert requested, "large JPEGs must be decoded with Image.draft"
    assert (decoded.stats.width, decoded.stats.height) == (6000, 4000)
    assert decoded.pixels.shape == (224, 224, 3)
    assert elapsed < 2.0  # about 0.06 s with draft; a full decode plus resize takes several times longer


# -------------------------------------------------------------------------------------- broken files


def test_zero_byte_file(image_factory: ImageFactory) -> None:
    assert decode_fails(image_factory.zero_byte()) == "empty file: 0 bytes"


def test_truncated_jpeg(image_factory: ImageFactory) -> None:
    assert decode_fails(image_factory.truncated_jpeg()).startswith("truncated file: ")


def test_truncated_png(image_factory: ImageFactory) -> None:
    assert decode_fails(image_factory.truncated_png()).startswith("truncated file: ")


@pytest.mark.parametrize("keep", [8, 12, 20, 40])
def test_png_cut_inside_its_header(image_factory: ImageFactory, keep: int) -> None:
    data = image_factory.encode(image_factory.noise((8, 8)), "PNG")
    reason = decode_fails(image_factory.write_bytes("cut.png", data[:keep]))
    assert reason.startswith(("truncated file: ", "truncated or corrupt file: starts like a PNG"))


def test_text_file_named_jpg(image_factory: ImageFactory) -> None:
    reason = decode_fails(image_factory.text_as_jpeg())
    assert reason.startswith("not an image: ")
    assert "This is a te" in reason


def test_decompression_bomb_over_the_limit_is_refused(image_factory: ImageFactory) -> None:
    limit_before = Image.MAX_IMAGE_PIXELS
    side = 20_000  # 400 MP declared in a header of a few bytes
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        reason = decode_fails(image_factory.png_bomb(side=side))
    limit = f"the safety limit of {MAX_IMAGE_PIXELS} (max_image_pixels)"
    assert reason == f"image too large: {side * side} pixels exceeds {limit}"
    assert limit_before == Image.MAX_IMAGE_PIXELS, "Pillow's global limit is restored"
    assert not [w for w in leaked if issubclass(w.category, Image.DecompressionBombWarning)]
    # a lower limit of the user's own applies too
    with pytest.raises(ImageDecodeError, match="exceeds the safety limit of 1000000"):
        decode_image(read_file(image_factory.png_bomb(side=2_000)), 16, max_pixels=1_000_000)


def test_bomb_under_the_limit_is_refused_by_its_file_size(image_factory: ImageFactory) -> None:
    """100 MP declared in a few bytes: under the pixel limit, but no real image compresses that far."""
    reason = decode_fails(image_factory.png_bomb(side=10_000))
    assert reason.startswith("image too large: 100000000 pixels in a ")
    assert "looks like a decompression bomb" in reason


@pytest.mark.slow
def test_photographs_beyond_pillows_own_limit_are_decoded(tmp_path: Path) -> None:
    """A 108 MP JPEG (draft-decoded) and a 100 MP PNG: refused by Pillow's 89 MP default, audited here."""
    gradient = Image.linear_gradient("L")
    jpeg, png = tmp_path / "aerial.jpg", tmp_path / "scan.png"
    gradient.resize((12_000, 9_000)).convert("RGB").save(jpeg, quality=60)
    gradient.resize((10_000, 10_000)).save(png, compress_level=1)
    for path, size in ((jpeg, (12_000, 9_000)), (png, (10_000, 10_000))):
        decoded = decode_image(read_file(path), 32)
        assert (decoded.stats.width, decoded.stats.height) == size
        assert decoded.pixels.shape == (32, 32, 3)
        thumb = tmp_path / f"{path.stem}-thumb.jpg"
        make_thumbnail(path, thumb, 64)  # the report's thumbnail too, under the same limit
        with Image.open(thumb) as small:
            assert max(small.size) == 64


def test_thumbnails_refuse_a_bomb(image_factory: ImageFactory, tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        make_thumbnail(image_factory.png_bomb(side=10_000), tmp_path / "t.jpg", 64)
    assert not (tmp_path / "t.jpg").exists()


def test_no_warning_filters_leak(image_factory: ImageFactory) -> None:
    filters_before = list(warnings.filters)
    paths = [
        image_factory.png_bomb(side=20_000),
        image_factory.save("ok.png", image_factory.noise((8, 8))),
    ] * 4
    datas = [read_file(p) for p in paths]

    def attempt(data: bytes) -> str:
        try:
            return decode_image(data, 16).stats.format
        except ImageDecodeError as err:
            return err.reason.split(":")[0]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(attempt, datas))
    assert results == ["image too large", "PNG"] * 4
    assert warnings.filters == filters_before


# ------------------------------------------------------------------------------------------ read_file


def test_read_file_permission_denied(image_factory: ImageFactory) -> None:
    path = image_factory.solid("locked.png")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: chmod 000 does not block reads")
        with pytest.raises(ImageDecodeError, match=r"^permission denied: "):
            read_file(path)
    finally:
        path.chmod(0o644)


def test_read_file_words_permission_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def deny(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(ImageDecodeError, match=r"^permission denied: "):
        read_file(tmp_path / "any.jpg")


def test_read_file_missing_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match=r"^file not found: "):
        read_file(tmp_path / "gone.jpg")
    with pytest.raises(ImageDecodeError, match=r"^is a folder: "):
        read_file(tmp_path)


def test_read_file_refuses_huge_files(image_factory: ImageFactory) -> None:
    path = image_factory.solid("a.png")
    with pytest.raises(ImageDecodeError, match=r"^file too large: "):
        read_file(path, max_bytes=10)


def test_non_utf8_and_unicode_file_names(image_factory: ImageFactory) -> None:
    odd = image_factory.save(b"caf\xe9 \xff.png", image_factory.noise((8, 8)))
    assert os.fsencode(odd).endswith(b"caf\xe9 \xff.png")
    assert decode_path(odd).stats.format == "PNG"
    fancy = image_factory.save("猫 фото/été 1.jpg", image_factory.noise((8, 8)))
    assert decode_path(fancy).stats.format == "JPEG"


# --------------------------------------------------------------------------------------- serialisation


def test_stats_round_trip(image_factory: ImageFactory) -> None:
    for path in (image_factory.exif_rotated_jpeg(), image_factory.png16(), image_factory.solid("s.bmp")):
        stats = decode_path(path).stats
        blob = stats.to_bytes()
        assert blob[3] == STATS_VERSION
        assert ImageStats.from_bytes(blob) == stats


def test_stats_reject_other_versions_and_damage(image_factory: ImageFactory) -> None:
    blob = decode_path(image_factory.solid("s.png")).stats.to_bytes()
    with pytest.raises(StatsFormatError, match="version"):
        ImageStats.from_bytes(blob[:3] + bytes([STATS_VERSION + 1]) + blob[4:])
    with pytest.raises(StatsFormatError, match="damaged"):
        ImageStats.from_bytes(blob[:50])
    with pytest.raises(StatsFormatError, match="damaged"):
        ImageStats.from_bytes(b"xx")
    with pytest.raises(StatsFormatError, match="damaged"):
        ImageStats.from_bytes(b"XYZ" + blob[3:])


def test_as_row_and_thumbnail(image_factory: ImageFactory) -> None:
    stats = decode_path(image_factory.exif_rotated_jpeg()).stats
    row = stats.as_row()
    assert "thumb" not in row
    assert row["width"] == 20
    assert json.loads(json.dumps(row)) == row  # scalars only
    assert len(stats.thumb) == THUMB_SIDE * THUMB_SIDE * 3
    thumb = stats.thumbnail
    assert thumb.shape == (THUMB_SIDE, THUMB_SIDE, 3)
    assert close_to(thumb[1, THUMB_SIDE // 2], RED, tol=30)
    assert close_to(thumb[-2, THUMB_SIDE // 2], BLUE, tol=30)
