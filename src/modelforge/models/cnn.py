"""Small convolutional classifiers: the seed's Keras network and LeNet-5."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modelforge.core.registry import register


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
