"""ONNX export of a Whisper-style ``model.name=hf`` speech recognizer as an encoder graph and a decoder graph.

- encoder ``(input_features (batch, mel bins, window frames)) → memory (batch, window frames / 2, dim)``: the
  checkpoint's feature extractor makes the features (its fixed window: the time axis is not dynamic);
- decoder without KV cache ``(tgt_ids (batch, tgt_len), memory) → logits (batch, tgt_len, vocab)``.

The decoding loop runs outside, as for translation: start from the ``prompt`` ids of the contract (start, language,
task tokens), append the arg-max of the last position's logits until ``eos_id`` or ``max_new_tokens``, decode the
ids after the prompt with the artifact's tokenizer (``RUN/model``, transformers' ``AutoTokenizer``). The contract is
stored as JSON under the metadata key ``modelforge.speech_seq2seq``.

Verification: teacher-forced logits of encoder + decoder in onnxruntime equal the model's ``forward`` within
``TOLERANCE`` at batch sizes and target lengths other than the traced ones, and the greedy loop above gives exactly
the ids of the run's own greedy transcription (transformers' ``generate``) on a few example waveforms.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelforge.core.errors import ArtifactError, first_line
from modelforge.tasks.export_graphs import (
    DecodeGraph,
    EncodeGraph,
    GraphSet,
    OnnxGraph,
    Verification,
    checked_difference,
)

META_KEY = "modelforge.speech_seq2seq"
TOLERANCE = 1e-4  # as artifacts/export.py: largest |onnxruntime − PyTorch| accepted
TRACE = (2, 4)  # batch, target length of the traced examples
CHECKS = ((3, 2), (1, 6))  # other batch sizes and target lengths, so every dynamic axis is exercised
TARGET_AXES = {0: "batch", 1: "tgt_len"}
EXAMPLE_WAVES = 3  # waveforms the greedy loop is checked on


def _features(speech: Any, batch: int, seed: int) -> torch.Tensor:
    """The feature extractor's log-mel windows of ``batch`` random waveforms of different lengths."""
    generator = np.random.default_rng(seed)
    rate = speech.extractor.sampling_rate
    waves = [0.1 * generator.standard_normal(int(rate * (0.2 + 0.15 * i))).astype(np.float32) for i in range(batch)]
    return speech.extractor(waves, sampling_rate=rate, return_tensors="pt")["input_features"]


def _targets(speech: Any, vocab: int, batch: int, length: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=generator)
    ids[:, 0] = speech.prompt[0]
    return ids


def speech_seq2seq_graphs(speech: Any, model: nn.Module) -> GraphSet:
    """The encoder and decoder graphs of a trained Whisper-style network (``models/hf_auto.HFSpeechSeq2Seq``)."""
    model = getattr(model, "module", model).eval()
    if not (hasattr(model, "encode") and hasattr(model, "decode")):
        raise ArtifactError(f"{type(model).__name__} has no encode/decode; it cannot be exported as encoder + decoder")
    vocab = int(model.net.config.vocab_size)
    batch, tgt_len = TRACE
    features = _features(speech, batch, seed=0)
    with torch.no_grad():
        memory = model.encode(features)
    graphs = [
        OnnxGraph("encoder", EncodeGraph(model).eval(), {"input_features": features}, ["memory"],
                  {"input_features": {0: "batch"}, "memory": {0: "batch"}}),
        OnnxGraph("decoder", DecodeGraph(model).eval(),
                  {"tgt_ids": _targets(speech, vocab, batch, tgt_len, seed=0), "memory": memory}, ["logits"],
                  {"tgt_ids": TARGET_AXES, "memory": {0: "batch"}, "logits": TARGET_AXES}),
    ]
    search = speech.search(model)
    contract = {"prompt": speech.prompt, "eos_id": search["eos_token_id"], "pad_id": search["pad_token_id"],
                "max_new_tokens": search["max_new_tokens"], "sampling_rate": speech.extractor.sampling_rate,
                "graphs": {g.role: {"inputs": list(g.inputs), "outputs": g.outputs} for g in graphs}}
    return GraphSet(graphs, {META_KEY: json.dumps(contract)}, lambda files: verify(speech, model, contract, files))


def greedy_decode(encoder: Any, decoder: Any, features: np.ndarray, contract: dict[str, Any]) -> list[list[int]]:
    """The ids after the prompt, per row, up to (without) the end token: the loop a consumer runs."""
    memory = encoder.run(None, {"input_features": features})[0]
    ids = np.tile(np.asarray(contract["prompt"], dtype=np.int64), (len(features), 1))
    done = np.zeros(len(features), dtype=bool)
    for _ in range(contract["max_new_tokens"]):
        logits = decoder.run(None, {"tgt_ids": ids, "memory": memory})[0]
        step = np.where(done, contract["pad_id"], logits[:, -1].argmax(-1))
        ids = np.concatenate([ids, step[:, None].astype(np.int64)], axis=1)
        done |= step == contract["eos_id"]
        if done.all():
            break
    rows = ids[:, len(contract["prompt"]):].tolist()
    return [row[: row.index(contract["eos_id"])] if contract["eos_id"] in row else row for row in rows]


def verify(speech: Any, model: nn.Module, contract: dict[str, Any], files: dict[str, Path]) -> Verification:
    """Teacher-forced logits within ``TOLERANCE`` at ``CHECKS``; greedy ids equal the run's own transcription's."""
    import onnxruntime as ort

    try:
        encoder, decoder = (ort.InferenceSession(str(files[role]), providers=["CPUExecutionProvider"])
                            for role in ("encoder", "decoder"))
    except Exception as exc:  # onnxruntime's own error types
        raise ArtifactError(f"onnxruntime cannot load the exported graphs: {first_line(exc)}") from exc
    vocab = int(model.net.config.vocab_size)
    diff = 0.0
    for seed, (batch, tgt_len) in enumerate(CHECKS, start=1):
        features, tgt = _features(speech, batch, seed), _targets(speech, vocab, batch, tgt_len, seed)
        shapes = f"input_features{list(features.shape)}, tgt_ids{list(tgt.shape)}"
        with torch.no_grad():
            expected = model(features, tgt).numpy()
        try:
            memory = encoder.run(None, {"input_features": features.numpy()})[0]
            actual = decoder.run(None, {"tgt_ids": tgt.numpy(), "memory": memory})[0]
        except Exception as exc:  # the first line says which node failed
            raise ArtifactError(f"onnxruntime cannot run the exported graphs on {shapes}: {first_line(exc)}") from exc
        diff = max(diff, checked_difference(actual, expected, shapes, TOLERANCE))
    features = _features(speech, EXAMPLE_WAVES, seed=len(CHECKS) + 1)
    expected_ids = speech.generated_ids(model, features)
    actual_ids = greedy_decode(encoder, decoder, features.numpy(), contract)
    for i, (want, got) in enumerate(zip(expected_ids, actual_ids)):
        if want != got:
            raise ArtifactError(f"greedy decoding with onnxruntime differs from PyTorch on example waveform {i + 1}: "
                                f"{got[:8]}… vs {want[:8]}…; the export is wrong")
    return Verification(diff, [f"greedy decoding with onnxruntime equals PyTorch's on {EXAMPLE_WAVES} example "
                               "waveforms"])
