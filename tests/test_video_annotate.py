"""`modelforge video` picks what to draw from the task's declared frame_result / input_kind, never its name."""

from __future__ import annotations

from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest

from modelforge.core.errors import ConfigError
from modelforge.tasks.base import Task
from modelforge.video_annotate import _ModelView


class _Clips(Task):
    """A task no one has told `modelforge video` about: it reads 3-frame clips and answers with a label."""

    name = "clips"
    input_kind = "video"
    frame_result: ClassVar[str | None] = "label"

    def frames_per_prediction(self) -> int:
        return 3


class _Masks(Task):
    name = "masks"
    input_kind = "image"


def _predictor(task: Task, seen: list) -> SimpleNamespace:
    def predict(inputs):
        seen.extend(inputs)
        return [{"label": "left", "probability": 0.9}]

    return SimpleNamespace(task=task, recipe=SimpleNamespace(task=task.name), name="run", predict=predict)


def test_a_declared_video_task_sees_a_window_of_its_own_clip_length():
    seen: list = []
    view = _ModelView(_predictor(Task.__new__(_Clips), seen), every=1, window=None)
    assert view.window == 3
    for index in range(4):
        view.update(index, np.full((4, 4, 3), index, dtype=np.uint8))
    assert [clip.shape for clip in seen] == [(3, 4, 4, 3), (3, 4, 4, 3)]  # stacked frames, not PNG bytes
    assert view.lines == ["run: left (0.90)"] and view.counts == {"left": 2}


def test_a_task_without_a_drawable_result_is_refused_with_the_tasks_that_have_one():
    with pytest.raises(ConfigError) as error:
        _ModelView(_predictor(Task.__new__(_Masks), []), every=1, window=None)
    message = str(error.value)
    assert "is a run of task 'masks'" in message
    for name in ("detection", "image_classification", "video_classification"):
        assert name in message
    assert "segmentation" not in message and "text_classification" not in message
