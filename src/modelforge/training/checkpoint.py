"""Checkpoints: ``checkpoints/step-NNNNNNN/`` = model.safetensors + optimizer.safetensors + state.json.

Each checkpoint is written into a temporary directory and renamed into place, so a ``step-*`` directory is always
complete; a run killed mid-write leaves only a ``.step-*.tmp-*`` directory that the next resume removes.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from modelforge.core.atomic import atomic_directory
from modelforge.core.errors import ArtifactError

_STEP_DIR = re.compile(r"^step-(\d+)$")


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state dict into tensors (for safetensors) and JSON-able rest."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    other: dict[str, dict[str, Any]] = {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().contiguous().clone()
            else:
                other.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "other": other}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, slots in meta["other"].items():
        state.setdefault(int(index), {}).update(slots)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    directory: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
    keep: int = 2,
) -> Path:
    target = directory / f"step-{step:07d}"
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    with atomic_directory(target) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        for name, tensors in (extra_tensors or {}).items():
            flat = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
            save_file(flat, str(tmp / f"{name}.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**state, "step": step, "optimizer": opt_meta}))
    for old in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def clean_partial(directory: Path) -> None:
    """Remove temporary directories left by a process killed while writing a checkpoint."""
    if directory.is_dir():
        for leftover in directory.glob(".step-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """Load weights and optimiser state in place; return state.json and any extra tensor files by name."""
    try:
        state = json.loads((path / "state.json").read_text())
        load_model(model, str(path / "model.safetensors"), strict=True)
        optimizer_from_flat(optimizer, load_file(str(path / "optimizer.safetensors")), state.pop("optimizer"))
        extras = {
            p.stem: load_file(str(p))
            for p in path.glob("*.safetensors")
            if p.stem not in ("model", "optimizer")
        }
    except (OSError, json.JSONDecodeError, SafetensorError, KeyError, RuntimeError, ValueError) as exc:
        raise ArtifactError(f"checkpoint {path} cannot be loaded: {exc}") from None
    return state, extras
