"""The Trainer's callback hooks: a short fixed list, each called with the trainer and a small payload."""

from __future__ import annotations

from typing import Any


class Callback:
    def on_train_start(self, trainer: Any) -> None: ...

    def on_step_end(self, trainer: Any, logs: dict[str, float]) -> None: ...

    def on_eval_end(self, trainer: Any, metrics: dict[str, Any]) -> None: ...

    def on_train_end(self, trainer: Any) -> None: ...
