"""A small (2+1)-D convolutional network for video clips (Tran et al., 2018, "R(2+1)D").

Each 3-D convolution is factorised into a spatial 1×3×3 convolution and a temporal 3×1×1 one, with BatchNorm and
ReLU after each: the extra non-linearity and the separate temporal filter make motion (what changes between frames)
easier to learn than with full 3×3×3 kernels of the same cost. Stage 1 keeps the full resolution (motion here is a
pixel or two between frames); later stages halve space and time (time only while at least 4 frames remain) with
strided convolutions, and the clip ends in global average pooling and a linear layer.

Input ``(batch, channels, frames, height, width)`` float — PyTorch's Conv3d layout; output class logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.core.registry import register


@dataclass
class VideoCNNConfig:
    in_channels: int = 1
    num_classes: int = 10
    num_frames: int = 8
    image_size: int = 32
    channels: tuple[int, ...] = (8, 32, 64)
    dropout: float = 0.0


class SpatioTemporalConv(nn.Module):
    """1×3×3 spatial convolution → BN → ReLU → 3×1×1 temporal convolution → BN → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, space_stride: int = 1, time_stride: int = 1):
        super().__init__()
        # No biases: BatchNorm's shift follows every convolution. Strided convolutions downsample (cheaper on CPU
        # than max-pooling 5-D tensors, and the 3-wide kernels still see every input position).
        self.spatial = nn.Conv3d(in_channels, out_channels, (1, 3, 3), stride=(1, space_stride, space_stride),
                                 padding=(0, 1, 1), bias=False)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.temporal = nn.Conv3d(out_channels, out_channels, (3, 1, 1), stride=(time_stride, 1, 1),
                                  padding=(1, 0, 0), bias=False)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.spatial(x)))
        return self.relu(self.bn2(self.temporal(x)))


class VideoCNN(nn.Module):
    def __init__(self, cfg: VideoCNNConfig):
        super().__init__()
        if not cfg.channels or any(c < 1 for c in cfg.channels):
            raise ConfigError(f"video_cnn channels must be one or more positive widths, got {list(cfg.channels)}")
        if cfg.num_frames < 1 or cfg.image_size < 2 ** len(cfg.channels):
            raise ConfigError(
                f"video_cnn needs ≥ 1 frame and frames of at least {2 ** len(cfg.channels)} px for "
                f"{len(cfg.channels)} stages, got {cfg.num_frames} frames of {cfg.image_size} px"
            )
        if not 0 <= cfg.dropout < 1:
            raise ConfigError(f"video_cnn dropout must be in [0, 1), got {cfg.dropout}")
        self.cfg = cfg
        layers: list[nn.Module] = []
        frames, width = cfg.num_frames, cfg.in_channels
        for stage, channels in enumerate(cfg.channels):
            space_stride = 2 if stage > 0 else 1
            time_stride = 2 if stage > 0 and frames >= 4 else 1
            layers.append(SpatioTemporalConv(width, channels, space_stride, time_stride))
            frames, width = (frames + time_stride - 1) // time_stride, channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(width, cfg.num_classes)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """Clips (B, C, T, H, W) → logits (B, num_classes)."""
        return self.classifier(self.dropout(self.pool(self.features(clip)).flatten(1)))


def _example() -> tuple[torch.Tensor]:
    return (torch.randn(3, 1, 8, 16, 16),)


@register("model", "video_cnn", example=_example, tiny={"channels": [4, 8], "image_size": 16})
def video_cnn(
    in_channels: int = 1,
    num_classes: int = 10,
    num_frames: int = 8,
    image_size: int = 32,
    channels: list[int] = (8, 32, 64),
    dropout: float = 0.0,
) -> VideoCNN:
    """(2+1)-D CNN for clips (B, C, T, H, W): factorised spatial/temporal convs, pooling, linear classifier."""
    return VideoCNN(VideoCNNConfig(in_channels, num_classes, num_frames, image_size, tuple(channels), dropout))
