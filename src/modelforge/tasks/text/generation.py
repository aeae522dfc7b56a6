"""Sampling text from a decoder-only language model: temperature, top-k, top-p (nucleus), seed, streaming.

Decoding policy lives here, not in the model: the model gives logits and a KV cache (``make_caches``,
``hidden_states``, ``head``), this module picks tokens. With a seed, generation is reproducible: every random draw
comes from one ``torch.Generator`` seeded with it, never from the global RNG (so generating inside a training run
does not disturb its data order either).

Loading a run and generating from it is ``modelforge.api.generate`` (the body of ``modelforge generate``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.tasks.sampling import SamplingConfig


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Mask (to -inf) every token outside the top ``k`` and outside the smallest set holding ``top_p`` probability.

    ``logits`` is (batch, vocab), already divided by the temperature. The most likely token always survives.
    """
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # A token is dropped when the tokens ranked above it already reach top_p (so the first one never is).
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Next ids (batch, 1) from last-position logits (batch, vocab)."""
    logits = logits.float()
    if cfg.temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    if cfg.top_k is not None and cfg.top_k < logits.shape[-1] and (cfg.top_p is None or cfg.top_p >= 1):
        # Top-k alone: softmax and draw over the k survivors only, not over the whole (masked) vocabulary.
        values, indices = torch.topk(logits, cfg.top_k, dim=-1)
        choice = torch.multinomial((values / cfg.temperature).softmax(dim=-1), 1, generator=generator)
        return indices.gather(-1, choice)
    logits = filter_logits(logits / cfg.temperature, cfg.top_k, cfg.top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)


def _uses_kv_cache(model: nn.Module) -> bool:
    return all(hasattr(model, name) for name in ("make_caches", "hidden_states", "head"))


class _NextLogits:
    """Last-position logits for a growing sequence, through the model's KV cache (or recurrent state) if it has one.

    Learned positions stop at ``max_positions``: past it the model conditions on the last window (nanoGPT's
    cropping), and the cache is refilled from that window, since cached keys carry their old positions.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        cfg = getattr(model, "cfg", None)
        self.window: int | None = getattr(cfg, "max_positions", None)
        self.cached = _uses_kv_cache(model) and self.window is not None
        self.recurrent = hasattr(model, "forward_with_state")
        self.caches: list[Any] | None = None
        self.state: Any = None

    def __call__(self, ids: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
        if self.recurrent:  # an RNN carries everything it needs in its state: feed only the new tokens
            logits, self.state = self.model.forward_with_state(fresh, self.state)
            return logits[:, -1]
        window = self.window
        context = ids if window is None else ids[:, -window:]
        if not self.cached:
            return self.model(context)[:, -1]
        if self.caches is None or self.caches[0].length + fresh.shape[1] > window:
            self.caches = self.model.make_caches(ids.shape[0], window)
            hidden = self.model.hidden_states(context, self.caches)
        else:
            hidden = self.model.hidden_states(fresh, self.caches)
        return self.model.head(hidden[:, -1])


@torch.inference_mode()  # lighter per step than no_grad; only plain ints leave this function
def generate_ids(
    model: nn.Module,
    prompt_ids: Sequence[int],
    cfg: SamplingConfig,
    on_token: Callable[[int], None] | None = None,
    stop_ids: Sequence[int] = (),
    banned_ids: Sequence[int] = (),
) -> list[int]:
    """Continue one prompt; returns the new ids only. ``on_token`` sees each id as soon as it is chosen.

    ``banned_ids`` are never generated (e.g. a tokenizer's [PAD]/[UNK], which stand for no text).
    """
    if not prompt_ids:
        raise ConfigError("generation needs at least one prompt token")
    param = next(model.parameters())
    generator = None
    if cfg.temperature > 0:
        generator = torch.Generator(device=param.device)
        if cfg.seed is None:
            generator.seed()  # fresh entropy; the global RNG is left untouched either way
        else:
            generator.manual_seed(cfg.seed)
    was_training = model.training
    model.eval()
    start = len(prompt_ids)
    # Prompt + continuation in one buffer: no per-token torch.cat (a copy of everything so far).
    ids = torch.empty(1, start + cfg.max_new_tokens, dtype=torch.long, device=param.device)
    ids[0, :start] = torch.tensor(list(prompt_ids), dtype=torch.long)
    fresh, new, next_logits, stops = ids[:, :start], [], _NextLogits(model), set(stop_ids)
    banned = torch.tensor(list(banned_ids), dtype=torch.long, device=param.device)
    try:
        for end in range(start, start + cfg.max_new_tokens):
            logits = next_logits(ids[:, :end], fresh)
            if banned_ids:
                logits = logits.index_fill_(-1, banned, float("-inf"))  # the step's own logits: no copy needed
            fresh = sample_next(logits, cfg, generator)
            token = int(fresh.item())
            if token in stops:
                break
            new.append(token)
            ids[:, end : end + 1] = fresh
            if on_token is not None:
                on_token(token)
    finally:
        model.train(was_training)
    return new


class TextStreamer:
    """Turns ids into text pieces as they arrive: decodes everything so far and emits the new suffix.

    Decoding the whole sequence (not each token alone) keeps byte-level BPE and WordPiece joins right; a trailing
    U+FFFD (half of a multi-byte character) is held back until the next token completes it.
    """

    def __init__(self, decode: Callable[[list[int]], str], write: Callable[[str], Any]):
        self.decode, self.write = decode, write
        self.ids: list[int] = []
        self.emitted = ""

    def __call__(self, token: int) -> None:
        self.ids.append(token)
        text = self.decode(self.ids)
        if text.endswith("\ufffd"):
            return
        if text.startswith(self.emitted):
            piece = text[len(self.emitted) :]
        else:  # a tokenizer re-spaced earlier text; emit only what is new in length
            piece = text[len(self.emitted) :] if len(text) > len(self.emitted) else ""
        if piece:
            self.write(piece)
        self.emitted = text
