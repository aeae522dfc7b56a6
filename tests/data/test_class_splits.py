"""Data that cannot train a classifier is refused before a model is built, for every classifier task."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import modelforge
from modelforge.core.errors import DataError
from modelforge.data.class_splits import check_classifier_splits
from modelforge.data.splits import holdout_split

BAG = {"name": "bag_of_embeddings", "embed_dim": 4}
TINY = {"model.name": "mlp", "model.hidden": [8], "train.max_steps": 1, "train.progress": "off"}


def _overrides(**extra):
    return [f"{k}={v}" for k, v in {**TINY, **extra}.items()]


def _image_folder(root, classes, per_class=10):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((8, 8, 3), 20 * i + 60 * c, np.uint8)).save(root / name / f"{i}.png")
    return root


def test_the_shared_check():
    check_classifier_splits({"train": [0, 1, 0], "val": [1], "test": np.array([0])}, ["a", "b"], "x")
    with pytest.raises(DataError, match=r"x: a classifier needs at least 2 classes, found 1 \('cat'\)"):
        check_classifier_splits({"train": [0, 0]}, ["cat"], "x")
    with pytest.raises(DataError, match="the val split is empty"):
        check_classifier_splits({"train": [0, 1], "val": []}, ["a", "b"], "x")
    with pytest.raises(DataError, match="every training example has the class 'b'"):
        check_classifier_splits({"train": np.array([1, 1])}, ["a", "b"], "x")


@pytest.mark.parametrize("size", [1.5, 2.25])
def test_a_size_above_one_must_be_a_whole_count(size):
    with pytest.raises(DataError, match=f"{size:g}.*neither a share"):
        holdout_split(50, size, 0)


def test_a_share_that_holds_out_nothing_is_refused():
    with pytest.raises(DataError, match="holds out none of 50"):
        holdout_split(50, 0.001, 0)
    keep, held = holdout_split(50, 0, 0)  # 0: no such split asked for
    assert len(keep) == 50 and len(held) == 0


def test_one_class_image_folder_is_refused(tmp_path):
    root = _image_folder(tmp_path / "images", ["cat"])
    with pytest.raises(DataError, match="at least 2 classes, found 1 \\('cat'\\)"):
        modelforge.train("digits-cnn", _overrides(**{"data.source": "folder", "data.path": root}),
                         run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_val_size_one_and_a_half_is_refused(tmp_path):
    with pytest.raises(DataError, match="data.val_size"):
        modelforge.train("digits-cnn", _overrides(**{"data.val_size": 1.5}), run_dir=tmp_path / "run")


@pytest.mark.parametrize("extra", [{"data.test_size": 0}, {"data.val_size": 0, "data.test_size": 0}])
def test_size_zero_means_no_such_split(tmp_path, extra):
    run = modelforge.train("digits-cnn", _overrides(**{"data.limit": 64, **extra}), run_dir=tmp_path / "run")
    assert "test_size" not in run.summary["data"] and run.metrics == {}


def test_single_class_training_split_is_refused(tmp_path):
    root = _image_folder(tmp_path / "images", ["a", "b"])
    # limit keeps the first 2 training images, which are of class "a" (images are read class by class)
    with pytest.raises(DataError, match="every training example has the class 'a'"):
        modelforge.train("digits-cnn", _overrides(**{"data.source": "folder", "data.path": root, "data.limit": 2,
                                                    "data.val_size": 0, "data.test_size": 0}),
                         run_dir=tmp_path / "run")


def test_text_classifier_with_one_label_is_refused(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("text,label\n" + "".join(f"good film {i},pos\n" for i in range(20)))
    with pytest.raises(DataError, match="at least 2 classes, found 1 \\('pos'\\)"):
        modelforge.train({"name": "t", "task": "text_classification",
                          "data": {"source": "file", "path": str(table), "text_column": "text",
                                   "label_column": "label"},
                          "model": BAG, "train": {"max_steps": 1, "progress": "off"}},
                         run_dir=tmp_path / "run")


def test_text_classifier_with_an_empty_held_out_split_is_refused(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("text,label\n" + "".join(f"film number {i},{'pos' if i % 2 else 'neg'}\n" for i in range(3)))
    with pytest.raises(DataError, match="split is empty"):
        modelforge.train({"name": "t", "task": "text_classification",
                          "data": {"source": "file", "path": str(table), "val_fraction": 0.01},
                          "model": BAG, "train": {"max_steps": 1, "progress": "off"}},
                         run_dir=tmp_path / "run")
