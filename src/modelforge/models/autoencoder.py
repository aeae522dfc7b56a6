"""Convolutional autoencoder: stride-2 convolutions down to a latent vector, transposed convolutions back up.

The denoising variant corrupts its input with Gaussian noise in training mode only, so the task's reconstruction
loss against the clean image teaches it to remove noise; in eval mode it is a plain autoencoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import torch
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.core.registry import register

OUTPUT_ACTIVATIONS: dict[str, type[nn.Module]] = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "none": nn.Identity}


@dataclass
class ConvAutoencoderConfig:
    in_channels: int = 1
    image_size: int = 28
    channels: tuple[int, ...] = (32, 64)
    latent_dim: int = 32
    noise_std: float = 0.0
    # sigmoid for pixels in [0, 1]; tanh for [-1, 1]; none leaves logits (e.g. for a BCE-with-logits loss).
    output_activation: Literal["sigmoid", "tanh", "none"] = "sigmoid"


class GaussianNoise(nn.Module):
    """Adds N(0, std²) noise in training mode; the identity in eval mode (like dropout)."""

    def __init__(self, std: float):
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.std == 0:
            return x
        return x + torch.randn_like(x) * self.std


def _check(cfg: ConvAutoencoderConfig) -> None:
    if cfg.output_activation not in OUTPUT_ACTIVATIONS:
        raise ConfigError(
            f"output_activation must be one of {', '.join(OUTPUT_ACTIVATIONS)}, got {cfg.output_activation!r}"
        )
    if not cfg.channels or any(c < 1 for c in cfg.channels):
        raise ConfigError(f"autoencoder channels must be one or more positive widths, got {cfg.channels}")
    if cfg.image_size < 2 ** len(cfg.channels):
        raise ConfigError(
            f"autoencoder image_size {cfg.image_size} is too small for {len(cfg.channels)} stride-2 stages; "
            f"use at least {2 ** len(cfg.channels)} or fewer channels entries"
        )
    if cfg.latent_dim < 1 or cfg.noise_std < 0:
        raise ConfigError("autoencoder latent_dim must be positive and noise_std non-negative")


class ConvAutoencoder(nn.Module):
    def __init__(self, cfg: ConvAutoencoderConfig):
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        # Side length after each stride-2, padding-1, 3×3 convolution is ceil(side / 2).
        sides = [cfg.image_size]
        for _ in cfg.channels:
            sides.append((sides[-1] + 1) // 2)
        widths = [cfg.in_channels, *cfg.channels]
        flat = widths[-1] * sides[-1] ** 2

        down: list[nn.Module] = [GaussianNoise(cfg.noise_std)]
        for w_in, w_out in pairwise(widths):
            down += [nn.Conv2d(w_in, w_out, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        self.encoder = nn.Sequential(*down, nn.Flatten(), nn.Linear(flat, cfg.latent_dim))

        up: list[nn.Module] = [
            nn.Linear(cfg.latent_dim, flat),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, (widths[-1], sides[-1], sides[-1])),
        ]
        for i in range(len(cfg.channels), 0, -1):
            # output_padding 1 restores an even side exactly; 0 restores an odd one (ceil halved it).
            up.append(nn.ConvTranspose2d(widths[i], widths[i - 1], 3, 2, 1, output_padding=1 - sides[i - 1] % 2))
            if i > 1:
                up.append(nn.ReLU(inplace=True))
        up.append(OUTPUT_ACTIVATIONS[cfg.output_activation]())
        self.decoder = nn.Sequential(*up)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) → latent codes (B, latent_dim)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent codes (B, latent_dim) → images (B, C, H, W)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _example() -> tuple[torch.Tensor]:
    return (torch.rand(4, 1, 28, 28),)


@register("model", "conv_autoencoder", example=_example, tiny={"channels": [8, 16], "latent_dim": 8})
def conv_autoencoder(
    in_channels: int = 1,
    image_size: int = 28,
    channels: list[int] = (32, 64),
    latent_dim: int = 32,
    output_activation: str = "sigmoid",
) -> ConvAutoencoder:
    """Convolutional autoencoder: stride-2 convs → latent vector → transposed convs (output sigmoid|tanh|none)."""
    return ConvAutoencoder(ConvAutoencoderConfig(in_channels, image_size, tuple(channels), latent_dim, 0.0,
                                                 output_activation))


@register("model", "denoising_autoencoder", example=_example, tiny={"channels": [8, 16], "latent_dim": 8})
def denoising_autoencoder(
    in_channels: int = 1,
    image_size: int = 28,
    channels: list[int] = (32, 64),
    latent_dim: int = 32,
    noise_std: float = 0.3,
    output_activation: str = "sigmoid",
) -> ConvAutoencoder:
    """Denoising convolutional autoencoder: Gaussian noise (noise_std) on the input while training, then as above."""
    return ConvAutoencoder(ConvAutoencoderConfig(in_channels, image_size, tuple(channels), latent_dim, noise_std,
                                                 output_activation))
