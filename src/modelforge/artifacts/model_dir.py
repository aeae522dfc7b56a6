"""The model artifact: ``runs/<name>/model/`` = config.json + model.safetensors + task.json (+ tokenizer.json …).

``config.json`` holds the full recipe and the resolved model builder keywords, so ``load`` rebuilds the network
through the registry; nothing is unpickled. A LoRA-trained model (recipe ``adapter:``) is saved merged (a plain
model) or, with ``adapter.save: adapter``, as its adapter and head tensors alone; ``config.json`` then names the base
checkpoint and its sha256 under ``adapter``, and loading applies the adapter to that checkpoint and merges it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from modelforge.core.atomic import atomic_directory
from modelforge.core.config import Recipe
from modelforge.core.errors import ArtifactError, ConfigError
from modelforge.core.registry import build
from modelforge.tasks import get_task
from modelforge.tasks.base import Task
from modelforge.tasks.recipes import recipe_to_dict, resolve
from modelforge.training.checkpoint import plain_tensors

FORMAT_VERSION = 1
REQUIRED = ("config.json", "model.safetensors", "task.json")


def save_artifact(directory: Path, recipe: Recipe, task: Task, model: torch.nn.Module) -> Path:
    kwargs = task.model_kwargs()
    if kwargs.get("pretrained"):
        # the trained weights are in model.safetensors: rebuilding must not fetch the pretrained ones again
        kwargs["pretrained"] = False
    adapter, weights = _adapter_weights(recipe, model, kwargs)
    # a network that is rebuilt from more than its builder keywords (an hf checkpoint's config) says how
    kwargs.update(getattr(model, "artifact_kwargs", dict)())
    if adapter and adapter["save"] == "adapter":
        kwargs["pretrained"] = True  # the base weights come from the checkpoint, the adapter from the artifact
    config = {
        "format_version": FORMAT_VERSION,
        "recipe": recipe_to_dict(recipe),
        "model": {"name": recipe.model.name, "kwargs": kwargs},
        **({"adapter": adapter} if adapter else {}),
    }
    with atomic_directory(directory) as tmp:
        if isinstance(weights, dict):
            save_file(plain_tensors(weights), str(tmp / "model.safetensors"))
        else:
            save_model(weights, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "task.json").write_text(json.dumps({"task": recipe.task, **task.state()}, indent=2) + "\n")
        files = {**getattr(model, "artifact_files", dict)(), **task.extra_files()}
        for name, data in files.items():
            (tmp / name).write_bytes(data)
    return directory


def _adapter_weights(recipe: Recipe, model: torch.nn.Module,
                     kwargs: dict[str, Any]) -> tuple[dict[str, Any] | None, torch.nn.Module | dict]:
    """(the artifact's ``adapter`` record, what goes into model.safetensors) for a LoRA-trained model: the merged
    model, or the adapter and head tensors alone with the base checkpoint's path and sha256."""
    from modelforge.training import lora

    if recipe.adapter is None or not lora.has_lora(model):
        return None, model
    record = {"method": recipe.adapter.method, "save": recipe.adapter.save, "targets": list(model.lora_targets)}
    if recipe.adapter.save == "merged":
        return record, lora.merged(model)
    from modelforge.models.hf_auto import weights_sha256

    base = str(Path(kwargs["checkpoint"]).expanduser().resolve())  # loadable from any working directory
    kwargs["checkpoint"] = base
    record.update(base_checkpoint=base, base_sha256=weights_sha256(base))
    return record, lora.trainable_state(model)


def _check_base(record: dict[str, Any], directory: Path) -> None:
    """An adapter-only artifact needs the very checkpoint it was trained on: there, and with the same sha256."""
    from modelforge.models.hf_auto import weights_sha256

    base = record.get("base_checkpoint")
    if not base or not Path(base).is_dir():
        raise ArtifactError(f"{directory}: the adapter's base checkpoint {base} is missing; restore it there")
    if weights_sha256(base) != record.get("base_sha256"):
        raise ArtifactError(f"{directory}: the base checkpoint {base} changed since the adapter was trained "
                            f"(sha256 differs from {str(record.get('base_sha256'))[:12]}…); the adapter needs the "
                            "same weights")


def _load_adapter(model: torch.nn.Module, recipe: Recipe, record: dict[str, Any], directory: Path) -> torch.nn.Module:
    """The base model (already built from its checkpoint) with the artifact's adapter applied, then merged."""
    from modelforge.training import lora

    lora.apply_lora(model, recipe.adapter, record["targets"])
    try:
        tensors = load_file(str(directory / "model.safetensors"))
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{directory / 'model.safetensors'} is corrupt or truncated ({exc})") from None
    expected = set(lora.trainable_state(model))
    if set(tensors) != expected:
        odd = sorted(set(tensors) ^ expected)[:3]
        raise ArtifactError(f"{directory / 'model.safetensors'} does not hold this adapter's tensors (e.g. {odd})")
    model.load_state_dict(tensors, strict=False)
    return lora.merged(model, in_place=True)


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


def load_artifact(path: Path, quantized: bool = False) -> LoadedArtifact:
    """The run's model, task and recipe; ``quantized``: with int8 Linear layers as ``modelforge quantize`` measured
    them (``artifacts/quantize.py``)."""
    directory = model_dir_of(path)
    config = _read_json(directory / "config.json")
    task_state = _read_json(directory / "task.json")
    adapter = config.get("adapter")
    adapter_only = isinstance(adapter, dict) and adapter.get("save") == "adapter"
    if adapter_only:
        _check_base(adapter, directory)
    try:
        recipe = resolve(config["recipe"], source=str(directory / "config.json"))
        model_spec = config["model"]
        model = build("model", model_spec["name"], **model_spec["kwargs"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise ArtifactError(f"{directory / 'config.json'} is not a modelforge model config ({exc})") from None
    task_state.pop("task", None)
    task = get_task(recipe.task)(recipe, state=task_state)
    task.artifact_dir = directory
    if adapter_only:
        model = _load_adapter(model, recipe, adapter, directory)
    else:
        try:
            load_model(model, str(directory / "model.safetensors"), strict=True)
        except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
            raise ArtifactError(f"{directory / 'model.safetensors'} is corrupt or truncated ({exc})") from None
    model.eval()
    if quantized:
        from modelforge.artifacts.int8 import quantize_linear, read_settings

        read_settings(directory)  # refuses a run that was never quantized and measured
        model = quantize_linear(model)
    return LoadedArtifact(directory, recipe, task, model)
