"""Greedy search and beam search with a length penalty, for every model that decodes token by token from an
encoded input (the seq2seq family's translation and summarization, the multimodal family's image captioning).

Both searches drive a *step decoder*: an object that has encoded a batch of inputs and then, one position at a
time, maps the previous target tokens (rows,) to next-token logits (rows, vocab), and can ``select`` rows (expand a
batch into beams, or reorder beams after each step). ``CachedStepDecoder`` is the one for models with
``decode``/``make_caches`` over an encoder memory (KV caches: the filled part of each self-attention cache is
reordered; the cross-attention caches and the memory only when rows move between inputs).

Beam search keeps a finished hypothesis in its beam (its only continuation is itself, at no cost) instead of setting
it aside. With one beam this makes beam search *exactly* greedy search, and with several it ranks finished and
unfinished hypotheses together by the length-normalised score ``log P(Y) / lp(Y)``, where ``lp`` is GNMT's length
penalty ``((5 + |Y|) / 6) ** alpha`` (Wu et al. 2016): alpha 0 ranks by total log probability (which favours short
outputs), larger alpha moves towards the per-token average. ``|Y|`` counts generated tokens, end-of-sequence
included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from modelforge.core.errors import ConfigError


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int, label_smoothing: float) -> torch.Tensor:
    """Teacher forcing's loss: ``logits`` (B, T-1, V) from the targets' first T-1 tokens scored against their last
    T-1 (B, T), padding left out."""
    import torch.nn.functional as F

    return F.cross_entropy(logits.flatten(0, 1).float(), targets[:, 1:].flatten(), ignore_index=pad_id,
                           label_smoothing=label_smoothing)


class StepDecoder(Protocol):
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits (rows, vocab) after feeding ``tokens`` (rows,)."""

    def select(self, index: torch.Tensor, within_source: bool = False) -> None:
        """Keep rows ``index`` (in that order). ``within_source``: every new row comes from a row of the same
        source, so per-source tensors (encoder memory) need not move."""


@dataclass(frozen=True)
class SearchSettings:
    """``max_new`` (per row or one int) bounds the generated tokens, end-of-sequence included."""

    bos_id: int
    eos_id: int
    banned_ids: tuple[int, ...] = ()
    beam_size: int = 1
    length_penalty: float = 0.0

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ConfigError(f"beam size must be >= 1, got {self.beam_size}")
        if self.length_penalty < 0:
            raise ConfigError(f"length penalty must be >= 0, got {self.length_penalty}")


def length_penalty(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT's ``((5 + length) / 6) ** alpha``; 1 for alpha 0."""
    return ((5.0 + lengths.float()) / 6.0) ** alpha


def normalized_score(log_prob: torch.Tensor, lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """The score beams are ranked by: total log probability divided by the length penalty."""
    return log_prob / length_penalty(lengths, alpha)


class CachedStepDecoder:
    """Step decoder over any model with ``decode(tgt_ids, memory, memory_mask, caches)`` and ``make_caches(batch,
    max_length, memory_length)`` (``TransformerSeq2Seq``, ``ImageCaptioner``), given the encoder's memory and its
    mask (True on real positions; None: every position is real)."""

    def __init__(self, model: nn.Module, memory: torch.Tensor, mask: torch.Tensor | None, max_steps: int):
        self.model = model
        self.memory, self.mask = memory, mask
        self.max_steps = max_steps
        self.caches: list[Any] | None = None

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.caches is None:
            self.caches = self.model.make_caches(tokens.shape[0], self.max_steps, self.memory.shape[1])
        return self.model.decode(tokens.unsqueeze(1), self.memory, self.mask, self.caches)[:, -1]

    def select(self, index: torch.Tensor, within_source: bool = False) -> None:
        if not within_source:
            self.memory = self.memory.index_select(0, index)
            if self.mask is not None:
                self.mask = self.mask.index_select(0, index)
        for self_cache, cross_cache in self.caches or ():
            caches = (self_cache,) if within_source else (self_cache, cross_cache)
            for cache in caches:
                if cache.length and len(index) == cache.k.shape[0]:
                    filled = cache.length
                    cache.k[:, :, :filled] = cache.k[:, :, :filled].index_select(0, index)
                    cache.v[:, :, :filled] = cache.v[:, :, :filled].index_select(0, index)
                elif cache.length:  # a different row count: reallocate (only happens before beams split)
                    cache.k, cache.v = cache.k.index_select(0, index), cache.v.index_select(0, index)


def max_new_limits(max_new: int | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    limits = torch.as_tensor(max_new, dtype=torch.long, device=device).expand(batch).clone()
    if bool((limits < 1).any()):
        raise ConfigError("every row needs room for at least one generated token")
    return limits


def _strip(tokens: list[int], eos_id: int) -> list[int]:
    return tokens[:-1] if tokens and tokens[-1] == eos_id else tokens


def _banned(logits: torch.Tensor, banned_ids: Sequence[int]) -> torch.Tensor:
    if not banned_ids:
        return logits
    return logits.index_fill(-1, torch.tensor(list(banned_ids), device=logits.device), float("-inf"))


@torch.no_grad()
def greedy_search(decoder: StepDecoder, batch: int, settings: SearchSettings,
                  max_new: int | torch.Tensor) -> list[list[int]]:
    """The most likely next token at every step, until end-of-sequence or ``max_new`` tokens; EOS is stripped."""
    device = _device_of(decoder)
    limits = max_new_limits(max_new, batch, device)
    tokens = torch.full((batch,), settings.bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    out: list[list[int]] = [[] for _ in range(batch)]
    for t in range(int(limits.max())):
        tokens = _banned(decoder.step(tokens).float(), settings.banned_ids).argmax(dim=-1)
        for row in (~finished).nonzero().flatten().tolist():
            out[row].append(int(tokens[row]))
        finished |= (tokens == settings.eos_id) | (limits <= t + 1)
        if bool(finished.all()):
            break
    return [_strip(row, settings.eos_id) for row in out]


@torch.no_grad()
def beam_search(decoder: StepDecoder, batch: int, settings: SearchSettings,
                max_new: int | torch.Tensor) -> list[list[int]]:
    """The best-scoring hypothesis per source (``normalized_score``) among ``beam_size`` kept at every step."""
    device = _device_of(decoder)
    limits = max_new_limits(max_new, batch, device).unsqueeze(1)
    k, alpha = settings.beam_size, settings.length_penalty
    rows = torch.arange(batch, device=device)
    decoder.select(rows.repeat_interleave(k))
    tokens = torch.full((batch * k,), settings.bos_id, dtype=torch.long, device=device)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # the beams start identical: only the first may expand, or the search would pick duplicates
    lengths = torch.zeros(batch, k, dtype=torch.long, device=device)
    finished = torch.zeros(batch, k, dtype=torch.bool, device=device)
    history = torch.zeros(batch, k, 0, dtype=torch.long, device=device)
    for _ in range(int(limits.max())):
        log_probs = _banned(decoder.step(tokens).float(), settings.banned_ids).log_softmax(dim=-1)
        vocab = log_probs.shape[-1]
        candidates = scores.unsqueeze(-1) + log_probs.view(batch, k, vocab)
        # A finished hypothesis continues only as itself (through the EOS slot), keeping its score and length.
        done = finished.unsqueeze(-1).expand_as(candidates)
        candidates = candidates.masked_fill(done, float("-inf"))
        candidates[..., settings.eos_id] = torch.where(finished, scores, candidates[..., settings.eos_id])
        new_lengths = lengths + (~finished).long()
        keys = normalized_score(candidates, new_lengths.unsqueeze(-1), alpha)
        chosen = keys.view(batch, k * vocab).topk(k, dim=-1).indices
        beam, token = chosen // vocab, chosen % vocab
        scores = candidates.view(batch, k * vocab).gather(1, chosen)
        was_finished = finished.gather(1, beam)
        lengths = new_lengths.gather(1, beam)
        finished = was_finished | (token == settings.eos_id) | (lengths >= limits) | torch.isinf(scores)
        history = torch.cat([history.gather(1, beam.unsqueeze(-1).expand_as(history)), token.unsqueeze(-1)], dim=-1)
        decoder.select((rows.unsqueeze(1) * k + beam).flatten(), within_source=True)
        tokens = token.flatten()
        if bool(finished.all()):
            break
    best = normalized_score(scores, lengths, alpha).argmax(dim=-1)
    out = []
    for row, b in enumerate(best.tolist()):
        out.append(_strip(history[row, b, : int(lengths[row, b])].tolist(), settings.eos_id))
    return out


def search(decoder: StepDecoder, batch: int, settings: SearchSettings, max_new: int | torch.Tensor) -> list[list[int]]:
    """Greedy search for one beam (cheaper than a one-beam beam search, and equal to it), else beam search."""
    if settings.beam_size == 1:
        return greedy_search(decoder, batch, settings, max_new)
    return beam_search(decoder, batch, settings, max_new)


def _device_of(decoder: Any) -> torch.device:
    model = getattr(decoder, "model", None)
    if model is not None:
        return next(model.parameters()).device
    return torch.device(getattr(decoder, "device", "cpu"))
