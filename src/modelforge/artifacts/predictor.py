"""Predictor: a loaded artifact that runs ``task.preprocess → model → task.postprocess`` on raw inputs.

Explanations are a floor higher: ``explain.predictor.ExplainingPredictor`` adds them (what ``modelforge.load`` and the
server hand out)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from modelforge.artifacts.model_dir import load_artifact


class Predictor:
    def __init__(self, path: str | Path, quantized: bool = False):
        loaded = load_artifact(Path(path), quantized=quantized)
        self.directory, self.recipe, self.task, self.model = loaded.directory, loaded.recipe, loaded.task, loaded.model

    @property
    def name(self) -> str:
        return self.recipe.name

    @torch.inference_mode()
    def predict(self, inputs: Any | list[Any], **options: Any) -> list[Any]:
        """Predict for one input or a list; returns one JSON-able result per input. ``options`` are the task's
        per-call options (``Task.call_options``: a decoding, a beam width, a generation cap …)."""
        self.task.check_call_options(options)
        items = inputs if isinstance(inputs, list) else [inputs]
        batch = self.task.preprocess(items)
        return self.task.postprocess(self.task.forward(self.model, batch, **options))

    def export(self, fmt: str = "onnx", **options: Any) -> Any:
        """Export the model (``"onnx"``), verified against PyTorch with onnxruntime; see ``artifacts.export``."""
        from modelforge.artifacts.export import export

        return export(self.directory, fmt, **options)

    def __repr__(self) -> str:
        return f"Predictor({self.name!r}, task={self.recipe.task!r}, dir={str(self.directory)!r})"
