"""What to attribute, per task: the tensor Captum differentiates, its baseline, and the forward that gives logits.

The tasks already turn raw inputs into model batches (``preprocess``) and batches into logits (``forward``); an
adapter only says which part of the batch is the explained input and what "absence" means for it:

- images: the normalised pixels; baseline = an all-black image (the MNIST background) or the training mean;
- text: the token ids, attributed at the token-embedding layer (ids are integers); baseline = all ``[PAD]`` with
  the same lengths, so the model sees a sequence of the same length with no content;
- audio: the ``(time, feature)`` spectrogram; baseline = the utterance's quietest value everywhere (silence) or zero
  (the per-utterance mean, since features are normalised per utterance).

Adapters are keyed by the kind a task declares (``Task.explain_kind``), never by its name: a new classifier of
images, text or audio is explained by declaring its kind, with no change here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from modelforge.core.errors import ConfigError

KINDS = ("image", "text", "audio")


@dataclass
class Prepared:
    kind: str  # "image" | "text" | "audio"
    inputs: torch.Tensor
    baseline: torch.Tensor
    forward: Callable[..., torch.Tensor]
    extra_args: tuple[Any, ...] = ()
    layer: nn.Module | None = None
    window: tuple[int, ...] | None = None
    # for rendering: uint8 images (C, H, W), token strings, or (time, feature) spectrograms — one per input
    views: list[Any] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


def supports(task: Any) -> bool:
    """Whether the task declares an explain kind this module has an adapter for."""
    return getattr(task, "explain_kind", None) in KINDS


def check_supported(task: Any) -> None:
    if not supports(task):
        raise ConfigError(f"explanations are not supported for task {task.name!r} (its Task declares no "
                          f"explain_kind; adapters exist for: {', '.join(KINDS)})")


def prepare(task: Any, model: nn.Module, batch: Any, baseline: str = "black") -> Prepared:
    """A preprocessed batch (``task.preprocess`` output) → what ``attributions.attribute`` needs."""
    check_supported(task)
    if baseline not in ("black", "mean"):
        raise ConfigError(f"unknown explanation baseline {baseline!r}; valid: black, mean")
    if task.explain_kind == "image":
        return _image(task, model, batch, baseline)
    if task.explain_kind == "text":
        return _text(task, model, batch)
    return _audio(task, model, batch, baseline)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _image(task: Any, model: nn.Module, x: torch.Tensor, baseline: str) -> Prepared:
    state = task.state()
    shape = (1, -1, 1, 1)
    mean, std = torch.tensor(state["mean"]).view(shape), torch.tensor(state["std"]).view(shape)
    x = x.detach().float().to(_device(model))
    pixels = ((x.cpu() * std + mean) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    if baseline == "black":
        base = ((0 - mean) / std).to(x.device).expand_as(x).contiguous()
    else:
        base = torch.zeros_like(x)
    side = x.shape[-1]
    patch = max(2, side // 7)  # 4×4 on MNIST: about a stroke's width

    def forward(images: torch.Tensor) -> torch.Tensor:
        return task.forward(model, images)

    return Prepared("image", x, base, forward, window=(x.shape[1], patch, patch), views=list(pixels))


def embedding_layer(model: nn.Module) -> nn.Module:
    """The token-embedding module of a text classifier (Transformer, RNN or any model with an ``nn.Embedding``)."""
    encoder = getattr(model, "encoder", None)
    embeddings = getattr(encoder, "embeddings", None)
    if isinstance(getattr(embeddings, "tokens", None), nn.Embedding):
        return embeddings.tokens  # token table only: positions are not the text's content
    if isinstance(getattr(model, "embedding", None), nn.Embedding):
        return model.embedding
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            return module
    raise ConfigError(f"{type(model).__name__} has no token embedding layer (nn.Embedding) to attribute to; "
                      "token explanations need one")


def token_strings(tokenizer: Any, ids: list[int]) -> list[str]:
    """Readable tokens: each id decoded alone (so byte-level BPE shows text, not 'Ġ'), else its vocabulary entry."""
    out = []
    for i in ids:
        text = tokenizer.decode([i], skip_special_tokens=False).strip()
        out.append(text or tokenizer.id_to_token(i) or f"<{i}>")
    return out


def _text(task: Any, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> Prepared:
    ids, lengths = batch
    device = _device(model)
    ids, lengths = ids[:, : int(lengths.max())].to(device), lengths.to(device)
    base = torch.full_like(ids, int(task.state()["pad_id"]))
    layer = embedding_layer(model)

    def forward(token_ids: torch.Tensor, token_lengths: torch.Tensor) -> torch.Tensor:
        # Captum's GradientSHAP passes ids through its noise tunnel as floats (with zero noise): cast them back
        return task.forward(model, (token_ids.round().long() if token_ids.is_floating_point() else token_ids,
                                    token_lengths))

    rows = [ids[i, : int(n)].tolist() for i, n in enumerate(lengths.tolist())]
    views = [token_strings(task.tokenizer, row) for row in rows]
    return Prepared("text", ids, base, forward, (lengths,), layer, views=views, lengths=[len(r) for r in rows])


def _audio(task: Any, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], baseline: str) -> Prepared:
    feats, frames = batch
    device = _device(model)
    feats, frames = feats.detach().float().to(device), frames.to(device)
    if baseline == "black":
        floor = feats.flatten(1).amin(dim=1).view(-1, 1, 1)
        base = floor.expand_as(feats).contiguous()
    else:
        base = torch.zeros_like(feats)

    def forward(features: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        return task.forward(model, (features, n_frames))

    views = [feats[i, : int(n)].cpu().numpy() for i, n in enumerate(frames.tolist())]
    window = (min(8, feats.shape[1]), min(8, feats.shape[2]))  # 80 ms × 8 bands
    return Prepared("audio", feats, base, forward, (frames,), window=window, views=views,
                    lengths=[int(n) for n in frames.tolist()])


def attention_maps(task: Any, model: nn.Module, prepared: Prepared) -> list[np.ndarray] | None:
    """Per input, the model's own attention probabilities ``(layers, heads, T, T)`` for Transformer text
    classifiers (``encoder.attention_maps``); None for other models."""
    encoder = getattr(model, "encoder", None)
    if prepared.kind != "text" or not callable(getattr(encoder, "attention_maps", None)):
        return None
    from modelforge.models.layers.masks import length_mask

    (lengths,) = prepared.extra_args
    with torch.no_grad():
        maps = encoder.attention_maps(prepared.inputs, length_mask(lengths, prepared.inputs.shape[1]))
    if any(m is None for m in maps):
        return None
    stacked = torch.stack([m.float() for m in maps], dim=1).cpu().numpy()  # (B, layers, heads, T, T)
    return [stacked[i, :, :, :n, :n] for i, n in enumerate(prepared.lengths)]
