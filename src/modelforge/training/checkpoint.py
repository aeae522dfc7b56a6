"""Checkpoints: ``checkpoints/step-NNNNNNN/`` = model.safetensors + optimizer.safetensors + state.json.

A multi-optimiser task (a GAN) passes ``{"optimizers": {group: state}}`` as the optimiser state; each group is then
written to ``optimizer-<group>.safetensors``, and single-optimiser checkpoints keep their one ``optimizer.safetensors``.

Model and optimiser states are full (unsharded) state dicts keyed by parameter name, so a checkpoint written under
any world size or strategy loads in a single process. Each checkpoint is written into a temporary directory and
renamed into place, so a ``step-*`` directory is always complete; a run killed mid-write leaves only a
``.step-*.tmp-*`` directory that the next resume removes.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from modelforge.core.atomic import atomic_directory
from modelforge.core.errors import ArtifactError

_STEP_DIR = re.compile(r"^step-(\d+)$")


def plain_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Independent contiguous CPU copies: safetensors refuses tensors that share storage (tied weights)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def optimizer_to_flat(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state dict into tensors (for safetensors) and the JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    other: dict[str, dict[str, Any]] = {}
    for key, slots in state["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{key}.{name}"] = value
            else:
                other.setdefault(str(key), {})[name] = value
    return plain_tensors(tensors), {"param_groups": state["param_groups"], "other": other}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[Any, dict[str, Any]] = {}
    for flat, value in tensors.items():
        key, name = flat.rsplit(".", 1)  # keys are parameter names (with dots); slot names have none
        state.setdefault(key, {})[name] = value
    for key, slots in meta["other"].items():
        state.setdefault(key, {}).update(slots)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    directory: Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    state: dict[str, Any],
    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
    keep: int = 2,
) -> Path:
    target = directory / f"step-{step:07d}"
    groups = optimizer_state.get("optimizers")  # {group: state} of a multi-optimiser task, else one state
    flat = ({f"optimizer-{g}": optimizer_to_flat(s) for g, s in groups.items()} if groups
            else {"optimizer": optimizer_to_flat(optimizer_state)})
    meta = ({"optimizers": {g: flat[f"optimizer-{g}"][1] for g in groups}} if groups
            else {"optimizer": flat["optimizer"][1]})
    with atomic_directory(target) as tmp:
        save_file(plain_tensors(model_state), str(tmp / "model.safetensors"))
        for stem, (opt_tensors, _) in flat.items():
            save_file(opt_tensors, str(tmp / f"{stem}.safetensors"))
        for name, tensors in (extra_tensors or {}).items():
            save_file(plain_tensors(tensors), str(tmp / f"{name}.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**state, "step": step, **meta}))
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


def read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any], dict[str, dict]]:
    """(state.json, model state, optimiser state, extra tensor files by name) of one checkpoint directory."""
    try:
        state = json.loads((path / "state.json").read_text())
        model_state = load_file(str(path / "model.safetensors"))
        if "optimizers" in state:  # a multi-optimiser task: one file per group
            optimizer_state = {"optimizers": {
                group: optimizer_from_flat(load_file(str(path / f"optimizer-{group}.safetensors")), meta)
                for group, meta in state.pop("optimizers").items()}}
        else:
            tensors = load_file(str(path / "optimizer.safetensors"))
            optimizer_state = optimizer_from_flat(tensors, state.pop("optimizer"))
        extras = {p.stem: load_file(str(p)) for p in path.glob("*.safetensors")
                  if p.stem != "model" and not p.stem.startswith("optimizer")}
    except (OSError, json.JSONDecodeError, SafetensorError, KeyError, ValueError) as exc:
        raise ArtifactError(f"checkpoint {path} cannot be loaded: {exc}") from None
    return state, model_state, optimizer_state, extras
