"""load_image / to_rgb / array_to_image: every mode comes back upright RGB; every broken file says why."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from imgcls.data import IMAGE_EXTENSIONS, ImageLoadError, array_to_image, load_image, to_rgb

RED = (255, 0, 0)
WHITE = (255, 255, 255)


def pixel(img: Image.Image, xy: tuple[int, int] = (0, 0)) -> tuple[int, ...]:
    return tuple(img.getpixel(xy))


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 6) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def test_extensions_are_lowercase_with_dot():
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"} <= IMAGE_EXTENSIONS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in IMAGE_EXTENSIONS)


def test_rgb_png_round_trips(tmp_path: Path, make_image):
    path = make_image(tmp_path / "a.png", seed=3, size=(12, 10))
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (12, 10)
    assert np.array_equal(np.asarray(img), np.asarray(Image.open(path)))


def test_grayscale_becomes_gray_rgb(tmp_path: Path):
    Image.new("L", (4, 4), 77).save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.mode == "RGB" and pixel(img) == (77, 77, 77)


def test_one_bit_image(tmp_path: Path):
    Image.new("1", (4, 4), 1).save(tmp_path / "b.bmp")
    assert pixel(load_image(tmp_path / "b.bmp")) == WHITE


def test_palette_with_transparency_is_composited_on_white(tmp_path: Path):
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, *RED] + [0] * (256 - 2) * 3)
    img.putpixel((0, 0), 0)  # black in the palette, but the transparent index
    img.putpixel((1, 0), 1)
    img.save(tmp_path / "p.png", transparency=0)
    assert Image.open(tmp_path / "p.png").mode == "P"
    out = load_image(tmp_path / "p.png")
    assert out.mode == "RGB"
    assert pixel(out, (0, 0)) == WHITE
    assert pixel(out, (1, 0)) == RED


def test_palette_gif_without_transparency(tmp_path: Path):
    Image.new("RGB", (3, 3), RED).convert("P").save(tmp_path / "p.gif")
    assert pixel(load_image(tmp_path / "p.gif")) == RED


def test_rgba_is_composited_on_white_not_black(tmp_path: Path):
    arr = np.zeros((1, 3, 4), np.uint8)
    arr[0, 0] = (0, 0, 0, 0)  # fully transparent black: shows the background
    arr[0, 1] = (0, 0, 0, 128)  # half-transparent black over white: mid gray
    arr[0, 2] = (*RED, 255)
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert pixel(out, (0, 0)) == WHITE
    assert close_to(pixel(out, (1, 0)), (127, 127, 127), tol=2)
    assert pixel(out, (2, 0)) == RED


def test_gray_with_alpha(tmp_path: Path):
    Image.new("LA", (2, 2), (0, 0)).save(tmp_path / "la.png")
    assert pixel(load_image(tmp_path / "la.png")) == WHITE


def test_cmyk_jpeg_keeps_its_colours(tmp_path: Path):
    Image.new("RGB", (16, 16), RED).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    out = load_image(tmp_path / "c.jpg")
    assert out.mode == "RGB" and close_to(pixel(out, (8, 8)), RED)


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path):
    Image.fromarray(np.array([[0, 32768, 65535, 257 * 100]], np.uint16)).save(tmp_path / "16.png")
    assert Image.open(tmp_path / "16.png").mode == "I;16"
    out = np.asarray(load_image(tmp_path / "16.png"))[0, :, 0]
    assert out.tolist() == [0, 128, 255, 100]


def test_16bit_big_endian_and_32bit_int_modes():
    values = np.array([[0, 32768, 65535]])
    big_endian = Image.fromarray(values.astype(">u2"))
    assert big_endian.mode == "I;16B"
    assert np.asarray(to_rgb(big_endian))[0, :, 0].tolist() == [0, 128, 255]
    as_int32 = Image.fromarray(values.astype(np.int32))  # how Pillow opens 16-bit PGM files
    assert as_int32.mode == "I"
    assert np.asarray(to_rgb(as_int32))[0, :, 0].tolist() == [0, 128, 255]


def test_float_image_in_unit_range():
    img = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
    assert img.mode == "F"
    assert np.asarray(to_rgb(img))[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path: Path):
    # Stored 40 wide x 20 high, red in the top-left corner, blue elsewhere; tag 6 means "rotate 90
    # degrees clockwise to display", so it is shown 20 x 40 with the red corner at the top right.
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :] = (0, 0, 255)
    arr[:8, :8] = RED
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    out = load_image(tmp_path / "rot.jpg")
    assert out.size == (20, 40)
    assert close_to(pixel(out, (17, 2)), RED, tol=30)
    assert close_to(pixel(out, (2, 2)), (0, 0, 255), tol=30)
    # Applying it again (to_rgb on the result) must not rotate twice.
    assert to_rgb(out).size == (20, 40)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("empty", "empty file (0 bytes)"),
        ("truncated", "truncated image"),
        ("html", "not an image (HTML page, {size} bytes)"),
    ],
)
def test_broken_files_say_why(broken_files: dict[str, Path], name: str, expected: str):
    path = broken_files[name]
    expected = expected.format(size=path.stat().st_size)
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.reason == expected
    assert info.value.path == path
    assert str(info.value) == f"{path}: {expected}"
    assert isinstance(info.value, ValueError)


def test_random_bytes_are_not_an_image(broken_files: dict[str, Path]):
    with pytest.raises(ImageLoadError, match=r"not an image \(unrecognised format, 300 bytes\)"):
        load_image(broken_files["random"])


def test_text_file_named_jpg(tmp_path: Path):
    (tmp_path / "notes.jpg").write_text("label,notes\ncat,fluffy\n向日葵,黄色\n", encoding="utf-8")
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path / "notes.jpg")
    assert info.value.reason == "not an image (text)"


def test_heic_photo_says_how_to_convert(tmp_path: Path):
    (tmp_path / "IMG_0001.jpg").write_bytes(b"\0\0\0\x18ftypheic" + bytes(100))
    with pytest.raises(
        ImageLoadError, match=r"unsupported format \(HEIC; convert it to JPEG, or install pillow-heif\)"
    ):
        load_image(tmp_path / "IMG_0001.jpg")


def test_corrupt_png_data(tmp_path: Path, make_image):
    data = bytearray(make_image(tmp_path / "ok.png", size=(64, 64)).read_bytes())
    data[80:160] = bytes(80)  # overwrite compressed pixel data inside IDAT
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(ImageLoadError, match=r"corrupt PNG: "):
        load_image(tmp_path / "bad.png")


def test_missing_file(tmp_path: Path):
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path / "nope.jpg")
    assert info.value.reason == "file not found"


def test_truncated_images_stay_errors_globally(broken_files: dict[str, Path]):
    with pytest.raises(ImageLoadError):
        load_image(broken_files["truncated"])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("side", [12, 20])  # 144 pixels: Pillow only warns; 400: Pillow raises
def test_decompression_bombs_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: int):
    Image.new("L", (side, side)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    filters_before = list(warnings.filters)
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path / "big.png")
    assert info.value.reason == "image too large (decompression bomb limit)"
    assert warnings.filters == filters_before


def test_to_rgb_accepts_open_images():
    assert to_rgb(Image.new("RGB", (2, 2), RED)).mode == "RGB"
    assert pixel(to_rgb(Image.new("RGBA", (2, 2), (0, 0, 0, 0)))) == WHITE
    assert pixel(to_rgb(Image.new("CMYK", (2, 2), (0, 255, 255, 0)))) == RED
    assert pixel(to_rgb(Image.new("La", (2, 2), (0, 0)))) == WHITE


def test_to_rgb_on_an_unloaded_file_image(tmp_path: Path, make_image):
    path = make_image(tmp_path / "x.jpg", fmt="JPEG")
    with Image.open(path) as img:
        assert to_rgb(img).size == (12, 10)


@pytest.mark.parametrize(
    ("arr", "expected"),
    [
        (np.full((3, 2), 200, np.uint8), (200, 200, 200)),
        (np.full((3, 2, 1), 200, np.uint8), (200, 200, 200)),
        (np.full((3, 2, 3), (255, 0, 0), np.uint8), RED),
        (np.zeros((3, 2, 4), np.uint8), WHITE),
        (np.full((3, 2), 65535, np.uint16), WHITE),
        (np.full((3, 2, 3), 0.5, np.float32), (128, 128, 128)),
        (np.ones((3, 2), bool), WHITE),
    ],
)
def test_array_to_image(arr: np.ndarray, expected: tuple[int, int, int]):
    img = array_to_image(arr)
    assert img.mode == "RGB" and img.size == (2, 3)
    assert pixel(img) == expected


@pytest.mark.parametrize(
    ("arr", "message"),
    [
        (np.zeros((3, 8, 8), np.uint8), "channel-first"),
        (np.zeros((8, 8, 2), np.uint8), r"shape \(H, W\)"),
        (np.zeros((2, 8, 8, 3), np.uint8), r"got \(2, 8, 8, 3\)"),
        (np.full((4, 4), 255.0), "values in 0..1"),
        (np.full((4, 4), 300, np.int64), "0..255"),
    ],
)
def test_array_to_image_rejects_what_it_cannot_read(arr: np.ndarray, message: str):
    with pytest.raises(ValueError, match=message):
        array_to_image(arr)


def test_decoding_bytes_in_memory_matches_file(tmp_path: Path, make_image):
    from imgcls.data import decode_image

    path = make_image(tmp_path / "a.webp", seed=5, fmt="WEBP")
    assert np.array_equal(np.asarray(decode_image(path.read_bytes())), np.asarray(load_image(path)))
