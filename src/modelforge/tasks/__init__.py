"""Tasks, registered through ``core.registry`` (``@register("task", "image_classification")`` on the class).

A task lives in ``tasks/<family>/<name>.py``; ``get_task(name)`` imports only that module (importing a task pulls in
torch and the family's libraries), and ``task_names()`` imports every family to list them all.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from modelforge.core.errors import ConfigError
from modelforge.core.registry import entries, find

FAMILIES = ("vision", "text", "seq2seq", "speech", "embeddings", "multimodal")
_HERE = Path(__file__).resolve().parent


def load_all() -> None:
    """Import every task module of every family, so that each registers itself (the registry's provider)."""
    for family in FAMILIES:
        for path in sorted((_HERE / family).glob("*.py")):
            if "@register(\"task\"" in path.read_text(encoding="utf-8"):
                importlib.import_module(f"{__name__}.{family}.{path.stem}")


def task_names() -> list[str]:
    return list(entries("task"))


def get_task(name: str) -> type:
    """The Task class registered as ``name`` (a recipe's ``task:``); unknown names fail with the valid ones."""
    for family in FAMILIES:  # the module named after the task: import just it
        if (_HERE / family / f"{name}.py").is_file():
            importlib.import_module(f"{__name__}.{family}.{name}")
            break
    entry = find("task", name)
    if entry is not None:
        return entry.builder
    import difflib

    close = difflib.get_close_matches(name, task_names(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown task {name!r}.{hint} Valid tasks: {', '.join(task_names())}")
