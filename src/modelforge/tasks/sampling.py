"""How a language model picks its next tokens (``SamplingConfig``): the settings ``modelforge.api.generate`` builds
from its arguments and ``Task.generate`` of a task with the "generate" capability takes. On the tasks root, so the
API reaches it without importing a task family; the sampling itself is tasks/text/generation.py."""

from __future__ import annotations

from dataclasses import dataclass

from modelforge.core.errors import ConfigError


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen; ``temperature <= 0`` means greedy (top-k/top-p are then irrelevant)."""

    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1 (or unset), got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1] (or unset), got {self.top_p}")
