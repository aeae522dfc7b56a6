"""Explanations on Captum: ``explain(task, model, inputs)`` → one ``Explanation`` per input.

Supported: image classification (pixel heat-maps), text classification (per-token scores at the token-embedding
layer; Transformers also give their attention maps) and audio classification (attribution over the spectrogram).
Other tasks answer a one-line ``ConfigError``. Methods: integrated gradients (default), saliency, occlusion and
GradientSHAP (see ``attributions``). ``Predictor.explain``, ``modelforge explain``, the server's ``/explain`` and the
recipe's ``explain:`` gallery all go through ``explain``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.explain import render
from modelforge.explain.adapters import KINDS, Prepared, attention_maps, check_supported, prepare, supports
from modelforge.explain.attributions import METHODS, attribute, check_method, token_scores

__all__ = ["METHODS", "KINDS", "Explanation", "check_config", "explain", "explain_batch", "supports"]


@dataclass
class Explanation:
    kind: str  # "image" | "text" | "audio"
    method: str
    label: str  # predicted label
    probability: float
    target: str  # the label explained
    target_probability: float
    attributions: np.ndarray  # image (C, H, W); text (tokens,); audio (frames, features)
    view: Any  # uint8 image (C, H, W) | token strings | (frames, features) spectrogram
    convergence_delta: float | None = None  # integrated gradients: sum(attr) − (f(x) − f(baseline))
    score_difference: float | None = None  # f(x) − f(baseline) of the target logit (integrated gradients)
    attention: np.ndarray | None = field(default=None, repr=False)  # text Transformers: (layers, heads, T, T)

    @property
    def heatmap(self) -> np.ndarray:
        """A 2-D map for pictures: image attributions summed over channels; audio as is; text as one row."""
        if self.kind == "image":
            return self.attributions.sum(axis=0)
        return self.attributions if self.kind == "audio" else self.attributions[None]

    def png(self) -> bytes | None:
        """The picture of this explanation: image overlay or spectrogram overlay; None for text."""
        if self.kind == "image":
            return render.overlay_png(self.view, self.heatmap)
        if self.kind == "audio":
            return render.spectrogram_png(self.view, self.attributions, f"{self.method} for {self.target!r}")
        return None

    def html(self) -> str | None:
        if self.kind != "text":
            return None
        caption = f"{self.method} for {self.target!r} (predicted {self.label!r}, p={self.probability:.3f})"
        return render.html_tokens(self.view, self.attributions.tolist(), caption)

    def attention_png(self) -> bytes | None:
        return None if self.attention is None else render.attention_grid_png(self.attention, self.view)

    def to_json(self, pictures: bool = True) -> dict[str, Any]:
        """What the server returns: labels and probabilities, the attributions, and the picture as base64 PNG."""
        out: dict[str, Any] = {
            "label": self.label, "probability": round(self.probability, 6), "target": self.target,
            "target_probability": round(self.target_probability, 6), "method": self.method,
        }
        if self.convergence_delta is not None:
            out["convergence_delta"] = self.convergence_delta
        if self.kind == "text":
            out["tokens"] = [{"token": t, "attribution": round(float(a), 6)}
                             for t, a in zip(self.view, self.attributions)]
            out["html"] = self.html()
        else:
            out["attributions"] = np.round(self.heatmap.astype(np.float64), 6).tolist()
            if pictures:
                out["overlay_png"] = base64.b64encode(self.png() or b"").decode("ascii")
        return out


def check_config(cfg: Any, task: Any) -> None:
    """A recipe's ``explain:`` section against its task (after ``datasets()``, which knows the labels)."""
    check_supported(task)
    labels = [str(label) for label in task.state().get("labels", [])]
    if cfg.target is not None and str(cfg.target) not in labels:
        raise ConfigError(f"explain.target: unknown label {cfg.target!r}; labels: {', '.join(labels[:20])}")


def _target_indices(labels: list[str], target: str | None, predicted: torch.Tensor) -> torch.Tensor:
    if target is None:
        return predicted
    if str(target) not in labels:
        shown = ", ".join(labels[:20]) + (" …" if len(labels) > 20 else "")
        raise ConfigError(f"unknown target label {target!r}; this model's labels are: {shown}")
    return torch.full_like(predicted, labels.index(str(target)))


def explain(task: Any, model: nn.Module, inputs: list[Any], method: str = "integrated_gradients",
            target: str | None = None, **options: Any) -> list[Explanation]:
    """Explain raw inputs (image bytes/paths, texts, WAVs — what ``task.preprocess`` reads)."""
    check_supported(task)
    check_method(method)
    with torch.inference_mode(False):
        found = explain_batch(task, model, task.preprocess(list(inputs)), method, target, **options)
    if task.explain_kind == "text":
        for item, raw in zip(found, inputs):
            item.view = _original_spans(task, raw, item.view)
    return found


def _original_spans(task: Any, text: Any, tokens: list[str]) -> list[str]:
    """Show each token as the text it came from (``Terrible`` rather than ``terrible`` or ``[UNK]``), using the
    tokenizer's character offsets; special tokens ([CLS], [SEP]) have no span and keep their name."""
    if not isinstance(text, str) or (text.endswith(".txt") and Path(text).is_file()):
        return tokens
    text = text.strip()
    offsets = task.tokenizer.encode(text).offsets[: len(tokens)]
    if len(offsets) != len(tokens):
        return tokens
    return [text[a:b].strip() or tok if b > a else tok for tok, (a, b) in zip(tokens, offsets)]


def explain_batch(task: Any, model: nn.Module, batch: Any, method: str = "integrated_gradients",
                  target: str | None = None, *, baseline: str = "black", steps: int = 64, seed: int = 0,
                  attention: bool = True) -> list[Explanation]:
    """Explain an already preprocessed batch (as ``task.preprocess`` returns it)."""
    check_method(method)
    prepared = prepare(task, model, batch, baseline)
    was_training = model.training
    model.eval()  # dropout off: attributions must be of the deterministic function the server predicts with
    try:
        with torch.inference_mode(False), torch.enable_grad():
            return _explain(task, model, prepared, method, target, steps, seed, attention)
    finally:
        model.train(was_training)


def _explain(task: Any, model: nn.Module, p: Prepared, method: str, target: str | None, steps: int, seed: int,
             attention: bool) -> list[Explanation]:
    labels = [str(label) for label in task.state()["labels"]]
    with torch.no_grad():
        logits = p.forward(p.inputs, *p.extra_args).float()
        probs = logits.softmax(-1)
    predicted = probs.argmax(-1)
    targets = _target_indices(labels, target, predicted)
    result = attribute(p.forward, p.inputs, p.baseline, targets, method, layer=p.layer, extra_args=p.extra_args,
                       steps=steps, window=p.window, seed=seed)
    values = token_scores(result.values) if p.kind == "text" else result.values
    values = values.float().cpu().numpy()
    differences = None
    if result.delta is not None:
        with torch.no_grad():
            base_logits = p.forward(p.baseline, *p.extra_args).float()
        rows = torch.arange(len(targets))
        differences = (logits[rows, targets] - base_logits[rows, targets]).cpu().tolist()
    maps = attention_maps(task, model, p) if attention else None
    out = []
    for i, view in enumerate(p.views):
        attr = values[i]
        if p.kind == "text":
            attr = attr[: p.lengths[i]]
        elif p.kind == "audio":
            attr = attr[: p.lengths[i]]
        out.append(Explanation(
            kind=p.kind, method=method, label=labels[int(predicted[i])], probability=float(probs[i, predicted[i]]),
            target=labels[int(targets[i])], target_probability=float(probs[i, targets[i]]), attributions=attr,
            view=view,
            convergence_delta=None if result.delta is None else float(result.delta[i]),
            score_difference=None if differences is None else float(differences[i]),
            attention=None if maps is None else maps[i],
        ))
    return out
