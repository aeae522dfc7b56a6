"""Predictor: a loaded artifact that runs ``task.preprocess → model → task.postprocess`` on raw inputs."""

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
    def predict(self, inputs: Any | list[Any]) -> list[Any]:
        """Predict for one input or a list; returns one JSON-able result per input."""
        items = inputs if isinstance(inputs, list) else [inputs]
        batch = self.task.preprocess(items)
        return self.task.postprocess(self.task.forward(self.model, batch))

    @property
    def can_explain(self) -> bool:
        """Whether ``explain`` supports this run's task (image, text and audio classification)."""
        from modelforge.explain import supports

        return supports(self.task)

    def explain(self, inputs: Any | list[Any], method: str | None = None, target: str | None = None,
                **options: Any) -> list[dict[str, Any]]:
        """Attributions for one input or a list, as JSON-able dicts (images and audio: the attribution map and a
        base64 PNG overlay; text: token/attribution pairs and an HTML snippet). ``method`` and the ``baseline``/
        ``steps`` options default to the recipe's ``explain:`` section; ``target`` (a label) to the prediction."""
        from modelforge.explain import explain

        cfg = self.recipe.explain
        if cfg is not None:
            options = {"baseline": cfg.baseline, "steps": cfg.steps, **options}
            method = method or cfg.method
        items = inputs if isinstance(inputs, list) else [inputs]
        found = explain(self.task, self.model, items, method or "integrated_gradients", target, **options)
        return [item.to_json() for item in found]

    def export(self, fmt: str = "onnx", **options: Any) -> Any:
        """Export the model (``"onnx"``), verified against PyTorch with onnxruntime; see ``artifacts.export``."""
        from modelforge.artifacts.export import export

        return export(self.directory, fmt, **options)

    def __repr__(self) -> str:
        return f"Predictor({self.name!r}, task={self.recipe.task!r}, dir={str(self.directory)!r})"
