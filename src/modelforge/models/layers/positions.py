"""Position information: learned and sinusoidal absolute embeddings, and rotary embeddings (RoPE)."""

from __future__ import annotations

import math

import torch
from torch import nn

from modelforge.core.errors import ConfigError


def _check_length(end: int, max_positions: int) -> None:
    if end > max_positions:
        raise ConfigError(
            f"sequence reaches position {end} but the model has only {max_positions} positions; "
            "truncate the input or build the model with a larger max_positions"
        )


class LearnedPositions(nn.Module):
    """One trained vector per position (BERT, GPT-2)."""

    def __init__(self, max_positions: int, dim: int):
        super().__init__()
        self.max_positions = max_positions
        self.weight = nn.Parameter(torch.empty(max_positions, dim).normal_(std=0.02))

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        """Vectors for positions ``offset … offset+length-1``, shape (length, dim)."""
        _check_length(offset + length, self.max_positions)
        return self.weight[offset : offset + length]


def sinusoid_table(max_positions: int, dim: int) -> torch.Tensor:
    """The fixed sin/cos table of Vaswani et al. (2017): even channels sin, odd channels cos."""
    position = torch.arange(max_positions, dtype=torch.float64).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table.float()


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal positions; the table is a non-persistent buffer (recomputed, never saved)."""

    def __init__(self, max_positions: int, dim: int):
        super().__init__()
        self.max_positions = max_positions
        self.register_buffer("table", sinusoid_table(max_positions, dim), persistent=False)

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        _check_length(offset + length, self.max_positions)
        return self.table[offset : offset + length]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021), rotating channel pairs (i, i + head_dim/2) of queries and keys.

    Positions enter attention as relative offsets; there is no additive embedding, so the model has no parameter
    tied to ``max_positions`` — the buffer is only a cache of cos/sin values.
    """

    def __init__(self, head_dim: int, max_positions: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ConfigError(f"rotary positions need an even head dimension, got {head_dim}; change dim or num_heads")
        self.max_positions = max_positions
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float64), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        first, second = x.chunk(2, dim=-1)
        return torch.cat([-second, first], dim=-1)

    def forward(self, q: torch.Tensor, k: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate ``q`` and ``k`` of shape (batch, heads, time, head_dim) starting at position ``offset``."""
        length = q.shape[-2]
        _check_length(offset + length, self.max_positions)
        cos = self.cos[offset : offset + length].to(q.dtype)
        sin = self.sin[offset : offset + length].to(q.dtype)
        return q * cos + self._rotate_half(q) * sin, k * cos + self._rotate_half(k) * sin


POSITIONS = ("learned", "sinusoidal", "rotary", "none")


def make_positions(kind: str, max_positions: int, dim: int) -> nn.Module | None:
    """Absolute position module for ``kind``; rotary and none return None (rotary lives inside attention)."""
    if kind == "learned":
        return LearnedPositions(max_positions, dim)
    if kind == "sinusoidal":
        return SinusoidalPositions(max_positions, dim)
    if kind in ("rotary", "none"):
        return None
    raise ConfigError(f"unknown positions {kind!r}; valid: {', '.join(POSITIONS)}")
