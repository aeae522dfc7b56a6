"""Normalisation layers: LayerNorm (optionally bias-free) and RMSNorm, chosen by name."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modelforge.core.errors import ConfigError

NORMS = ("layernorm", "rmsnorm")


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` with the bias optional (GPT-style "no bias" models drop it)."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        super().__init__(dim, eps=eps, bias=bias)


class RMSNorm(nn.Module):
    """Root-mean-square norm (no centring, no bias), as in T5 and LLaMA."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 at least: bf16/fp16 squares lose too much precision.
        dtype = x.dtype
        x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x.to(dtype) * self.weight


def make_norm(kind: str, dim: int, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    """Build the norm named ``kind`` (layernorm|rmsnorm)."""
    if kind == "layernorm":
        return LayerNorm(dim, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps)
    raise ConfigError(f"unknown norm {kind!r}; valid: {', '.join(NORMS)}")


def l2_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Unit-length vectors along ``dim`` (sentence embeddings, cosine similarity)."""
    return F.normalize(x, p=2, dim=dim)
