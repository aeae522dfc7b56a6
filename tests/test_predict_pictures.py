"""`modelforge predict` writes the pictures a task declares (commands/predict.py); the task only draws them."""

from __future__ import annotations

import base64
from pathlib import Path

from modelforge.commands.predict import save_pictures
from modelforge.tasks.base import PredictionPicture, Task


class _Painter(Task):
    """A task whose results carry one inline picture and get one drawn overlay."""

    name = "painter"

    def __init__(self, artifact_dir: Path | None):
        self.artifact_dir = artifact_dir

    def prediction_pictures(self, item, result):
        return [*super().prediction_pictures(item, result), PredictionPicture("picture", "pred", b"drawn")]


def test_pictures_go_beside_an_input_file_and_replace_the_inline_field(tmp_path):
    source = tmp_path / "cat.png"
    source.write_bytes(b"input")
    result = {"mask_png": base64.b64encode(b"mask").decode(), "score": 0.5}
    saved = save_pictures(_Painter(tmp_path / "run" / "model"), str(source), result, None, 0)
    assert saved == {"score": 0.5, "mask": str(tmp_path / "cat.mask.png"), "picture": str(tmp_path / "cat.pred.png")}
    assert (tmp_path / "cat.mask.png").read_bytes() == b"mask" and (tmp_path / "cat.pred.png").read_bytes() == b"drawn"


def test_a_non_file_input_names_its_pictures_itself_or_by_index_under_the_run(tmp_path):
    task = _Painter(tmp_path / "run" / "model")
    assert save_pictures(task, "7", {}, None, 0) == {"picture": str(tmp_path / "run" / "predictions" / "7.pred.png")}
    long_text = "not a plain word " * 3
    out = tmp_path / "out"
    assert save_pictures(task, long_text, {}, out, 3) == {"picture": str(out / "input-3.pred.png")}


def test_a_result_without_pictures_is_left_alone(tmp_path):
    assert save_pictures(Task.__new__(Task), "x", {"label": "cat"}, tmp_path, 0) == {"label": "cat"}
    assert save_pictures(Task.__new__(Task), "x", ["text"], tmp_path, 0) == ["text"]
    assert list(tmp_path.iterdir()) == []
