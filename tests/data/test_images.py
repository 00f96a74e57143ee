"""Robust image/mask reading: modes, bit depths, EXIF orientation, corrupt files."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from poseless.data.images import load_image, load_mask, wide_to_uint8
from poseless.errors import BadItemError


def _rgb(h=12, w=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgba_png_gives_rgb_and_alpha(tmp_path):
    a = np.zeros((12, 20, 4), np.uint8)
    a[..., :3] = _rgb()
    a[3:9, 5:15, 3] = 255
    Image.fromarray(a, "RGBA").save(tmp_path / "x.png")
    img = load_image(tmp_path / "x.png")
    assert img.rgb.shape == (12, 20, 3) and img.rgb.dtype == np.uint8
    np.testing.assert_array_equal(img.rgb, a[..., :3])
    np.testing.assert_array_equal(img.alpha, a[..., 3])


def test_rgb_has_no_alpha_and_grayscale_becomes_rgb(tmp_path):
    Image.fromarray(_rgb(), "RGB").save(tmp_path / "rgb.png")
    assert load_image(tmp_path / "rgb.png").alpha is None
    g = _rgb()[..., 0]
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.rgb.shape == (12, 20, 3) and img.alpha is None
    for c in range(3):
        np.testing.assert_array_equal(img.rgb[..., c], g)
    la = Image.merge("LA", [Image.fromarray(g), Image.fromarray(255 - g)])
    la.save(tmp_path / "la.png")
    img = load_image(tmp_path / "la.png")
    np.testing.assert_array_equal(img.rgb[..., 1], g)
    np.testing.assert_array_equal(img.alpha, 255 - g)


def test_16bit_is_scaled_not_clipped(tmp_path):
    v = np.array([[0, 257, 32896, 65535] * 3] * 8, dtype=np.uint16)
    Image.fromarray(v).save(tmp_path / "d16.png")
    with Image.open(tmp_path / "d16.png") as im:
        assert im.mode.startswith("I"), im.mode  # really a 16-bit file
    img = load_image(tmp_path / "d16.png")
    np.testing.assert_array_equal(img.rgb[0, :4, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(img.rgb[..., 0], img.rgb[..., 2])


def test_wide_to_uint8_ranges():
    np.testing.assert_array_equal(
        wide_to_uint8(np.array([[0, 65535]], np.int32), "I", "x"), [[0, 255]]
    )
    np.testing.assert_array_equal(
        wide_to_uint8(np.array([[0.0, 0.5, 1.0]], np.float32), "F", "x"), [[0, 128, 255]]
    )
    with pytest.raises(BadItemError, match=r"x: 32-bit integer image .* not supported"):
        wide_to_uint8(np.array([[0, 70000]], np.int32), "I", "x")
    with pytest.raises(BadItemError, match=r"float image must hold values in \[0, 1\]"):
        wide_to_uint8(np.array([[0.0, 2.0]], np.float32), "F", "x")


def test_palette_with_and_without_transparency(tmp_path):
    rgb = Image.fromarray(_rgb(), "RGB").quantize(colors=4)
    rgb.save(tmp_path / "p.png")
    img = load_image(tmp_path / "p.png")
    assert img.alpha is None
    np.testing.assert_array_equal(img.rgb, np.asarray(rgb.convert("RGB")))

    idx = np.zeros((12, 20), np.uint8)
    idx[4:8, 5:15] = 1
    p = Image.fromarray(idx, "P")
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    p.info["transparency"] = 0
    p.save(tmp_path / "pt.png", transparency=0)
    img = load_image(tmp_path / "pt.png")
    np.testing.assert_array_equal(img.alpha, np.where(idx == 1, 255, 0))
    np.testing.assert_array_equal(img.rgb[5, 6], [0, 0, 255])


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cmyk = Image.fromarray(_rgb(), "RGB").convert("CMYK")
    cmyk.save(tmp_path / "c.jpg", quality=95)
    img = load_image(tmp_path / "c.jpg")
    assert img.rgb.shape == (12, 20, 3) and img.rgb.dtype == np.uint8 and img.alpha is None
    with Image.open(tmp_path / "c.jpg") as im:
        assert im.mode == "CMYK"
        np.testing.assert_array_equal(img.rgb, np.asarray(im.convert("RGB")))


def test_exif_orientation_is_applied(tmp_path):
    display = np.zeros((10, 30, 3), np.uint8)
    display[:, :10] = 255  # bright left third in display orientation
    stored = Image.fromarray(display).transpose(Image.Transpose.ROTATE_90)  # (30, 10) on disk
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    stored.save(tmp_path / "r.jpg", exif=exif, quality=100)
    img = load_image(tmp_path / "r.jpg")
    assert img.rgb.shape == (10, 30, 3)
    assert img.rgb[:, :8].mean() > 200 and img.rgb[:, 12:].mean() < 50


@pytest.mark.parametrize("fmt, ext", [("PNG", "png"), ("JPEG", "jpg")])
def test_truncated_files_are_bad_items(tmp_path, fmt, ext):
    path = tmp_path / f"t.{ext}"
    Image.fromarray(_rgb(64, 64), "RGB").save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadItemError, match=r"t\.(png|jpg): cannot read image") as info:
        load_image(path)
    assert info.value.path == str(path)


def test_garbage_and_missing_files(tmp_path):
    (tmp_path / "g.png").write_bytes(b"not an image at all")
    with pytest.raises(BadItemError, match=r"g\.png: cannot read image"):
        load_image(tmp_path / "g.png")
    with pytest.raises(BadItemError, match=r"nope\.png: file not found"):
        load_mask(tmp_path / "nope.png")


def test_masks_of_various_kinds(tmp_path):
    m = np.zeros((12, 20), np.uint8)
    m[2:10, 4:16] = 1
    Image.fromarray(m, "L").save(tmp_path / "01.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "01.png"), m * 255)

    soft = (np.arange(240, dtype=np.uint8).reshape(12, 20)) // 2 + 3
    Image.fromarray(soft, "L").save(tmp_path / "soft.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "soft.png"), soft)

    Image.fromarray(m.astype(bool)).save(tmp_path / "bit.png")  # mode "1"
    np.testing.assert_array_equal(load_mask(tmp_path / "bit.png"), m * 255)

    rgba = np.zeros((12, 20, 4), np.uint8)
    rgba[..., 3] = m * 200
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "a.png"), m * 200)

    Image.fromarray(m.astype(np.uint16) * 65535).save(tmp_path / "m16.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "m16.png"), m * 255)

    Image.fromarray(np.stack([m * 255] * 3, -1), "RGB").save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "rgb.png"), m * 255)


def write_png16(path, arr: np.ndarray) -> None:
    """Minimal 16-bit PNG encoder (PIL cannot write 16-bit RGB): gray, RGB or RGBA."""
    h, w = arr.shape[:2]
    colour_type = 0 if arr.ndim == 2 else {3: 2, 4: 6}[arr.shape[2]]
    raw = b"".join(b"\x00" + arr[i].astype(">u2").tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    png = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png)


def test_16bit_rgb_and_rgba_pngs_keep_their_range(tmp_path):
    a = np.zeros((8, 8, 4), np.uint16)
    a[..., 0], a[..., 1], a[..., 2], a[..., 3] = 65535, 32896, 257, 32896
    write_png16(tmp_path / "rgb16.png", a[..., :3])
    write_png16(tmp_path / "rgba16.png", a)
    np.testing.assert_array_equal(load_image(tmp_path / "rgb16.png").rgb[3, 3], [255, 128, 1])
    img = load_image(tmp_path / "rgba16.png")
    np.testing.assert_array_equal(img.rgb[0, 0], [255, 128, 1])
    np.testing.assert_array_equal(img.alpha, np.full((8, 8), 128))
    write_png16(tmp_path / "g16.png", a[..., 1])
    np.testing.assert_array_equal(load_image(tmp_path / "g16.png").rgb, np.full((8, 8, 3), 128))
