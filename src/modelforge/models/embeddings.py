"""Word embeddings (word2vec, Mikolov et al. 2013): skip-gram and CBOW, both trained with negative sampling.

Both models return one logits tensor (batch, 1 + negatives): column 0 scores the true (context, target) pair and
the others the sampled negatives, so the task's loss is binary cross-entropy against [1, 0, …, 0]. Sampling
negatives and subsampling frequent words are data policy and belong to the task. The models work on ids only;
the id ↔ word mapping lives in the task's vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.core.registry import register


@dataclass
class Word2VecConfig:
    vocab_size: int = 10000
    dim: int = 100


class _Word2Vec(nn.Module):
    """Input ("word") and output ("context") vectors plus the lookups shared by both objectives."""

    def __init__(self, cfg: Word2VecConfig):
        super().__init__()
        self.cfg = cfg
        self.in_vectors = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.out_vectors = nn.Embedding(cfg.vocab_size, cfg.dim)
        # word2vec.c zeroes the output vectors; that gives the input vectors an exactly zero first gradient, so both
        # start small and random instead.
        nn.init.uniform_(self.in_vectors.weight, -0.5 / cfg.dim, 0.5 / cfg.dim)
        nn.init.uniform_(self.out_vectors.weight, -0.5 / cfg.dim, 0.5 / cfg.dim)

    @staticmethod
    def _scores(hidden: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor):
        candidates = torch.cat([targets.unsqueeze(1), negatives], dim=1)  # (batch, 1 + k)
        return (outputs(candidates) @ hidden.unsqueeze(-1)).squeeze(-1)

    @property
    def vectors(self) -> torch.Tensor:
        """The learned word vectors (vocab, dim): the input embeddings, as in word2vec."""
        return self.in_vectors.weight

    @torch.no_grad()
    def nearest(self, query: torch.Tensor | int | list[int], k: int = 10,
                exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` most cosine-similar word ids to each query: ``(ids (n, k), similarities (n, k))``.

        ``query`` is word ids (int, list or 1-D long tensor) — each word is excluded from its own answers — or
        vectors (n, dim) as a float tensor. ``exclude`` (n, m) adds more ids to leave out per query row.
        """
        query = torch.as_tensor(query, device=self.vectors.device)
        if query.is_floating_point():
            vectors, banned = query.reshape(-1, self.cfg.dim), None
        else:
            ids = query.reshape(-1)
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.cfg.vocab_size):
                raise ConfigError(f"word ids must lie in 0..{self.cfg.vocab_size - 1}, got {ids.tolist()}")
            vectors, banned = self.vectors[ids], ids.unsqueeze(1)
        if exclude is not None:
            exclude = exclude.to(vectors.device).reshape(vectors.shape[0], -1)
            banned = exclude if banned is None else torch.cat([banned, exclude], dim=1)
        if k > self.cfg.vocab_size - (0 if banned is None else banned.shape[1]):
            raise ConfigError(f"k={k} exceeds the {self.cfg.vocab_size} words available; ask for fewer")
        similarity = F.normalize(vectors, dim=-1) @ F.normalize(self.vectors, dim=-1).T
        if banned is not None:
            similarity = similarity.scatter(1, banned, float("-inf"))
        best = similarity.topk(k, dim=-1)
        return best.indices, best.values

    @torch.no_grad()
    def analogy(self, a: int, b: int, c: int, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """``a`` is to ``b`` as ``c`` is to …? The ``k`` ids nearest to b − a + c (unit vectors), excluding a, b, c.

        Returns ``(ids (k,), similarities (k,))``; e.g. analogy(man, king, woman) → queen for good vectors.
        """
        unit = F.normalize(self.vectors, dim=-1)
        target = unit[b] - unit[a] + unit[c]
        ids, sims = self.nearest(target.unsqueeze(0), k, exclude=torch.tensor([[a, b, c]]))
        return ids[0], sims[0]


class SkipGram(_Word2Vec):
    """Predict context words from the centre word: ``forward(center, context, negatives)`` → (batch, 1 + k)."""

    def forward(self, center: torch.Tensor, context: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        return self._scores(self.in_vectors(center), self.out_vectors, context, negatives)


class CBOW(_Word2Vec):
    """Predict the centre word from the mean of its context: ``forward(context (batch, window), center, negatives)``.

    ``context_mask`` (batch, window), True on real context words, allows shorter windows at sentence edges.
    """

    def forward(self, context: torch.Tensor, center: torch.Tensor, negatives: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        vectors = self.in_vectors(context)
        if context_mask is None:
            hidden = vectors.mean(dim=1)
        else:
            mask = context_mask.to(vectors.dtype).unsqueeze(-1)
            hidden = (vectors * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self._scores(hidden, self.out_vectors, center, negatives)


def _ids(shape: tuple[int, ...], seed: int, vocab: int = 50) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


_TINY = {"vocab_size": 50, "dim": 16}


@register("model", "skipgram", example=lambda: (_ids((8,), 0), _ids((8,), 1), _ids((8, 5), 2)), tiny=_TINY)
def skipgram(vocab_size: int = 10000, dim: int = 100) -> SkipGram:
    """word2vec skip-gram with negative sampling; (center, context, negatives) → logits; nearest()/analogy()."""
    return SkipGram(Word2VecConfig(vocab_size, dim))


@register("model", "cbow", example=lambda: (_ids((8, 4), 0), _ids((8,), 1), _ids((8, 5), 2)), tiny=_TINY)
def cbow(vocab_size: int = 10000, dim: int = 100) -> CBOW:
    """word2vec CBOW with negative sampling; (context, center, negatives) → logits; nearest()/analogy()."""
    return CBOW(Word2VecConfig(vocab_size, dim))
