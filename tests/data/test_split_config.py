"""The shared split fields (data/split_config.py): one definition, per-task defaults, the bounds kept."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modelforge.data.split_config import FractionSplitConfig, HeldOutSplitConfig, SplitConfig
from modelforge.tasks import get_task


def data_config(task: str):
    return get_task(task).DataConfig


@pytest.mark.parametrize(
    "task, field, default",
    [
        ("image_classification", "val_size", 0.1),
        ("autoencoding", "val_size", 5000),
        ("image_generation", "val_size", 1000),
        ("detection", "test_size", 0.1),
        ("segmentation", "test_size", 0.1),
        ("video_classification", "test_size", 0.2),
        ("text_classification", "val_fraction", 0.1),
        ("translation", "val_fraction", 0.05),
        ("summarization", "val_fraction", 0.1),
        ("word_embeddings", "val_fraction", 0.02),
        ("language_modeling", "test_fraction", 0.0),
    ],
)
def test_a_task_overrides_only_the_default(task, field, default):
    cls = data_config(task)
    assert cls().model_dump()[field] == default
    shared = {**FractionSplitConfig.model_fields, **HeldOutSplitConfig.model_fields}
    if field in shared:  # the description and bounds come from the one shared definition
        assert cls.model_fields[field].description == shared[field].description
        assert cls.model_fields[field].metadata == shared[field].metadata


@pytest.mark.parametrize(
    "task, values",
    [
        ("image_classification", {"limit": 0}),
        ("detection", {"val_size": -1}),
        ("text_classification", {"val_fraction": 1.0}),
        ("translation", {"limit": 0}),
        ("speech_recognition", {"val_size": 1.0}),  # a share only, not a count
        ("language_modeling", {"val_fraction": 0.0}),  # needs validation text
        ("language_modeling", {"limit": 99}),  # characters
        ("word_embeddings", {"limit": 99}),
    ],
)
def test_the_bounds_still_hold(task, values):
    with pytest.raises(ValidationError):
        data_config(task)(**values)


def test_which_tasks_share_which_base():
    assert issubclass(data_config("detection"), HeldOutSplitConfig)
    assert issubclass(data_config("summarization"), FractionSplitConfig)
    assert issubclass(data_config("image_generation"), SplitConfig)
    assert "test_size" not in data_config("image_generation").model_fields
