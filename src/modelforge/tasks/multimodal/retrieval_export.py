"""ONNX export of a dual encoder as its two towers: ``model.image_encoder.onnx`` and ``model.text_encoder.onnx``.

Each graph returns L2-normalised embeddings, so a consumer scores an image against texts with a dot product times
``logit_scale`` (a softmax over label prompts gives zero-shot probabilities). Every file carries the contract as
``modelforge.clip`` metadata: the image side and pixel scale (``images`` are float (batch, 3, S, S) = uint8 RGB ·
pixel_scale), the tokenizer file, its maximum length and the learned ``logit_scale``. The check runs both graphs
with onnxruntime at two batch sizes and two text lengths and compares them with PyTorch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelforge.core.errors import ArtifactError
from modelforge.models.clip import ImageTowerGraph, TextTowerGraph
from modelforge.models.layers.masks import length_mask
from modelforge.tasks.export_graphs import GraphSet, OnnxGraph, Verification

META_KEY = "modelforge.clip"
TOLERANCE = 1e-4


def _text_inputs(batch: int, length: int, vocab: int, pad_id: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, vocab, (batch, length), generator=torch.Generator().manual_seed(length))
    lengths = torch.full((batch,), length)
    lengths[-1] = max(1, length - 3)  # one padded row, so the masking path is traced and checked
    mask = length_mask(lengths, length)
    return {"input_ids": ids.masked_fill(~mask, pad_id), "attention_mask": mask.long()}


def _image_inputs(batch: int, size: int) -> dict[str, torch.Tensor]:
    return {"images": torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))}


def retrieval_graphs(model: nn.Module, state: dict[str, Any]) -> GraphSet:
    """The two tower graphs of a trained dual encoder, with the contract and the onnxruntime check."""
    model = getattr(model, "module", model).eval()
    size, vocab, pad_id = state["image_size"], state["vocab_size"], state["pad_id"]
    graphs = [
        OnnxGraph("image_encoder", ImageTowerGraph(model), _image_inputs(2, size), ["image_embedding"],
                  {"images": {0: "batch"}, "image_embedding": {0: "batch"}}),
        OnnxGraph("text_encoder", TextTowerGraph(model), _text_inputs(2, 8, vocab, pad_id), ["text_embedding"],
                  {"input_ids": {0: "batch", 1: "time"}, "attention_mask": {0: "batch", 1: "time"},
                   "text_embedding": {0: "batch"}}),
    ]
    contract = {"image_size": size, "pixel_scale": 1 / 255, "tokenizer": "tokenizer.json",
                "max_length": state["max_length"], "pad_id": pad_id, "logit_scale": float(model.scale())}
    return GraphSet(graphs, {META_KEY: json.dumps(contract)}, lambda files: verify(model, state, files))


def _largest_difference(session: Any, inputs: dict[str, torch.Tensor], expected: torch.Tensor) -> float:
    got = session.run(None, {name: tensor.numpy() for name, tensor in inputs.items()})[0]
    return float(np.abs(got - expected.numpy()).max())


@torch.no_grad()
def verify(model: nn.Module, state: dict[str, Any], files: dict[str, Path]) -> Verification:
    """Both graphs against PyTorch on batches and lengths other than the traced ones."""
    import onnxruntime as ort

    sessions = {role: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                for role, path in files.items()}
    worst, notes = 0.0, []
    for batch in (1, 3):
        images = _image_inputs(batch, state["image_size"])
        worst = max(worst, _largest_difference(sessions["image_encoder"], images, model.encode_image(**images)))
    for batch, length in ((1, 5), (3, 13)):
        texts = _text_inputs(batch, length, state["vocab_size"], state["pad_id"])
        worst = max(worst, _largest_difference(sessions["text_encoder"], texts, model.encode_text(**texts)))
    if worst > TOLERANCE:
        raise ArtifactError(f"the exported towers differ from PyTorch by {worst:.3g} (over {TOLERANCE})")
    notes.append("image tower checked at batch 1 and 3; text tower at (batch, length) (1, 5) and (3, 13)")
    return Verification(worst, notes)
