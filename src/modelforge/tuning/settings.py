"""What one study is: the settings every worker process shares, and how a worker names itself in the study."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelforge.core.tune_config import Distribution


@dataclass
class StudySettings:
    """Everything a worker process needs (picklable: ``--jobs`` starts workers with multiprocessing's spawn)."""

    recipe: dict[str, Any]  # the validated base recipe, overrides applied, without its tune section
    space: dict[str, Distribution]
    metric: str
    direction: str
    trials: int
    study_dir: Path
    storage: str
    study_name: str
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int | None = None
    timeout: float | None = None

    def fingerprint(self) -> str:
        """What makes two commands the same study: the recipe, the space and the objective."""
        space = {k: v.model_dump(mode="json", exclude_none=True) for k, v in sorted(self.space.items())}
        text = json.dumps([self.recipe, space, self.metric, self.direction], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
