"""A compact anchor-free detector in the style of CenterNet (Zhou et al., 2019, "Objects as Points").

A small ResNet backbone gives features at strides 4, 8 and 16; a top-down neck (FPN-style lateral 1×1 convolutions,
nearest upsampling and addition) merges them into one stride-4 map; three heads predict, per output cell:

- ``heatmap`` (B, num_classes, H/4, W/4): logits that an object of that class is centred in the cell;
- ``size`` (B, 2, H/4, W/4): box width and height;
- ``offset`` (B, 2, H/4, W/4): the sub-cell position of the centre (x, y), undoing the stride's quantisation.

The model returns raw tensors only. Target encoding (Gaussian splats), the focal/L1 losses, peak extraction and the
units of ``size`` (the paper uses output cells) belong to the detection task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from modelforge.core.errors import ConfigError
from modelforge.core.registry import register
from modelforge.models.resnet import ResNet, ResNetConfig

# The heatmap bias starts so that sigmoid(logit) = 0.1: almost every cell is background, and starting near that
# prior keeps the focal loss from being swamped by background cells in the first steps (paper, §4).
HEATMAP_PRIOR = 0.1


@dataclass
class CenterNetConfig:
    num_classes: int = 3
    in_channels: int = 3
    width: int = 32  # backbone channels at stride 4; doubled at each later stage
    layers: tuple[int, ...] = (2, 2, 2)  # basic blocks per backbone stage (strides 4, 8, 16, ...)
    neck_channels: int = 64
    head_channels: int = 64


def _head(in_channels: int, hidden: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden, out_channels, 1)
    )


class CenterNet(nn.Module):
    stride = 4  # input pixels per output cell

    def __init__(self, cfg: CenterNetConfig):
        super().__init__()
        if min(cfg.num_classes, cfg.neck_channels, cfg.head_channels) < 1:
            raise ConfigError("centernet num_classes, neck_channels and head_channels must be positive")
        self.cfg = cfg
        self.backbone = ResNet(ResNetConfig(cfg.layers, "basic", 0, cfg.in_channels, cfg.width, "imagenet"))
        self.laterals = nn.ModuleList(nn.Conv2d(c, cfg.neck_channels, 1) for c in self.backbone.stage_channels)
        self.smooth = nn.Sequential(
            nn.Conv2d(cfg.neck_channels, cfg.neck_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(cfg.neck_channels),
            nn.ReLU(inplace=True),
        )
        self.heatmap = _head(cfg.neck_channels, cfg.head_channels, cfg.num_classes)
        self.size = _head(cfg.neck_channels, cfg.head_channels, 2)
        self.offset = _head(cfg.neck_channels, cfg.head_channels, 2)
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) → the merged stride-4 feature map (B, neck_channels, ⌈H/4⌉, ⌈W/4⌉)."""
        stages = self.backbone.forward_stages(x)
        merged = self.laterals[-1](stages[-1])
        for lateral, stage in zip(reversed(self.laterals[:-1]), reversed(stages[:-1]), strict=True):
            merged = lateral(stage) + F.interpolate(merged, size=stage.shape[-2:], mode="nearest")
        return self.smooth(merged)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.features(x)
        return {"heatmap": self.heatmap(features), "size": self.size(features), "offset": self.offset(features)}


@register(
    "model",
    "centernet",
    example=lambda: (torch.randn(2, 3, 64, 64),),
    tiny={"width": 8, "neck_channels": 16, "head_channels": 16},
)
def centernet(
    num_classes: int = 3, in_channels: int = 3, width: int = 32, neck_channels: int = 64, head_channels: int = 64
) -> CenterNet:
    """Anchor-free CenterNet detector: ResNet 2-2-2 backbone, top-down neck, stride-4 heatmap/size/offset heads."""
    return CenterNet(CenterNetConfig(num_classes, in_channels, width, (2, 2, 2), neck_channels, head_channels))
