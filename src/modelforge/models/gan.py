"""DCGAN (Radford et al., 2016): a transposed-convolution generator and a convolutional discriminator.

Layer for layer the layout of PyTorch's DCGAN example (no convolution biases), so at image_size=64, channels=3,
width=64 it has that example's 3,576,704 generator and 2,765,568 discriminator parameters.

``DCGAN.forward(z)`` returns the generated images and the discriminator's logits on them, which is exactly the
generator's training step; the task trains the discriminator through ``model.discriminator`` with its own optimiser.
Images are in [-1, 1] (tanh). The losses and the alternation policy belong to the image-generation task.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.core.registry import register


@dataclass
class DCGANConfig:
    latent_dim: int = 100
    image_size: int = 32
    channels: int = 1
    width: int = 64  # channels of the generator's last hidden layer and the discriminator's first
    # > 0: keep an exponential moving average of the generator's weights (Yazıcı et al. 2019), used for sampling;
    # it smooths the oscillation of adversarial training at no training cost
    ema_decay: float = 0.0
    # spectral normalisation of the discriminator's layers (Miyato et al. 2018), which then drops its BatchNorm:
    # a 1-Lipschitz critic gives the generator smoother gradients
    spectral_norm: bool = False


def upsampling_plan(image_size: int) -> tuple[int, int]:
    """(initial side, number of ×2 stages): halve the image side while it stays even and at least 4.

    28 → 7 with 2 stages (MNIST), 32 → 4 with 3, 64 → 4 with 4 (the paper's layout).
    """
    side, stages = image_size, 0
    while side % 2 == 0 and side // 2 >= 4:
        side, stages = side // 2, stages + 1
    if stages == 0 or side > 8:
        raise ConfigError(
            f"dcgan image_size {image_size} cannot be reached by doubling from a 4–8 px seed; use e.g. 28, 32 or 64"
        )
    return side, stages


class Generator(nn.Module):
    """z (B, latent_dim) → images (B, channels, image_size, image_size) in [-1, 1]."""

    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        side, stages = upsampling_plan(cfg.image_size)
        widths = [cfg.width * 2 ** (stages - 1 - i) for i in range(stages)]  # e.g. 256, 128, 64
        layers: list[nn.Module] = [
            nn.Unflatten(1, (cfg.latent_dim, 1, 1)),
            nn.ConvTranspose2d(cfg.latent_dim, widths[0], side, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for w_in, w_out in pairwise(widths):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], cfg.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    """images (B, channels, image_size, image_size) → real/fake logits (B,)."""

    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        side, stages = upsampling_plan(cfg.image_size)
        widths = [cfg.width * 2**i for i in range(stages)]  # e.g. 64, 128, 256
        # No BatchNorm on the first layer, LeakyReLU(0.2) throughout: the paper's recipe for stable training.
        layers: list[nn.Module] = [nn.Conv2d(cfg.channels, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for w_in, w_out in pairwise(widths):
            norm = [] if cfg.spectral_norm else [nn.BatchNorm2d(w_out)]
            layers += [nn.Conv2d(w_in, w_out, 4, 2, 1, bias=False), *norm, nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(widths[-1], 1, side, 1, 0, bias=False), nn.Flatten(0)]
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class DCGAN(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        if min(cfg.latent_dim, cfg.channels, cfg.width) < 1:
            raise ConfigError("dcgan latent_dim, channels and width must be positive")
        if not 0 <= cfg.ema_decay < 1:
            raise ConfigError(f"dcgan ema_decay must be in [0, 1), got {cfg.ema_decay}")
        self.cfg = cfg
        self.generator = Generator(cfg)
        self.discriminator = Discriminator(cfg)
        self.apply(_dcgan_init)
        if cfg.spectral_norm:  # after the init: the parametrisation divides the initialised weights by their norm
            for layer in self.discriminator.modules():
                if isinstance(layer, nn.Conv2d):
                    nn.utils.parametrizations.spectral_norm(layer)
        # a submodule, so checkpoints and artifacts carry it (exact resume); no optimiser group holds it
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False) if cfg.ema_decay else None

    @property
    def sampler(self) -> nn.Module:
        """The generator that draws samples: the weight average when ``ema_decay`` > 0, else the trained one."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    @torch.no_grad()
    def update_ema(self) -> None:
        """Move the average towards the generator after its optimiser step; BatchNorm statistics are copied."""
        if self.generator_ema is None:
            return
        for average, current in zip(self.generator_ema.parameters(), self.generator.parameters(), strict=True):
            average.lerp_(current, 1.0 - self.cfg.ema_decay)
        for average, current in zip(self.generator_ema.buffers(), self.generator.buffers(), strict=True):
            average.copy_(current)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n standard-normal latent vectors on the model's device."""
        device = next(self.parameters()).device
        return torch.randn(n, self.cfg.latent_dim, generator=generator, device=device)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, latent_dim) → (images (B, C, H, W) in [-1, 1], discriminator logits on them (B,))."""
        images = self.generator(z)
        return images, self.discriminator(images)


def _dcgan_init(module: nn.Module) -> None:
    # The paper initialises every weight from N(0, 0.02) and BatchNorm scales from N(1, 0.02).
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


@register(
    "model", "dcgan", example=lambda: (torch.randn(4, 16),), tiny={"latent_dim": 16, "image_size": 28, "width": 8}
)
def dcgan(latent_dim: int = 100, image_size: int = 32, channels: int = 1, width: int = 64,
          ema_decay: float = 0.0, spectral_norm: bool = False) -> DCGAN:
    """DCGAN generator + discriminator; forward(z) → (images in [-1, 1], discriminator logits on them);
    ``ema_decay`` > 0 keeps a weight average of the generator for sampling; ``spectral_norm`` normalises the
    discriminator's layers (instead of BatchNorm)."""
    return DCGAN(DCGANConfig(latent_dim, image_size, channels, width, ema_decay, spectral_norm))
