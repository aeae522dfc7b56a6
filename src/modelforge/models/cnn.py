"""Small convolutional classifiers: the seed's Keras network and LeNet-5."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.core.registry import register
from modelforge.models.mlp import activation


@dataclass
class SeedCNNConfig:
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10


class SeedCNN(nn.Module):
    """Conv2D(32,3×3,relu) → MaxPool(2) → Conv2D(64,3×3,relu) → MaxPool(2) → Flatten → Dense(128,relu) → Dense(C).

    Exactly the seed's Keras §4.2 network ("valid" convolutions, as Keras' default); softmax lives in the loss.
    """

    def __init__(self, cfg: SeedCNNConfig):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(cfg.in_channels, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        side = ((cfg.image_size - 2) // 2 - 2) // 2
        if side < 1:
            raise ValueError(f"seed_cnn needs images of at least 10×10 pixels, got {cfg.image_size}")
        self.classifier = nn.Sequential(nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Linear(128, cfg.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register("model", "seed_cnn", example=lambda: (torch.randn(4, 1, 28, 28),))
def seed_cnn(in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> SeedCNN:
    """The seed's Keras CNN: two conv+pool stages, Dense(128), Dense(num_classes)."""
    return SeedCNN(SeedCNNConfig(in_channels, image_size, num_classes))


@dataclass
class LeNet5Config:
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    activation: str = "tanh"


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998): C1 6@5×5 → S2 pool → C3 16@5×5 → S4 pool → C5 120 → F6 84 → output.

    C1 pads by 2 so a 28×28 MNIST digit is seen as the paper's 32×32 input. Subsampling is average pooling; C3 is
    fully connected to S2 (the paper's sparse connection table was a 1998 compute saving, not a modelling choice).
    """

    def __init__(self, cfg: LeNet5Config):
        super().__init__()
        side = (cfg.image_size // 2 - 4) // 2
        if side < 1:
            raise ConfigError(f"lenet5 needs images of at least 12×12 pixels, got {cfg.image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(cfg.in_channels, 6, 5, padding=2),
            activation(cfg.activation),
            nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5),
            activation(cfg.activation),
            nn.AvgPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120),
            activation(cfg.activation),
            nn.Linear(120, 84),
            activation(cfg.activation),
            nn.Linear(84, cfg.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register("model", "lenet5", example=lambda: (torch.randn(4, 1, 28, 28),))
def lenet5(in_channels: int = 1, image_size: int = 28, num_classes: int = 10, activation: str = "tanh") -> LeNet5:
    """LeNet-5: two 5×5 conv + average-pool stages, dense 120-84-num_classes (tanh by default)."""
    return LeNet5(LeNet5Config(in_channels, image_size, num_classes, activation))
