"""Decoding for the seq2seq family's encoder–decoder models: the step decoders of its two model families and
``decode_ids`` (encode a padded source batch, then search). The searches themselves (greedy, beam search with GNMT's
length penalty) live in ``tasks/beam_search.py``, shared with the image captioner; they are re-exported here.

``step_decoder(model, ...)`` wraps the two model families:

- ``Seq2SeqGRU`` (``encode`` → memory + recurrent state, ``step``): the state is reordered, the memory only when
  rows move between sources;
- ``TransformerSeq2Seq`` (``encode`` + ``decode`` with KV caches): ``beam_search.CachedStepDecoder`` over the
  encoder memory and the source padding mask.
"""

from __future__ import annotations

import torch
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.tasks.beam_search import (
    CachedStepDecoder,
    SearchSettings,
    StepDecoder,
    beam_search,
    greedy_search,
    length_penalty,
    max_new_limits,
    normalized_score,
    search,
)

# The searches are re-exported: this module stays the seq2seq family's one decoding API.
__all__ = ["CachedStepDecoder", "GRUStepDecoder", "SearchSettings", "StepDecoder", "TransformerStepDecoder",
           "beam_search", "decode_ids", "greedy_search", "length_penalty", "max_new_limits", "normalized_score",
           "position_limit", "search", "step_decoder"]


# ----------------------------------------------------------------------------------------------------- adapters


class GRUStepDecoder:
    """Step decoder over ``Seq2SeqGRU.encode`` / ``step``."""

    def __init__(self, model: nn.Module, src_ids: torch.Tensor, src_lengths: torch.Tensor):
        self.model = model
        self.memory, self.state = model.encode(src_ids, src_lengths)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        logits, self.state, _ = self.model.step(tokens, self.state, self.memory)
        return logits

    def select(self, index: torch.Tensor, within_source: bool = False) -> None:
        hidden, feed = self.state
        self.state = (hidden.index_select(1, index), feed.index_select(0, index))
        if not within_source:
            self.memory = tuple(t.index_select(0, index) for t in self.memory)


class TransformerStepDecoder(CachedStepDecoder):
    """Step decoder over ``TransformerSeq2Seq.encode`` / ``decode`` with preallocated KV caches."""

    def __init__(self, model: nn.Module, src_ids: torch.Tensor, src_lengths: torch.Tensor, max_steps: int):
        positions = torch.arange(src_ids.shape[1], device=src_ids.device)
        mask = positions.unsqueeze(0) < src_lengths.to(src_ids.device).unsqueeze(1)
        super().__init__(model, model.encode(src_ids, mask), mask, max_steps)


def step_decoder(model: nn.Module, src_ids: torch.Tensor, src_lengths: torch.Tensor, max_steps: int) -> StepDecoder:
    """The step decoder for ``model``'s family (``max_steps``: most target positions fed, BOS included)."""
    model = getattr(model, "module", model)  # DDP/compiled wrappers
    if hasattr(model, "step") and hasattr(model, "encode"):
        return GRUStepDecoder(model, src_ids, src_lengths)
    if hasattr(model, "decode") and hasattr(model, "make_caches"):
        return TransformerStepDecoder(model, src_ids, src_lengths, max_steps)
    raise ConfigError(f"{type(model).__name__} is not an encoder–decoder model (needs encode/step or encode/decode)")


def position_limit(model: nn.Module) -> int | None:
    """Most target positions the model can attend over (a Transformer's ``max_positions``), None if unbounded."""
    model = getattr(model, "module", model)
    if hasattr(model, "decode"):
        return getattr(getattr(model, "cfg", None), "max_positions", None)
    return None


@torch.no_grad()
def decode_ids(model: nn.Module, src_ids: torch.Tensor, src_lengths: torch.Tensor, settings: SearchSettings,
               max_new: int | torch.Tensor) -> list[list[int]]:
    """Encode a padded source batch and search; the generated ids per source, without BOS/EOS."""
    limits = max_new_limits(max_new, src_ids.shape[0], src_ids.device)
    cap = position_limit(model)
    if cap is not None:
        limits = limits.clamp(max=cap)  # BOS takes position 0, so max_new tokens are fed at positions 0..max_new-1
    decoder = step_decoder(model, src_ids, src_lengths, int(limits.max()))
    return search(decoder, src_ids.shape[0], settings, limits)
