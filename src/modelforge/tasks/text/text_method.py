"""How a pretrained text classifier is trained: ``model.method`` = finetune | stack | auto.

- ``finetune``: every weight of the encoder and its linear head, by gradient steps (the Trainer's loop).
- ``stack``: the encoder frozen; its sentence embedding and a TF-IDF of the same token ids under one linear layer
  fitted by logistic regression (models/text_stack.py, tasks/text/stack_fit.py).
- ``auto``: ``stack`` when fine-tuning would process more than ``FINETUNE_TOKEN_BUDGET`` token positions
  (planned optimiser steps × batch size × max_length), ``finetune`` otherwise.

Measured on the benchmark tables (docs/RESULTS.md, "Which method for a small text table"): short review snippets
(Rotten Tomatoes, 540 rows at 43 tokens, 102 steps: ~70k positions, 2.4 CPU-minutes) are best fine-tuned (75.2 %
against the stack's 70.8 %); long statements and articles cut at 256 tokens (the debates, 147 steps: ~602k positions,
15.6 CPU-minutes; BBC News, 204 steps: ~836k positions, about 20) are best stacked (75.3 % and 98.5 %, 2.6–3
CPU-minutes) and fine-tuning them costs more than the 15-minute bar. The budget sits between the two groups, at
about 6 CPU-minutes of fine-tuning on one core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from modelforge.core.errors import ConfigError

METHODS = ("auto", "finetune", "stack")
FINETUNE_TOKEN_BUDGET = 300_000
STACK_MODEL = "text_stack"
# the model keywords the stack keeps: the pretrained encoder's shape (its dropout and pooling do not apply)
STACK_KEYS = ("dim", "num_layers", "num_heads", "mlp_hidden", "max_positions", "pair_buckets")
STACKABLE = ("encoder_classifier", STACK_MODEL)


@dataclass(frozen=True)
class MethodChoice:
    method: str  # finetune | stack
    reason: str
    finetune_tokens: int

    def record(self) -> dict[str, Any]:
        return {"method": self.method, "reason": self.reason, "finetune_tokens": self.finetune_tokens}


def finetune_tokens(train: Any, rows: int, max_length: int) -> int:
    """Token positions fine-tuning would run through: the Trainer's planned optimiser steps (``train.epochs``, more
    when ``train.min_steps`` asks, at most ``train.max_steps``) × rows per step × ``max_length``."""
    per_step = train.batch_size * train.grad_accum
    per_epoch = math.ceil(math.ceil(rows / train.batch_size) / train.grad_accum)
    epochs = train.epochs
    if train.min_steps and per_epoch * epochs < train.min_steps:
        epochs = math.ceil(train.min_steps / max(per_epoch, 1))
    steps = per_epoch * epochs
    if train.max_steps:
        steps = min(steps, train.max_steps)
    return steps * per_step * max_length


def choose_method(requested: str, model_name: str, pretrained: bool, train: Any, rows: int, max_length: int,
                  gradient_only: str | None = None) -> MethodChoice:
    """The method a run uses and why; ``requested`` is ``model.method``; ``gradient_only`` names a recipe section
    that only gradient training honours (an adapter, privacy), which rules the stack out."""
    if requested not in METHODS:
        raise ConfigError(f"model.method={requested!r} is not a method; valid: {', '.join(METHODS)}")
    tokens = finetune_tokens(train, rows, max_length)
    if requested != "auto":
        if requested == "stack":
            check_stackable(model_name, pretrained)
            if gradient_only:
                raise ConfigError(f"model.method=stack fits a frozen encoder's head by logistic regression: it takes "
                                  f"no {gradient_only} section; use model.method=finetune")
        return MethodChoice(requested, "model.method=" + requested, tokens)
    if gradient_only:
        return MethodChoice("finetune", f"auto: the recipe's {gradient_only} section needs gradient training", tokens)
    if model_name not in STACKABLE:
        return MethodChoice("finetune", f"auto: the stack is built on encoder_classifier, not {model_name}", tokens)
    if not pretrained:
        return MethodChoice("finetune", "auto: the stack needs a pretrained encoder (data.init_encoder)", tokens)
    size = f"{rows} rows × {max_length} tokens: fine-tuning would process {tokens / 1000:.0f}k token positions"
    if tokens > FINETUNE_TOKEN_BUDGET:
        return MethodChoice("stack", f"auto: {size}, over the {FINETUNE_TOKEN_BUDGET // 1000}k budget", tokens)
    return MethodChoice("finetune", f"auto: {size}, within the {FINETUNE_TOKEN_BUDGET // 1000}k budget", tokens)


def check_stackable(model_name: str, pretrained: bool) -> None:
    if model_name not in STACKABLE:
        raise ConfigError(f"model.method=stack needs model.name=encoder_classifier (a pretrained encoder), not "
                          f"{model_name}")
    if not pretrained:
        raise ConfigError("model.method=stack needs a pretrained encoder: set data.init_encoder (e.g. minilm); a "
                          "frozen random encoder embeds nothing")


def stack_model_settings(model: dict[str, Any]) -> dict[str, Any]:
    """The recipe's ``model`` section as the stack uses it: name text_stack, method stack, the encoder's shape."""
    return {"name": STACK_MODEL, "method": "stack", **{k: model[k] for k in STACK_KEYS if k in model}}
