"""ExplainingPredictor: a Predictor that also explains (what ``modelforge.load`` returns and the server runs)."""

from __future__ import annotations

from typing import Any

from modelforge.artifacts.predictor import Predictor
from modelforge.explain import explain, supports


class ExplainingPredictor(Predictor):
    @property
    def can_explain(self) -> bool:
        """Whether ``explain`` supports this run's task (image, text and audio classification)."""
        return supports(self.task)

    def explain(self, inputs: Any | list[Any], method: str | None = None, target: str | None = None,
                **options: Any) -> list[dict[str, Any]]:
        """Attributions for one input or a list, as JSON-able dicts (images and audio: the attribution map and a
        base64 PNG overlay; text: token/attribution pairs and an HTML snippet). ``method`` and the ``baseline``/
        ``steps`` options default to the recipe's ``explain:`` section; ``target`` (a label) to the prediction."""
        cfg = self.recipe.explain
        if cfg is not None:
            options = {"baseline": cfg.baseline, "steps": cfg.steps, **options}
            method = method or cfg.method
        items = inputs if isinstance(inputs, list) else [inputs]
        found = explain(self.task, self.model, items, method or "integrated_gradients", target, **options)
        return [item.to_json() for item in found]
