"""PNGs that need no conversion are decoded by OpenCV (the fast path DataLoader workers rely on); their pixels must
equal Pillow's exactly, and every other file must take Pillow's path with its messages."""

import numpy as np
import pytest
from PIL import Image

from modelforge.core.errors import DataError
from modelforge.data.formats import image_folder
from modelforge.data.formats.image_folder import decode_image

pytest.importorskip("cv2", reason="OpenCV (the media extra) gives the fast path; without it Pillow decodes all")

RNG = np.random.default_rng(7)


def _pillow_only(path, channels, size, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(image_folder, "_decode_png_as_is", lambda *a: None)
        return decode_image(path, channels, size)


@pytest.mark.parametrize(("name", "pixels", "mode", "channels"), [
    ("grey.png", RNG.integers(0, 256, (10, 10), dtype=np.uint8), None, 1),
    ("rgb.png", RNG.integers(0, 256, (10, 10, 3), dtype=np.uint8), None, 3),
    ("palette.png", RNG.integers(0, 256, (10, 10, 3), dtype=np.uint8), "P", 3),
    ("bilevel.png", RNG.integers(0, 2, (10, 10), dtype=np.uint8) * 255, "1", 1),
])
def test_fast_path_pixels_equal_pillows(tmp_path, monkeypatch, name, pixels, mode, channels):
    image = Image.fromarray(pixels)
    (image.convert(mode) if mode else image).save(tmp_path / name)
    raw = (tmp_path / name).read_bytes()
    assert image_folder._decode_png_as_is(raw, channels, 10) is not None  # the fast path was taken
    fast = decode_image(tmp_path / name, channels, 10)
    slow = _pillow_only(tmp_path / name, channels, 10, monkeypatch)
    assert fast.dtype == np.uint8 and fast.shape == (channels, 10, 10) and fast.flags.c_contiguous
    np.testing.assert_array_equal(fast, slow)


@pytest.mark.parametrize(("name", "pixels", "channels", "size"), [
    ("rgba.png", RNG.integers(0, 256, (10, 10, 4), dtype=np.uint8), 3, 10),   # alpha: Pillow drops it
    ("deep.png", RNG.integers(0, 65536, (10, 10), dtype=np.uint16), 1, 10),    # 16 bits: Pillow scales
    ("rgb_as_grey.png", RNG.integers(0, 256, (10, 10, 3), dtype=np.uint8), 1, 10),  # a conversion
    ("grey_resized.png", RNG.integers(0, 256, (10, 10), dtype=np.uint8), 1, 8),     # a resize
    ("photo.jpg", RNG.integers(0, 256, (10, 10, 3), dtype=np.uint8), 3, 10),  # not a PNG
])
def test_files_that_need_pillow_take_its_path(tmp_path, monkeypatch, name, pixels, channels, size):
    Image.fromarray(pixels).save(tmp_path / name)
    assert image_folder._decode_png_as_is((tmp_path / name).read_bytes(), channels, size) is None
    np.testing.assert_array_equal(decode_image(tmp_path / name, channels, size),
                                  _pillow_only(tmp_path / name, channels, size, monkeypatch))


def test_a_truncated_png_keeps_pillows_one_line_error(tmp_path):
    Image.fromarray(RNG.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.png: not a readable image"):
        decode_image(tmp_path / "cut.png", 3, 10)


def test_a_huge_or_truncated_png_never_reaches_opencv(tmp_path, monkeypatch):
    """A decompression bomb's header (or a cut file) goes to Pillow, which refuses it in one line; OpenCV would
    allocate the bomb's pixels and print libpng's complaint on stderr."""
    import cv2

    Image.fromarray(RNG.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    huge = data[:16] + (20_000).to_bytes(4, "big") * 2 + data[24:]  # IHDR claims 20,000²
    (tmp_path / "huge.png").write_bytes(huge)
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("OpenCV was given the file"))
    for name in ("huge.png", "cut.png"):  # asked at the size the model wants, as predict and training do
        with pytest.raises(DataError, match=f"{name}: (not a readable image|refused by Pillow)"):
            decode_image(tmp_path / name, 3, 10)


def test_a_file_is_read_whole_whatever_its_size(tmp_path):
    for size in (0, 1, 5_000, 3_000_000):
        data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
        (tmp_path / f"{size}.bin").write_bytes(data)
        assert image_folder._read_file(tmp_path / f"{size}.bin") == data
        assert image_folder._read_file(bytes(tmp_path / f"{size}.bin")) == data
    assert image_folder._read_file(tmp_path / "missing.png") is None
