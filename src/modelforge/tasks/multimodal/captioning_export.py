"""ONNX export of the image captioner as an ``encoder`` graph and a ``decoder`` graph (the search runs outside).

- encoder: ``images`` (batch, 3, S, S) float, standardised with the metadata's ``mean``/``std`` → ``memory``;
- decoder (no KV cache): ``(tgt_ids (batch, tgt_len), memory) → logits (batch, tgt_len, vocab)``; a consumer feeds
  ``[BOS]`` and the words so far and takes the last position's logits.

The metadata (``modelforge.captioning``) holds what a runtime needs for that loop: the special ids, the image size and
statistics, the longest caption. Verification: teacher-forced logits of encoder + decoder in onnxruntime equal the
model's within ``TOLERANCE`` at batch sizes and caption lengths other than the traced ones, and a greedy loop over
the two sessions writes exactly the task's own greedy token ids for a few images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from modelforge.core.errors import ArtifactError, first_line
from modelforge.tasks.beam_search import CachedStepDecoder, SearchSettings, search
from modelforge.tasks.export_graphs import DecodeGraph, EncodeGraph, GraphSet, OnnxGraph, Verification

META_KEY = "modelforge.captioning"
TOLERANCE = 1e-4  # as artifacts/export.py: largest |onnxruntime − PyTorch| accepted
TRACE = (2, 5)  # batch, caption length of the traced example
CHECKS = ((3, 4), (5, 9))  # other batch sizes and lengths, so every dynamic axis is exercised


class CaptioningTask(Protocol):
    """What the export needs of the captioning task (a protocol: this module does not import the task)."""

    def state(self) -> dict[str, Any]: ...
    def search_settings(self, beam_size: int | None = None, length_penalty: float | None = None) -> SearchSettings: ...


def _inputs(state: dict[str, Any], batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    size = state["image_size"]
    images = torch.randn(batch, 3, size, size, generator=generator)
    ids = torch.randint(4, state["vocab_size"], (batch, length), generator=generator)
    ids[:, 0] = state["bos_id"]
    return images, ids


def captioning_graphs(task: CaptioningTask, model: nn.Module) -> GraphSet:
    """The encoder and decoder graphs of a trained ``image_captioner``, with their check."""
    model = getattr(model, "module", model).eval()
    state = task.state()
    encoder, decoder = EncodeGraph(model).eval(), DecodeGraph(model).eval()
    images, ids = _inputs(state, *TRACE, seed=0)
    with torch.no_grad():
        memory = encoder(images)
    graphs = [
        OnnxGraph("encoder", encoder, {"images": images}, ["memory"], {"images": {0: "batch"}, "memory": {0: "batch"}}),
        OnnxGraph("decoder", decoder, {"tgt_ids": ids, "memory": memory}, ["logits"],
                  {"tgt_ids": {0: "batch", 1: "tgt_len"}, "memory": {0: "batch"},
                   "logits": {0: "batch", 1: "tgt_len"}}),
    ]
    settings = task.search_settings(beam_size=1)
    contract = {"bos_id": state["bos_id"], "eos_id": state["eos_id"], "banned_ids": list(settings.banned_ids),
                "image_size": state["image_size"], "mean": state["mean"], "std": state["std"],
                "max_new_tokens": state["max_caption_tokens"] - 1, "tokenizer": state.get("tokenizer")}
    return GraphSet(graphs, {META_KEY: json.dumps(contract)}, lambda files: verify(task, model, files))


def onnx_greedy(encoder: Any, decoder: Any, images: np.ndarray, contract: dict[str, Any]) -> list[list[int]]:
    """Greedy captions (token ids without BOS/EOS) from the two onnxruntime sessions; no torch."""
    memory = encoder.run(None, {"images": images.astype(np.float32)})[0]
    ids = np.full((len(images), 1), contract["bos_id"], dtype=np.int64)
    done = np.zeros(len(images), dtype=bool)
    out: list[list[int]] = [[] for _ in images]
    for _ in range(contract["max_new_tokens"]):
        logits = decoder.run(None, {"tgt_ids": ids, "memory": memory})[0][:, -1].astype(np.float32)
        logits[:, contract["banned_ids"]] = -np.inf
        nxt = logits.argmax(axis=-1)
        for row in np.flatnonzero(~done):
            if nxt[row] != contract["eos_id"]:
                out[row].append(int(nxt[row]))
        done |= nxt == contract["eos_id"]
        if done.all():
            break
        ids = np.concatenate([ids, nxt[:, None]], axis=1)
    return out


def verify(task: CaptioningTask, model: nn.Module, files: dict[str, Path]) -> Verification:
    """Teacher-forced logits within ``TOLERANCE`` at ``CHECKS``; greedy ids equal on a few random images."""
    import onnxruntime as ort

    try:
        encoder, decoder = (ort.InferenceSession(str(files[role]), providers=["CPUExecutionProvider"])
                            for role in ("encoder", "decoder"))
    except Exception as exc:  # onnxruntime's own error types
        raise ArtifactError(f"onnxruntime cannot load the exported graphs: {first_line(exc)}") from exc
    state, diff = task.state(), 0.0
    for seed, (batch, length) in enumerate(CHECKS, start=1):
        images, ids = _inputs(state, batch, length, seed)
        with torch.no_grad():
            expected = model(images, ids).numpy()
        memory = encoder.run(None, {"images": images.numpy()})[0]
        actual = decoder.run(None, {"tgt_ids": ids.numpy(), "memory": memory})[0]
        diff = max(diff, float(np.abs(actual - expected).max()))
        if not diff <= TOLERANCE:
            raise ArtifactError(f"ONNX logits differ from PyTorch by {diff:.3g} (> {TOLERANCE:g}) on images[{batch}] "
                                f"and tgt_ids[{batch}, {length}]; the export is wrong")
    images, _ = _inputs(state, 3, 1, seed=9)
    settings = task.search_settings(beam_size=1)
    limit = state["max_caption_tokens"] - 1
    with torch.no_grad():
        want = search(CachedStepDecoder(model, model.encode(images), None, limit), 3, settings, limit)
    contract = {"bos_id": state["bos_id"], "eos_id": state["eos_id"], "banned_ids": list(settings.banned_ids),
                "max_new_tokens": limit}
    got = onnx_greedy(encoder, decoder, images.numpy(), contract)
    if got != want:
        raise ArtifactError(f"greedy captions with onnxruntime differ from PyTorch's ({got[0][:6]}… vs "
                            f"{want[0][:6]}…); the export is wrong")
    return Verification(diff, ["greedy captions with onnxruntime equal PyTorch's on 3 example images"])
