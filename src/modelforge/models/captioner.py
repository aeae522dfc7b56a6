"""Image captioner: a small CNN turns the image into a grid of feature vectors (the "memory"), and the seq2seq
family's Transformer decoder (``transformer.cross_attention_decode``: causal self-attention + cross-attention over
the grid, KV caches) writes the caption token by token.

``forward(images, tgt_ids, owner=None)`` is teacher-forced and returns logits (captions, tgt_time, vocab); with
``owner`` each image is encoded once for all of its captions. Decoding (greedy, beam
search) belongs to the task: it drives ``encode`` / ``decode`` / ``make_caches`` as it drives ``TransformerSeq2Seq``
(``tasks/beam_search.CachedStepDecoder``). The grid has learned 2-D positions and ``num_layers`` Transformer encoder
blocks over it, so that a caption word can depend on where things are relative to each other ("left of", "above").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.core.registry import register
from modelforge.models.layers import KVCache, make_norm
from modelforge.models.transformer import (
    Embeddings,
    TransformerBlock,
    TransformerConfig,
    cross_attention_caches,
    cross_attention_decode,
    init_weights,
)


def conv_stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """Halve the resolution (3×3 stride 2) then refine (3×3), each with BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ImageCaptioner(nn.Module):
    """CNN grid encoder (+ Transformer encoder blocks over the grid) → Transformer decoder with cross-attention."""

    def __init__(self, cfg: TransformerConfig, in_channels: int, image_size: int, widths: Sequence[int],
                 num_decoder_layers: int):
        super().__init__()
        self.cfg = cfg
        side = image_size // 2 ** len(widths)
        if not widths or side < 1 or image_size % 2 ** len(widths):
            raise ConfigError(f"image_size {image_size} must be a positive multiple of 2^{len(widths)} (one halving "
                              f"per width in {list(widths)})")
        channels = [in_channels, *widths]
        self.image_encoder = nn.Sequential(*(conv_stage(a, b) for a, b in zip(channels, channels[1:])))
        self.grid_proj = nn.Linear(widths[-1], cfg.dim)
        self.grid_positions = nn.Parameter(torch.zeros(1, side * side, cfg.dim))
        self.encoder_blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.num_layers))
        self.encoder_norm = make_norm(cfg.norm, cfg.dim, cfg.norm_eps, cfg.bias)
        # the decoder's parts, named as TransformerSeq2Seq names them (cross_attention_decode reads these names)
        self.tgt_embeddings = Embeddings(cfg)
        self.decoder_blocks = nn.ModuleList(TransformerBlock(cfg, causal=True, cross_attention=True)
                                            for _ in range(num_decoder_layers))
        self.decoder_norm = make_norm(cfg.norm, cfg.dim, cfg.norm_eps, cfg.bias)
        self.lm_head = None  # tied to the token embedding
        init_weights(self, cfg.num_layers + num_decoder_layers)
        nn.init.normal_(self.grid_positions, std=0.02)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Memory (batch, grid cells, dim) of normalised images (batch, channels, size, size)."""
        grid = self.image_encoder(images).flatten(2).transpose(1, 2)  # (batch, cells, widths[-1])
        x = self.grid_proj(grid) + self.grid_positions
        for block in self.encoder_blocks:
            x = block(x)[0]
        return self.encoder_norm(x)

    def decode(self, tgt_ids: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None,
               caches: list[tuple[KVCache, KVCache]] | None = None) -> torch.Tensor:
        """Logits (batch, time, vocab) for ``tgt_ids`` given the memory; with ``caches`` continuing cached ones."""
        return cross_attention_decode(self, tgt_ids, memory, memory_mask, caches)

    def make_caches(self, batch: int, max_length: int, src_length: int) -> list[tuple[KVCache, KVCache]]:
        return cross_attention_caches(self, batch, max_length, src_length)

    def forward(self, images: torch.Tensor, tgt_ids: torch.Tensor, owner: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits; ``owner`` (one image index per caption row) decodes several captions per image
        against one encoding of it."""
        memory = self.encode(images)
        return self.decode(tgt_ids, memory if owner is None else memory.index_select(0, owner))


def _example() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 32, 32, generator=generator), torch.randint(0, 40, (2, 7), generator=generator)


_TINY = {"vocab_size": 40, "image_size": 32, "widths": [8, 16], "dim": 32, "num_layers": 1, "num_decoder_layers": 1,
         "num_heads": 2, "mlp_hidden": 64, "dropout": 0.0}


@register("model", "image_captioner", example=_example, tiny=_TINY)
def image_captioner(vocab_size: int = 1000, in_channels: int = 3, image_size: int = 64,
                    widths: tuple[int, ...] = (32, 64, 128), dim: int = 128, num_layers: int = 1,
                    num_decoder_layers: int = 2, num_heads: int = 4, mlp_hidden: int = 256, dropout: float = 0.1,
                    max_positions: int = 64) -> ImageCaptioner:
    """CNN grid encoder + Transformer decoder with cross-attention (pre-LN, sinusoidal); (images, tgt_in) → logits."""
    cfg = TransformerConfig(vocab_size=vocab_size, max_positions=max_positions, dim=dim, num_layers=num_layers,
                            num_heads=num_heads, mlp_hidden=mlp_hidden, dropout=dropout, attn_dropout=dropout,
                            positions="sinusoidal", scale_embeddings=True, activation="relu")
    return ImageCaptioner(cfg, in_channels, image_size, list(widths), num_decoder_layers)
