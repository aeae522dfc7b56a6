"""The stack text classifier: a frozen pretrained encoder's sentence embedding and a TF-IDF of the same token ids,
side by side under one linear layer — the text classifier's choice for tables of long statements and articles
(docs/ARCHITECTURE.md, "Text classification: fine-tune or stack").

Everything is computed in the graph from ``(input_ids, attention_mask)``, so serving, ONNX export and int8
quantization treat it as any other classifier:

- embedding: the encoder's hidden states mean-pooled over the real tokens and L2-normalised (a sentence encoder's
  embedding, as sentence-transformers makes it from all-MiniLM-L6-v2);
- TF-IDF: the WordPiece ids (unigram buckets) and their adjacent pairs hashed into ``pair_buckets`` extra buckets,
  sublinear term frequency ``1 + ln(count)``, the ``idf`` buffer (fitted on the training split with scikit-learn's
  smooth idf; 0 for buckets never seen in training, which scikit-learn drops from its vocabulary) and L2
  normalisation. Counts come from an (L×L) equality of the row's bucket ids, so no vocabulary-sized tensor is ever
  built; the linear term is a gather of the bucket weights.

logits = head(embedding) + Σ_positions weight_p · tfidf_head[bucket_p]. The encoder is frozen; the heads are
fitted by logistic regression (tasks/text/stack_fit.py), not by gradient steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from modelforge.core.registry import register
from modelforge.models.transformer import TransformerEncoder, _bert, _encoder_example, mean_pool

PAIR_MULTIPLIER = 1_000_003  # a prime above any WordPiece vocabulary: (a, b) → a·P + b is unique before the modulo


class InGraphTfidf(nn.Module):
    """TF-IDF features of token-id rows as (bucket per position, weight per position): summing the weights of the
    positions that share a bucket gives that bucket's L2-normalised TF-IDF value."""

    def __init__(self, vocab_size: int, pair_buckets: int, ignored_ids: Sequence[int] = ()):
        super().__init__()
        self.vocab_size, self.pair_buckets = vocab_size, pair_buckets
        self.register_buffer("idf", torch.ones(vocab_size + pair_buckets))  # fit_idf sets it from the training rows
        # special tokens ([CLS], [SEP], [PAD] …) are no words: never counted; -1 stands in for an empty list
        self.register_buffer("ignored", torch.tensor(sorted(ignored_ids) or [-1], dtype=torch.long), persistent=False)

    @property
    def size(self) -> int:
        return self.vocab_size + self.pair_buckets

    def buckets(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(bucket ids, counted) of shape (batch, 2L-1): the L unigram ids, then the L-1 hashed adjacent pairs; a
        position counts when it is a real token that is not special (a pair: when both of its tokens are)."""
        keep = attention_mask.bool() & ~(input_ids.unsqueeze(-1) == self.ignored).any(-1)
        pairs = self.vocab_size + torch.remainder(input_ids[:, :-1] * PAIR_MULTIPLIER + input_ids[:, 1:],
                                                  self.pair_buckets)
        return torch.cat([input_ids, pairs], dim=1), torch.cat([keep, keep[:, :-1] & keep[:, 1:]], dim=1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(buckets, weights), each (batch, 2L-1); a bucket seen c times has value tf·idf = (1 + ln c)·idf, each of
        its positions carries value / c, and sum_b value_b² = sum_p value_p² / c_p gives the L2 norm."""
        buckets, keep = self.buckets(input_ids, attention_mask)
        counted = keep.to(self.idf.dtype)
        same = (buckets.unsqueeze(2) == buckets.unsqueeze(1)).to(self.idf.dtype) * counted.unsqueeze(1)
        count = same.sum(-1).clamp(min=1.0)
        value = (1.0 + torch.log(count)) * self.idf[buckets]
        share = value / count * counted
        norm = torch.sqrt((share * value).sum(-1, keepdim=True)).clamp(min=1e-12)
        return buckets, share / norm

    @torch.no_grad()
    def fit_idf(self, rows: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> int:
        """Set ``idf`` from the training rows, given as (input_ids, attention_mask) batches: scikit-learn's smooth
        idf ln((1 + n) / (1 + df)) + 1, and 0 for buckets no training row has. Returns the buckets seen."""
        df = torch.zeros(self.size, dtype=torch.float64)
        n = 0
        for ids, mask in rows:
            buckets, keep = self.buckets(ids, mask)
            for row, kept in zip(buckets, keep):
                df[torch.unique(row[kept])] += 1
            n += len(ids)
        idf = torch.log((1.0 + n) / (1.0 + df)) + 1.0
        self.idf.copy_(torch.where(df > 0, idf, torch.zeros_like(idf)).to(self.idf.dtype))
        return int((df > 0).sum())


class TextStackClassifier(nn.Module):
    """Frozen encoder embedding ⊕ in-graph TF-IDF → one linear layer; ``forward(input_ids, attention_mask)``."""

    def __init__(self, encoder: TransformerEncoder, num_classes: int, pair_buckets: int,
                 ignored_ids: Sequence[int] = ()):
        super().__init__()
        self.encoder = encoder.requires_grad_(False)
        self.tfidf = InGraphTfidf(encoder.cfg.vocab_size, pair_buckets, ignored_ids)
        self.head = nn.Linear(encoder.cfg.dim, num_classes)
        self.tfidf_head = nn.Parameter(torch.zeros(self.tfidf.size, num_classes))

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The mean-pooled, L2-normalised sentence embedding (batch, dim)."""
        return F.normalize(mean_pool(self.encoder(input_ids, attention_mask), attention_mask), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        buckets, weights = self.tfidf(input_ids, attention_mask)
        tfidf_logits = (weights.unsqueeze(-1) * F.embedding(buckets, self.tfidf_head)).sum(1)
        return self.head(self.embed(input_ids, attention_mask)) + tfidf_logits


_TINY = {"vocab_size": 64, "dim": 32, "num_layers": 2, "num_heads": 2, "mlp_hidden": 64, "pair_buckets": 64}


@register("model", "text_stack", example=_encoder_example, tiny=_TINY)
def text_stack(vocab_size: int = 30522, num_classes: int = 2, max_positions: int = 512, dim: int = 384,
               num_layers: int = 6, num_heads: int = 12, mlp_hidden: int = 1536, pair_buckets: int = 2**18,
               ignored_ids: Sequence[int] = ()) -> TextStackClassifier:
    """Text classifier: frozen BERT-layout encoder embedding + in-graph TF-IDF of its token ids → linear."""
    encoder = TransformerEncoder(_bert(vocab_size, max_positions, dim, num_layers, num_heads, mlp_hidden, 0.0))
    return TextStackClassifier(encoder, num_classes, pair_buckets, ignored_ids)
