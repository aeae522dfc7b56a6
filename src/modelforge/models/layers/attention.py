"""Multi-head attention through ``F.scaled_dot_product_attention``, with an optional preallocated KV cache.

Masks use one convention everywhere: a boolean ``key_padding_mask`` of shape (batch, keys) that is True where the
key is a real token (the Hugging Face ``attention_mask`` convention), False for padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.models.layers.positions import RotaryEmbedding


class KVCache:
    """Keys and values of past positions for one attention layer, written into preallocated buffers.

    Preallocating avoids a ``torch.cat`` (a full copy of the past) at every generated token. The buffers are left
    uninitialised (only positions below ``length`` are ever read), which saves zero-filling them on every prompt.
    """

    def __init__(self, batch: int, num_heads: int, max_length: int, head_dim: int, *, dtype: torch.dtype,
                 device: torch.device | str = "cpu"):
        shape = (batch, num_heads, max_length, head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.max_length = max_length
        self.length = 0

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``k``/``v`` (batch, heads, new, head_dim) and return every key/value so far."""
        end = self.length + k.shape[2]
        if end > self.max_length:
            raise ConfigError(
                f"KV cache holds {self.max_length} positions but {end} were requested; make a larger cache"
            )
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reset(self) -> None:
        self.length = 0


def build_mask(
    key_padding_mask: torch.Tensor | None, causal: bool, q_len: int, k_len: int, offset: int, device: torch.device
) -> torch.Tensor | None:
    """Boolean mask broadcastable to (batch, heads, q_len, k_len), True where attention is allowed, or None.

    Query ``i`` sits at absolute position ``offset + i``; under ``causal`` it sees keys ``j <= offset + i``.
    """
    mask = None
    if causal and not (q_len == 1 and k_len == offset + 1):  # a single new token sees the whole past
        rows = torch.arange(q_len, device=device).unsqueeze(1) + offset
        mask = (torch.arange(k_len, device=device).unsqueeze(0) <= rows).view(1, 1, q_len, k_len)
    if key_padding_mask is not None:
        pad = key_padding_mask.to(torch.bool).view(key_padding_mask.shape[0], 1, 1, k_len)
        mask = pad if mask is None else mask & pad
    return mask


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with fused projections: ``qkv`` for self-attention, ``q`` + ``kv`` for cross.

    ``forward`` returns ``(output, weights)``; ``weights`` (batch, heads, queries, keys) is None unless
    ``need_weights`` — then attention is computed explicitly instead of by the fused kernel, for explanations.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        causal: bool = False,
        cross_attention: bool = False,
        rotary: RotaryEmbedding | None = None,
    ):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"attention width {dim} is not divisible by num_heads={num_heads}; change one of them")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.causal, self.cross_attention, self.dropout = causal, cross_attention, dropout
        self.rotary = rotary
        if cross_attention:
            self.q = nn.Linear(dim, dim, bias=bias)
            self.kv = nn.Linear(dim, 2 * dim, bias=bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def _project(self, x: torch.Tensor, memory: torch.Tensor | None):
        if self.cross_attention:
            if memory is None:
                raise ConfigError("cross-attention needs the encoder output: pass memory=...")
            k, v = self.kv(memory).split(self.dim, dim=-1)
            return self._heads(self.q(x)), self._heads(k), self._heads(v)
        q, k, v = self.qkv(x).split(self.dim, dim=-1)
        return self._heads(q), self._heads(k), self._heads(v)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, q_len, _ = x.shape
        if self.cross_attention and cache is not None and cache.length:
            # Decoding step: the encoder memory is fixed, so its keys/values were projected on the first step.
            q, k, v = self._heads(self.q(x)), cache.k[:, :, : cache.length], cache.v[:, :, : cache.length]
        else:
            q, k, v = self._project(x, memory)
            if self.cross_attention and cache is not None:
                cache.update(k, v)
        offset = cache.length if cache is not None and not self.cross_attention else 0
        if self.rotary is not None:
            q, k = self.rotary(q, k, offset)
        if cache is not None and not self.cross_attention:
            k, v = cache.update(k, v)
        causal = self.causal and not self.cross_attention
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            mask = build_mask(key_padding_mask, causal, q_len, k.shape[2], offset, x.device)
            out, weights = self._explicit(q, k, v, mask, dropout)
        elif causal and offset == 0 and key_padding_mask is None and q_len == k.shape[2]:
            # The fused kernels skip masked blocks entirely when told the mask is causal.
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            mask = build_mask(key_padding_mask, causal, q_len, k.shape[2], offset, x.device)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        out = out.transpose(1, 2).reshape(batch, q_len, self.dim)
        return self.out(out), weights

    def _explicit(self, q, k, v, mask, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=-1)
        return F.dropout(weights, dropout) @ v, weights

    def make_cache(self, batch: int, max_length: int, dtype: torch.dtype, device: torch.device | str) -> KVCache:
        return KVCache(batch, self.num_heads, max_length, self.head_dim, dtype=dtype, device=device)
