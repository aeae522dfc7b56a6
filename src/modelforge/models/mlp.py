"""Multi-layer perceptron over flattened inputs, with a selectable activation and dropout."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.core.registry import register

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


@dataclass
class MLPConfig:
    in_features: int = 784
    hidden: tuple[int, ...] = (256, 128)
    num_classes: int = 10
    activation: str = "relu"
    dropout: float = 0.0


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = cfg.in_features
        for size in cfg.hidden:
            layers += [nn.Linear(width, size), activation(cfg.activation)]
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
            width = size
        layers.append(nn.Linear(width, cfg.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register("model", "mlp", example=lambda: (torch.randn(4, 1, 28, 28),))
def mlp(
    in_features: int = 784,
    hidden: list[int] = (256, 128),
    num_classes: int = 10,
    activation: str = "relu",
    dropout: float = 0.0,
) -> MLP:
    """MLP classifier on flattened inputs (hidden sizes, activation relu|gelu|silu|tanh|sigmoid|leaky_relu, dropout)."""
    return MLP(MLPConfig(in_features, tuple(hidden), num_classes, activation, dropout))
