"""Optimisers and learning-rate schedules.

Schedules are pure functions ``lr_at(step)`` applied to every parameter group before each optimiser step, so the
only schedule state is the step counter that checkpoints already hold (resume is exact by construction).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from modelforge.core.config import TrainConfig


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def warmup_steps(total_steps: int, cfg: TrainConfig) -> int:
    """Warm-up length: ``warmup_ratio`` of the run when set (so it fits runs of any size), else ``warmup_steps``."""
    if cfg.warmup_ratio is not None:
        return round(cfg.warmup_ratio * total_steps)
    return cfg.warmup_steps


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of ``total_steps``."""
    base = cfg.lr
    if cfg.schedule == "onecycle":
        return _one_cycle(step, total_steps, cfg)
    warmup = warmup_steps(total_steps, cfg)
    if step < warmup:
        return base * (step + 1) / warmup
    if cfg.schedule == "constant":
        return base
    if cfg.schedule == "step":
        return base * cfg.gamma ** ((step - warmup) // cfg.step_size)
    span = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    floor = base * cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return base - (base - floor) * progress  # linear


def _one_cycle(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Smith's one-cycle: cosine rise from lr/div_factor to lr, then cosine fall to lr/div_factor/final_div_factor.

    Phase boundaries follow ``torch.optim.lr_scheduler.OneCycleLR`` (two-phase form), so the curves coincide.
    """
    initial = cfg.lr / cfg.div_factor
    final = initial / cfg.final_div_factor
    rise_end = cfg.pct_start * total_steps - 1
    if step <= rise_end:
        t, start, end = step / rise_end if rise_end > 0 else 1.0, initial, cfg.lr
    else:
        t, start, end = (step - rise_end) / max(1e-12, total_steps - 1 - rise_end), cfg.lr, final
    t = min(1.0, t)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
