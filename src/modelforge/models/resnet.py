"""ResNet (He et al., 2016): basic and bottleneck residual blocks, ImageNet and small-input stems.

Parameter names follow torchvision's layout (``conv1``, ``bn1``, ``layer1.0.downsample.0``, ``fc``) so that a
torchvision ResNet state dict loads unchanged. The bottleneck puts its stride on the 3×3 convolution ("ResNet v1.5"),
as torchvision does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.core.registry import register


@dataclass
class ResNetConfig:
    layers: tuple[int, ...] = (2, 2, 2, 2)
    block: Literal["basic", "bottleneck"] = "basic"
    num_classes: int = 1000
    in_channels: int = 3
    width: int = 64
    # imagenet: 7×7/2 convolution + 3×3/2 max-pool (stride 4 before the first stage);
    # small: one 3×3/1 convolution, for 28–32 px inputs where an early ×4 downsampling would throw the image away.
    stem: Literal["imagenet", "small"] = "imagenet"


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    # No bias: every convolution here is followed by BatchNorm, whose shift makes a bias redundant.
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def projection(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """The 1×1 shortcut used when a block changes resolution or width (the paper's option B), else None."""
    if stride == 1 and in_channels == out_channels:
        return None
    conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = projection(in_channels, channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _check(cfg: ResNetConfig) -> None:
    if cfg.block not in BLOCKS:
        raise ConfigError(f"resnet block must be one of {', '.join(BLOCKS)}, got {cfg.block!r}")
    if cfg.stem not in ("imagenet", "small"):
        raise ConfigError(f"resnet stem must be 'imagenet' or 'small', got {cfg.stem!r}")
    if not cfg.layers or any(n < 1 for n in cfg.layers):
        raise ConfigError(f"resnet layers must be one or more positive block counts, got {cfg.layers}")
    if cfg.width < 1 or cfg.in_channels < 1 or cfg.num_classes < 0:
        raise ConfigError("resnet width and in_channels must be positive and num_classes non-negative")


class ResNet(nn.Module):
    """Stem, then one stage per entry of ``layers`` (stage i has ``width·2^i`` channels; every stage after the first
    halves the resolution), global average pooling and a linear classifier returning logits.

    ``num_classes=0`` drops the classifier: the model then returns the pooled features (a backbone, as in timm).
    """

    def __init__(self, cfg: ResNetConfig):
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        block = BLOCKS[cfg.block]
        if cfg.stem == "imagenet":
            self.conv1 = nn.Conv2d(cfg.in_channels, cfg.width, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = conv3x3(cfg.in_channels, cfg.width)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(cfg.width)
        self.relu = nn.ReLU(inplace=True)

        channels = cfg.width
        self.stage_channels: list[int] = []
        for i, blocks in enumerate(cfg.layers):
            width = cfg.width * 2**i
            stage = [block(channels, width, stride=1 if i == 0 else 2)]
            channels = width * block.expansion
            stage += [block(channels, width) for _ in range(blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            self.stage_channels.append(channels)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = nn.Linear(channels, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation for ReLU networks (fan_out, as torchvision), BatchNorm starting as the identity.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.cfg.layers))]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage, finest first: the multi-scale features a detector or U-Net builds on."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outputs = []
        for stage in self.stages():
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.forward_stages(x)[-1]
        return self.fc(torch.flatten(self.avgpool(features), 1))


def _imagenet_stem_example() -> tuple[torch.Tensor]:
    # A batch of 4: at 32 px the last stage is 1×1, and BatchNorm over only 2 values outputs ±1 whatever the input.
    return (torch.randn(4, 3, 32, 32),)


def _small_stem_example() -> tuple[torch.Tensor]:
    return (torch.randn(2, 3, 32, 32),)


def _mnist_example() -> tuple[torch.Tensor]:
    return (torch.randn(2, 1, 28, 28),)


@register("model", "resnet18", example=_imagenet_stem_example, tiny={"width": 4, "num_classes": 10})
def resnet18(num_classes: int = 1000, in_channels: int = 3, width: int = 64) -> ResNet:
    """ResNet-18: basic blocks 2-2-2-2, ImageNet stem (7×7/2 conv + max-pool), torchvision parameter names."""
    return ResNet(ResNetConfig((2, 2, 2, 2), "basic", num_classes, in_channels, width, "imagenet"))


@register("model", "resnet34", example=_imagenet_stem_example, tiny={"width": 4, "num_classes": 10})
def resnet34(num_classes: int = 1000, in_channels: int = 3, width: int = 64) -> ResNet:
    """ResNet-34: basic blocks 3-4-6-3, ImageNet stem (7×7/2 conv + max-pool), torchvision parameter names."""
    return ResNet(ResNetConfig((3, 4, 6, 3), "basic", num_classes, in_channels, width, "imagenet"))


@register("model", "resnet50", example=_imagenet_stem_example, tiny={"width": 4, "num_classes": 10})
def resnet50(num_classes: int = 1000, in_channels: int = 3, width: int = 64) -> ResNet:
    """ResNet-50: bottleneck blocks 3-4-6-3 (4× expansion), ImageNet stem, torchvision parameter names."""
    return ResNet(ResNetConfig((3, 4, 6, 3), "bottleneck", num_classes, in_channels, width, "imagenet"))


@register("model", "resnet18_small", example=_small_stem_example, tiny={"width": 4})
def resnet18_small(num_classes: int = 10, in_channels: int = 3, width: int = 64) -> ResNet:
    """ResNet-18 for 28–32 px images: basic blocks 2-2-2-2 after a single 3×3/1 conv stem (no max-pool)."""
    return ResNet(ResNetConfig((2, 2, 2, 2), "basic", num_classes, in_channels, width, "small"))


@register("model", "resnet20", example=_mnist_example, tiny={"in_channels": 1, "width": 4})
def resnet20(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> ResNet:
    """CIFAR ResNet-20: three stages of 3 basic blocks, 16-32-64 channels, 3×3/1 stem; for 28–32 px images."""
    return ResNet(ResNetConfig((3, 3, 3), "basic", num_classes, in_channels, width, "small"))
