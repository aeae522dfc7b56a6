"""Channels-last (NHWC) memory layout for convolutional models: oneDNN's CPU convolutions run on NHWC without the
reorders an NCHW tensor needs on every call. The model is converted once when training starts and back to the
ordinary layout when it ends, so checkpoints, artifacts and exports never see the difference; each 4-D batch tensor
is converted on its way in."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def use_channels_last(model: nn.Module, setting: bool | None) -> bool:
    """``train.channels_last``: opt-in. It only changes 2-D convolution kernels, so true on a model without them is
    ignored. Unset means off: on this project's 2-core CPU the measured gain was within the noise of a loaded
    machine (RESULTS.md, training speed), so the default stays the ordinary layout until an idle run shows a gain."""
    return bool(setting) and has_conv2d(model)


def to_channels_last(batch: Any) -> Any:
    """Every 4-D tensor in a batch (tensor, tuple/list or dict of them) in channels-last layout; others untouched."""
    if isinstance(batch, torch.Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.dim() == 4 else batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_channels_last(b) for b in batch)
    if isinstance(batch, dict):
        return {k: to_channels_last(v) for k, v in batch.items()}
    return batch


def set_layout(model: nn.Module, channels_last: bool) -> None:
    """Convert the model's 4-D parameters and buffers in place (the module objects, and so optimisers, stay)."""
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
