import logging

import numpy as np
import pytest
from PIL import Image

import modelforge
from modelforge.core.errors import DataError
from modelforge.data.formats.image_folder import read_image_folder


def _make_folder(root, per_class=6, size=20):
    rng = np.random.default_rng(0)
    for label, value in (("dark", 40), ("light", 210)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(value, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_reads_classes_sorted_and_resizes(tmp_path):
    images = read_image_folder(_make_folder(tmp_path / "d"), channels=1, size=12)
    assert images.classes == ["dark", "light"]
    assert images.images.shape == (12, 1, 12, 12) and images.images.dtype == np.uint8
    assert sorted(np.bincount(images.labels).tolist()) == [6, 6]


def test_corrupt_file_skipped_with_count_or_fails(tmp_path, caplog):
    root = _make_folder(tmp_path / "d")
    (root / "dark" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "light" / "notes.txt").write_text("hello")
    with caplog.at_level(logging.WARNING, logger="modelforge.data"):
        images = read_image_folder(root, channels=3, size=8, on_error="skip")
    assert len(images.skipped) == 2 and len(images.images) == 12
    assert "2 file(s)" in caplog.text and "broken.png" in caplog.text
    with pytest.raises(DataError, match="broken.png"):
        read_image_folder(root, channels=3, size=8, on_error="fail")


def test_missing_folder_and_empty(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_image_folder(tmp_path / "none", 1, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        read_image_folder(tmp_path / "empty", 1, 8)


def test_user_folder_trains_end_to_end(tmp_path):
    root = _make_folder(tmp_path / "photos", per_class=10)
    run = modelforge.train(
        "image-classifier",
        [f"data.path={root}", "data.image_size=16", "train.epochs=3", "train.progress=off", "data.test_size=4"],
        run_dir=tmp_path / "run",
    )
    assert run.metrics["test_accuracy"] >= 0.75  # two trivially separable brightness classes
    prediction = modelforge.load(run.directory).predict(str(root / "light" / "1.png"))[0]
    assert prediction["label"] == "light"
