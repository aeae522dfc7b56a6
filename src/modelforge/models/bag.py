"""Bag-of-embeddings text classifier: word embeddings → masked mean over the text → (tanh hidden layer) → linear.

Made of ``nn.Embedding`` and ``nn.Linear`` only, the layers whose per-sample gradients Opacus computes exactly, so it
trains under DP-SGD (``privacy:``), where the LSTM classifier cannot (Opacus needs its own ``DPLSTM`` for that).
Padding is excluded by a length mask rather than ``padding_idx``, so every per-sample gradient stays exact.
"""

from __future__ import annotations

import torch
from torch import nn

from modelforge.core.registry import register


class BagOfEmbeddings(nn.Module):
    """Token ids (batch, time) + lengths → class logits from the mean of the text's word embeddings."""

    def __init__(self, vocab_size: int, embed_dim: int, num_classes: int, hidden: int = 0, dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.hidden = nn.Sequential(nn.Linear(embed_dim, hidden), nn.Tanh()) if hidden else nn.Identity()
        self.head = nn.Linear(hidden or embed_dim, num_classes)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        vectors = self.embedding(input_ids)
        if lengths is None:
            pooled = vectors.mean(1)
        else:
            mask = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0) < lengths.unsqueeze(1)
            mask = mask.unsqueeze(-1).to(vectors.dtype)
            pooled = (vectors * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.head(self.hidden(self.dropout(pooled)))


def _example() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, 50, (3, 8), generator=torch.Generator().manual_seed(0))
    return ids, torch.tensor([8, 5, 2])


@register("model", "bag_of_embeddings", example=_example, tiny={"vocab_size": 50, "embed_dim": 16})
def bag_of_embeddings(vocab_size: int = 20000, num_classes: int = 2, embed_dim: int = 64, hidden: int = 0,
                      dropout: float = 0.0) -> BagOfEmbeddings:
    """Text classifier: mean of word embeddings (length-masked) → optional tanh layer → linear; DP-SGD friendly."""
    return BagOfEmbeddings(vocab_size, embed_dim, num_classes, hidden, dropout)
