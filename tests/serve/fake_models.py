"""A fake text model for the server's limits: no torch work, a chosen delay per batch and per explanation, and a
record of every batch it ran (which inputs reached the model)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from modelforge.serve.app import ServedModel, ServeSettings, create_app
from modelforge.serve.batching import BatchSettings, MicroBatcher


class FakeTextModel:
    """Stands in for a ``Predictor``: ``predict`` echoes each text after ``delay`` seconds, ``explain`` takes
    ``explain_delay`` seconds."""

    def __init__(self, delay: float = 0.0, explain_delay: float = 0.0):
        self.delay, self.explain_delay = delay, explain_delay
        self.task = SimpleNamespace(input_kind="text", capabilities=frozenset(), input_spec=lambda: {"kind": "text"},
                                    query_options={},
                                    state=lambda: {"labels": ["a", "b"]})
        self.recipe = SimpleNamespace(task="text_classification", name="fake", model=SimpleNamespace(name="fake"))
        self.batches: list[list[str]] = []
        self.lock = threading.Lock()

    def predict(self, items: list) -> list:
        with self.lock:
            self.batches.append([str(item) for item in items])
        time.sleep(self.delay)
        return [{"label": "a", "text": str(item)} for item in items]

    def explain(self, items: list, **options) -> list:
        time.sleep(self.explain_delay)
        return [{"tokens": str(item).split()} for item in items]

    def seen(self) -> list[str]:
        with self.lock:
            return [item for batch in self.batches for item in batch]


def fake_app(model: FakeTextModel, batch: BatchSettings | None = None, **settings):
    """The real app over one fake model named ``fake``."""
    batch = batch or BatchSettings(max_batch_size=1, max_wait_ms=0)
    served = ServedModel("fake", model, MicroBatcher(model.predict, batch, "fake"))
    return create_app({"fake": served}, ServeSettings(batch=batch, **settings))
