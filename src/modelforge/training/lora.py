"""LoRA through ``peft``: a recipe's ``adapter:`` section on any model (``hf`` checkpoints and the toolkit's own).

``peft.inject_adapter_in_model`` replaces the targeted layers in place, so the model keeps its class, its
``forward`` signature (the tasks inspect it) and its state-dict names plus ``lora_A``/``lora_B`` entries. Then
every parameter is frozen except the adapter's and the model's *new head*: for ``hf`` models the weights the
checkpoint did not have (``HFModel.new_parameter_names``), for the toolkit's own classifiers the ``head`` /
``classifier`` / ``score`` layer outside the block stack. The optimiser only ever sees trainable parameters
(``training/optim.py``), and DP-SGD computes per-sample gradients only for them.

``target_modules: auto`` adapts every ``nn.Linear`` (and GPT-2's ``Conv1D``) inside a numbered layer stack
(``blocks.3.attn.qkv``, ``encoder.layer.0.attention.self.query``, ``model.layers.1.mlp.up_proj``): the attention and
feed-forward projections, never the embeddings, the pooler or the task head.

The artifact (``artifacts/model_dir.py``) stores the merged weights (``save: merged``, the default: a plain model of
the base architecture) or the trainable tensors alone (``save: adapter``), naming the base checkpoint and its
sha256; loading re-applies the adapter to the base and merges it for inference.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from torch import nn

from modelforge.core.config import AdapterConfig
from modelforge.core.errors import ConfigError, MissingDependencyError

_IN_STACK = re.compile(r"(^|\.)\d+\.")  # a module inside a numbered layer stack (blocks.0., layers.11.)
_HEAD_NAMES = ("head", "classifier", "score")


def check_recipe(recipe: Any) -> None:
    """Adapter settings the recipe's model cannot honour → one-line ConfigError before any data is read."""
    adapter = recipe.adapter
    if adapter is not None and adapter.save == "adapter" and recipe.model.name != "hf":
        raise ConfigError(f"adapter.save=adapter needs model.name=hf (a base checkpoint to name); model "
                          f"{recipe.model.name!r} saves its adapter merged: set adapter.save=merged")


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise MissingDependencyError("adapter: needs peft: pip install 'modelforge[hf]'") from None
    return peft


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"  # transformers' GPT-2 layer


def auto_targets(model: nn.Module) -> list[str]:
    """The attention/FFN projections: Linear layers inside a numbered layer stack."""
    return [name for name, module in model.named_modules() if _is_linear(module) and _IN_STACK.search(name)]


def head_parameter_names(model: nn.Module) -> list[str]:
    """Parameters that train fully beside the adapter: the model's new (randomly initialised) head."""
    named = getattr(model, "new_parameter_names", None)
    if named is not None:
        return list(named)
    heads = [name for name, module in model.named_modules()
             if name.rpartition(".")[2] in _HEAD_NAMES and not _IN_STACK.search(name)]
    return [f"{head}.{p}" for head in heads for p, _ in model.get_submodule(head).named_parameters()]


def targets_of(model: nn.Module, cfg: AdapterConfig) -> list[str]:
    targets = auto_targets(model) if cfg.target_modules == "auto" else list(cfg.target_modules)
    if not targets:
        raise ConfigError(f"adapter.target_modules={cfg.target_modules!r}: the model has no Linear layer in a layer "
                          "stack to adapt; name the modules, e.g. adapter.target_modules=[qkv,out]")
    return targets


def apply_lora(model: nn.Module, cfg: AdapterConfig, targets: list[str] | None = None) -> nn.Module:
    """Inject LoRA into ``model`` (in place) and freeze everything but the adapter and the new head."""
    peft = _peft()
    targets = targets or targets_of(model, cfg)
    config = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets)
    try:
        peft.inject_adapter_in_model(config, model)
    except ValueError as exc:
        raise ConfigError(f"adapter.target_modules: {str(exc).splitlines()[0][:300]}") from None
    model.lora_targets = targets  # what the artifact records, so loading adapts the same layers
    heads = set(head_parameter_names(model))
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name or name in heads)
    return model


def has_lora(model: nn.Module) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def trainable_state(model: nn.Module) -> dict[str, Any]:
    """The tensors an adapter-only artifact keeps: the adapter and the new head."""
    return {name: param.detach() for name, param in model.named_parameters() if param.requires_grad}


def merged(model: nn.Module, in_place: bool = False) -> nn.Module:
    """The model with each LoRA update added into its base layer and the LoRA layers removed: the base
    architecture again (same state-dict names), every parameter trainable as in a plain model."""
    from peft.tuners.lora import LoraLayer

    model = model if in_place else copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.get_base_layer())
    for param in model.parameters():
        param.requires_grad_(True)
    if hasattr(model, "lora_targets"):
        del model.lora_targets
    return model
