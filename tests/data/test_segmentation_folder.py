import logging

import numpy as np
import pytest
from PIL import Image

from modelforge.core.errors import DataError
from modelforge.data.formats.segmentation_folder import (
    SegmentationDataset,
    read_mask,
    read_segmentation_folder,
    write_segmentation_folder,
)
from modelforge.data.transforms import Compose, RandomHorizontalFlip


def _pairs(count: int = 3, size: tuple[int, int] = (12, 16)):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]
    masks = [rng.integers(0, 3, size).astype(np.uint8) for _ in range(count)]
    return images, masks


def test_write_then_read_round_trip(tmp_path):
    images, masks = _pairs()
    write_segmentation_folder(tmp_path, images, masks, class_names=["background", "road", "car"])
    assert (tmp_path / "00000_mask.png").is_file() and Image.open(tmp_path / "00000_mask.png").mode == "P"
    folder = read_segmentation_folder(tmp_path)
    assert folder.class_names == ["background", "road", "car"] and len(folder.pairs) == 3
    back_images, back_masks = folder.arrays()
    for a, b in zip(images + masks, back_images + back_masks, strict=True):
        assert np.array_equal(a, b)
    sample = SegmentationDataset(folder, Compose([RandomHorizontalFlip(p=1.0)]))[1]
    assert sample.image.shape == (3, 12, 16) and sample.mask.dtype.is_floating_point is False
    assert np.array_equal(sample.mask.numpy(), masks[1][:, ::-1])


def test_mask_size_mismatch_is_reported_by_path(tmp_path, caplog):
    images, masks = _pairs()
    write_segmentation_folder(tmp_path, images, masks)
    Image.fromarray(np.zeros((12, 15), dtype=np.uint8)).save(tmp_path / "00001_mask.png")
    bad = tmp_path / "00001_mask.png"
    with pytest.raises(DataError, match=rf"{bad}: mask is 15x12 but its image 00001\.png is 16x12"):
        read_segmentation_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="modelforge.data"):
        folder = read_segmentation_folder(tmp_path, on_error="skip")
    assert [p[0].name for p in folder.pairs] == ["00000.png", "00002.png"]
    assert folder.skipped == [(str(bad), "mask is 15x12 but its image 00001.png is 16x12")]
    assert "1 file(s)" in caplog.text


def test_other_pair_problems(tmp_path):
    images, masks = _pairs(5)
    masks = [(m > 0).astype(np.uint8) for m in masks]
    masks[4][0, 0] = 2  # classes.txt below names 2 classes
    write_segmentation_folder(tmp_path, images, masks, class_names=["a", "b"])
    (tmp_path / "00001_mask.png").unlink()
    Image.fromarray(images[0]).save(tmp_path / "00002_mask.png")  # a colour mask
    Image.fromarray(masks[0]).save(tmp_path / "orphan_mask.png")
    (tmp_path / "00003.png").write_bytes(b"not a png")
    folder = read_segmentation_folder(tmp_path, on_error="skip")
    assert [p[0].name for p in folder.pairs] == ["00000.png"]
    colour = "a mask must be single-channel class indices (mode L, P or I), found mode RGB"
    assert dict(folder.skipped) == {
        str(tmp_path / "orphan_mask.png"): "mask without an image of the same name",
        str(tmp_path / "00001.png"): "has no mask (expected 00001_mask.png next to it)",
        str(tmp_path / "00002_mask.png"): colour,
        str(tmp_path / "00003.png"): "not an image file Pillow can read",
        str(tmp_path / "00004_mask.png"): "holds class index 2 but there are only 2 classes",
    }
    assert len(read_segmentation_folder(tmp_path, on_error="skip", num_classes=3).pairs) == 2
    with pytest.raises(DataError, match=r"orphan_mask\.png: mask without an image"):
        read_segmentation_folder(tmp_path)
    with pytest.raises(DataError, match="single-channel"):
        read_mask(tmp_path / "00002_mask.png")
