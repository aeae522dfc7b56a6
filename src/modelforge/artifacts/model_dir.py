"""The model artifact: ``runs/<name>/model/`` = config.json + model.safetensors + task.json (+ tokenizer.json …).

``config.json`` holds the full recipe and the resolved model builder keywords, so ``load`` rebuilds the network
through the registry; nothing is unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from modelforge.core.atomic import atomic_directory
from modelforge.core.config import Recipe
from modelforge.core.errors import ArtifactError, ConfigError
from modelforge.core.registry import build
from modelforge.tasks import get_task
from modelforge.tasks.base import Task
from modelforge.tasks.recipes import recipe_to_dict, resolve

FORMAT_VERSION = 1
REQUIRED = ("config.json", "model.safetensors", "task.json")


def save_artifact(directory: Path, recipe: Recipe, task: Task, model: torch.nn.Module) -> Path:
    kwargs = task.model_kwargs()
    if kwargs.get("pretrained"):
        # the trained weights are in model.safetensors: rebuilding must not fetch the pretrained ones again
        kwargs["pretrained"] = False
    config = {
        "format_version": FORMAT_VERSION,
        "recipe": recipe_to_dict(recipe),
        "model": {"name": recipe.model.name, "kwargs": kwargs},
    }
    with atomic_directory(directory) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "task.json").write_text(json.dumps({"task": recipe.task, **task.state()}, indent=2) + "\n")
        for name, data in task.extra_files().items():
            (tmp / name).write_bytes(data)
    return directory


def model_dir_of(path: Path) -> Path:
    """Accept a run directory or its ``model/`` directory."""
    path = Path(path)
    candidate = path / "model" if (path / "model").is_dir() else path
    if not candidate.is_dir():
        raise ArtifactError(f"{path} is not a run or model directory (no {path}/model/)")
    for name in REQUIRED:
        if not (candidate / name).is_file():
            raise ArtifactError(f"{candidate / name} is missing; the run did not finish or the artifact is incomplete")
    return candidate


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is corrupt or truncated ({exc})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} is corrupt: expected a JSON object")
    return data


@dataclass
class LoadedArtifact:
    directory: Path
    recipe: Recipe
    task: Task
    model: torch.nn.Module


def load_artifact(path: Path) -> LoadedArtifact:
    directory = model_dir_of(path)
    config = _read_json(directory / "config.json")
    task_state = _read_json(directory / "task.json")
    try:
        recipe = resolve(config["recipe"], source=str(directory / "config.json"))
        model_spec = config["model"]
        model = build("model", model_spec["name"], **model_spec["kwargs"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise ArtifactError(f"{directory / 'config.json'} is not a modelforge model config ({exc})") from None
    task_state.pop("task", None)
    task = get_task(recipe.task)(recipe, state=task_state)
    task.artifact_dir = directory
    try:
        load_model(model, str(directory / "model.safetensors"), strict=True)
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise ArtifactError(f"{directory / 'model.safetensors'} is corrupt or truncated ({exc})") from None
    model.eval()
    return LoadedArtifact(directory, recipe, task, model)
