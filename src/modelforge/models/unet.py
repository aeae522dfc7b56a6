"""U-Net (Ronneberger et al., 2015) for per-pixel classification, with padded convolutions and BatchNorm.

Padded 3×3 convolutions keep the output the size of the input (the paper's unpadded ones shrink it), which is what
a segmentation task wants; any input size works, odd sides included.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn
from torch.nn import functional as F

from modelforge.core.errors import ConfigError, DataError
from modelforge.core.registry import register


@dataclass
class UNetConfig:
    in_channels: int = 1
    num_classes: int = 2
    width: int = 64  # channels of the first level; each level down doubles it
    depth: int = 4  # number of 2× downsamplings
    # Bilinear upsampling + 1×1 conv instead of 2×2 transposed convolutions: fewer parameters, no checkerboard.
    bilinear: bool = False


class DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Upsample by 2, concatenate the skip connection from the encoder, then a double convolution."""

    def __init__(self, in_channels: int, out_channels: int, bilinear: bool):
        super().__init__()
        if bilinear:
            upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.up: nn.Module = nn.Sequential(upsample, nn.Conv2d(in_channels, out_channels, 1))
        else:
            self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        # Max-pooling floors odd sides, so the upsampled map can be one pixel short of the skip: pad it back.
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dh or dw:
            x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """(B, in_channels, H, W) → per-pixel class logits (B, num_classes, H, W)."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        if min(cfg.in_channels, cfg.num_classes, cfg.width, cfg.depth) < 1:
            raise ConfigError("unet in_channels, num_classes, width and depth must be positive")
        self.cfg = cfg
        widths = [cfg.width * 2**i for i in range(cfg.depth + 1)]
        self.inc = DoubleConv(cfg.in_channels, widths[0])
        self.down = nn.ModuleList(DoubleConv(w_in, w_out) for w_in, w_out in pairwise(widths))
        self.up = nn.ModuleList(Up(w_in, w_out, cfg.bilinear) for w_in, w_out in pairwise(reversed(widths)))
        self.head = nn.Conv2d(widths[0], cfg.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < 2**self.cfg.depth:
            side = 2**self.cfg.depth
            raise DataError(
                f"unet got {tuple(x.shape[-2:])} px images but depth {self.cfg.depth} needs at least {side}×{side}: "
                "resize the images or lower model.depth"
            )
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for up in self.up:
            x = up(x, skips.pop())
        return self.head(x)


def _example() -> tuple[torch.Tensor]:
    return (torch.randn(2, 1, 14, 14),)  # 14 → 7 → 3: odd sides exercise the padding path


@register("model", "unet", example=_example, tiny={"width": 8, "depth": 2})
def unet(in_channels: int = 1, num_classes: int = 2, width: int = 64, depth: int = 4, bilinear: bool = False) -> UNet:
    """U-Net: 4 levels of double 3×3 conv (64→1024 channels), skip connections, per-pixel class logits."""
    return UNet(UNetConfig(in_channels, num_classes, width, depth, bilinear))


@register("model", "unet_small", example=_example, tiny={"width": 8, "depth": 2, "bilinear": True})
def unet_small(
    in_channels: int = 1, num_classes: int = 2, width: int = 16, depth: int = 3, bilinear: bool = False
) -> UNet:
    """Small U-Net for CPU-sized images: 3 levels, 16→128 channels."""
    return UNet(UNetConfig(in_channels, num_classes, width, depth, bilinear))
