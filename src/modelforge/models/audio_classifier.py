"""Utterance classifiers over audio features: a 1-D convolutional network for keyword spotting.

Input is ``(batch, features, frames)`` log-mel/MFCC (the layout of ``models/asr.py``) plus the valid frame count of
each utterance; output is one row of class logits per utterance. Convolving over time with the
feature bands as channels (as TC-ResNet, Choi et al. 2019) keeps the network small and fast on a CPU; the pooling
ignores padded frames, so an utterance gets the same logits alone or in a padded batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.core.registry import register


@dataclass
class AudioClassifierConfig:
    n_features: int = 40
    num_classes: int = 30
    channels: tuple[int, ...] = (64, 64, 128, 128)
    strides: tuple[int, ...] = (1, 2, 1, 2)
    kernel_size: int = 5
    dropout: float = 0.1


class ConvBlock(nn.Module):
    """Conv1d (odd kernel, 'same' padding, optional stride) → BatchNorm → ReLU; padded frames are zeroed first."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
        self.norm = nn.BatchNorm1d(out_channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # zeroing the padding keeps a padded utterance's valid frames equal to those of the utterance alone
        x = x * _mask(lengths, x.shape[-1]).unsqueeze(1).to(x.dtype)
        lengths = torch.div(lengths - 1, self.stride, rounding_mode="floor") + 1
        return self.act(self.norm(self.conv(x))), lengths


def _mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


class AudioClassifier(nn.Module):
    """Conv blocks over time → masked mean and max pooling over valid frames → dropout → linear class logits."""

    def __init__(self, cfg: AudioClassifierConfig):
        super().__init__()
        if len(cfg.channels) != len(cfg.strides) or not cfg.channels:
            raise ConfigError(f"audio_cnn: channels {cfg.channels} and strides {cfg.strides} need the same length")
        if cfg.kernel_size % 2 == 0:
            raise ConfigError(f"audio_cnn: kernel_size must be odd (for 'same' padding), got {cfg.kernel_size}")
        widths = (cfg.n_features, *cfg.channels)
        self.blocks = nn.ModuleList(
            ConvBlock(widths[i], widths[i + 1], cfg.kernel_size, cfg.strides[i]) for i in range(len(cfg.channels))
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(2 * cfg.channels[-1], cfg.num_classes)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            lengths = torch.full((features.shape[0],), features.shape[2], dtype=torch.long, device=features.device)
        x = features  # (B, F, T): the feature bands are the convolution's channels
        for block in self.blocks:
            x, lengths = block(x, lengths)
        valid = _mask(lengths, x.shape[-1]).unsqueeze(1)
        mean = (x * valid).sum(-1) / lengths.clamp(min=1).unsqueeze(1).to(x.dtype)
        peak = x.masked_fill(~valid, float("-inf")).amax(-1)
        return self.head(self.dropout(torch.cat([mean, peak], dim=1)))


def _example() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(4, 40, 48), torch.tensor([48, 40, 25, 13])


@register("model", "audio_cnn", example=_example, tiny={"channels": (16, 16, 32, 32), "num_classes": 5})
def audio_cnn(
    n_features: int = 40,
    num_classes: int = 30,
    channels: tuple[int, ...] = (64, 64, 128, 128),
    strides: tuple[int, ...] = (1, 2, 1, 2),
    kernel_size: int = 5,
    dropout: float = 0.1,
) -> AudioClassifier:
    """1-D CNN keyword spotter: (batch, features, frames) audio features with lengths → class logits."""
    return AudioClassifier(AudioClassifierConfig(n_features, num_classes, tuple(channels), tuple(strides),
                                                 kernel_size, dropout))
