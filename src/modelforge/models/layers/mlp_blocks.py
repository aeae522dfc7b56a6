"""Transformer feed-forward blocks: the classic two-layer MLP (GELU/ReLU/SiLU) and SwiGLU."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from modelforge.core.errors import ConfigError


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


# Functions rather than modules: one fused kernel each and nothing to register. "gelu" is the exact (erf) form used
# by BERT; "gelu_tanh" is GPT-2's approximation (HF calls it gelu_new) — they differ by ~1e-3, which matters for
# weight parity with Hugging Face checkpoints.
FFN_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": _gelu_tanh,
    "relu": F.relu,
    "silu": F.silu,
}


def ffn_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in FFN_ACTIVATIONS:
        raise ConfigError(f"unknown feed-forward activation {name!r}; valid: {', '.join(FFN_ACTIVATIONS)}")
    return FFN_ACTIVATIONS[name]


class FeedForward(nn.Module):
    """``fc2(act(fc1(x)))`` with dropout on the output."""

    def __init__(self, dim: int, hidden: int, activation: str = "gelu", dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.act = ffn_activation(activation)
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.act(self.fc1(x))))


class SwiGLU(nn.Module):
    """``w2(silu(w1 x) * w3 x)`` (Shazeer 2020); gate and value share one matmul for speed."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        self.hidden = hidden
        self.w13 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.w2 = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w13(x).split(self.hidden, dim=-1)
        return self.dropout(self.w2(F.silu(gate) * value))


MLP_KINDS = ("mlp", "swiglu")


def make_mlp(kind: str, dim: int, hidden: int, activation: str, dropout: float, bias: bool) -> nn.Module:
    """Build the feed-forward block named ``kind`` (mlp|swiglu); swiglu ignores ``activation``."""
    if kind == "mlp":
        return FeedForward(dim, hidden, activation, dropout, bias)
    if kind == "swiglu":
        return SwiGLU(dim, hidden, dropout, bias)
    raise ConfigError(f"unknown feed-forward kind {kind!r}; valid: {', '.join(MLP_KINDS)}")
