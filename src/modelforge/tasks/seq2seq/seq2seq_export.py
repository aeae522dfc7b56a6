"""ONNX export of the encoder–decoder models (translation, summarization) as an encoder graph and a decoder graph.

Each family splits where its code already does (``tasks/seq2seq/decoding.py`` drives the same two calls):

- ``Seq2SeqGRU``: encoder ``(src_ids, src_lengths) → keys, values, src_mask, hidden, feed`` (``encode``: the
  attention keys, the encoder outputs, the padding mask and the decoder's initial state); decoder = one ``step``
  ``(tokens, hidden, feed, keys, values, src_mask) → logits (batch, vocab), next_hidden, next_feed``;
- ``TransformerSeq2Seq``: encoder ``(src_ids, src_lengths) → memory, src_mask``; decoder without KV cache
  ``(tgt_ids (batch, tgt_len), memory, src_mask) → logits (batch, tgt_len, vocab)``.

Both encoders take lengths (what ``Translation.preprocess`` makes), so a consumer's loop is the same for both; the
contract in the metadata (``onnx_decoding.py``) says how to feed each decoder. Verification: teacher-forced
logits of encoder + decoder in onnxruntime equal the model's ``forward`` within ``TOLERANCE`` at two batch sizes and
source/target lengths other than the traced ones, and ``onnx_decoding.greedy_decode`` gives exactly the token ids of
the task's own greedy decoding on a few example sentences.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from modelforge.core.errors import ArtifactError, first_line
from modelforge.tasks.export_graphs import GraphSet, OnnxGraph, Verification, checked_difference
from modelforge.tasks.seq2seq.decoding import position_limit
from modelforge.tasks.seq2seq.onnx_decoding import META_KEY, greedy_decode, open_session, teacher_forced_logits

if TYPE_CHECKING:
    from modelforge.tasks.seq2seq.decoding import SearchSettings


class Seq2SeqTask(Protocol):
    """What the export needs of a sequence-to-sequence task (``Translation`` and its subclasses); a protocol, so this
    module does not import the task that calls it."""

    data_cfg: Any

    def state(self) -> dict[str, Any]: ...
    def search_settings(self, **overrides: Any) -> SearchSettings: ...
    def decode_limits(self, lengths: torch.Tensor) -> Any: ...
    def preprocess(self, items: list[Any]) -> dict[str, Any]: ...
    def _teacher_forced(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor: ...
    def search_ids(self, model: nn.Module, src: torch.Tensor, src_lengths: torch.Tensor, settings: SearchSettings,
                   limits: torch.Tensor) -> list[list[int]]: ...

TOLERANCE = 1e-4  # as artifacts/export.py: largest |onnxruntime − PyTorch| accepted
TRACE = (2, 7, 5)  # batch, source length, target length of the traced examples
CHECKS = ((3, 9, 6), (5, 13, 11))  # other batch sizes and lengths, so every dynamic axis is exercised
EXAMPLE_SENTENCES = ("In the beginning was the word.", "The government said on Monday that taxes would rise.",
                     "Amen.", "A small red house stands by the river, next to the old mill and the bridge.")


class GRUEncoderGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, src_ids: torch.Tensor, src_lengths: torch.Tensor):
        (keys, values, mask), (hidden, feed) = self.model.encode(src_ids, src_lengths)
        return keys, values, mask, hidden, feed


class GRUDecoderGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, hidden: torch.Tensor, feed: torch.Tensor, keys: torch.Tensor,
                values: torch.Tensor, src_mask: torch.Tensor):
        logits, (hidden, feed), _ = self.model.step(tokens, (hidden, feed), (keys, values, src_mask))
        return logits, hidden, feed


class TransformerEncoderGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, src_ids: torch.Tensor, src_lengths: torch.Tensor):
        # the mask the task's decoding builds from the lengths (tasks/seq2seq/decoding.py: TransformerStepDecoder)
        mask = torch.arange(src_ids.shape[1], device=src_ids.device).unsqueeze(0) < src_lengths.unsqueeze(1)
        return self.model.encode(src_ids, mask), mask


class TransformerDecoderGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tgt_ids: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        return self.model.decode(tgt_ids, memory, src_mask)


def _family(model: nn.Module) -> str:
    """``gru`` (encode/step) or ``transformer`` (encode/decode: the toolkit's Transformer, or a Hugging Face
    encoder–decoder behind the same contract, ``models/hf_auto.HFSeq2SeqLM``)."""
    if hasattr(model, "step") and hasattr(model, "encode"):
        return "gru"
    if hasattr(model, "decode") and hasattr(model, "encode"):
        return "transformer"
    raise ArtifactError(f"{type(model).__name__} is not an encoder–decoder model with encode/step or encode/decode; "
                        "it cannot be exported as encoder + decoder graphs")


BATCH, SRC, TGT = "batch", "src_len", "tgt_len"
LAYOUT: dict[str, dict[str, Any]] = {
    "gru": {
        "encoder_outputs": {"keys": {0: BATCH, 1: SRC}, "values": {0: BATCH, 1: SRC}, "src_mask": {0: BATCH, 1: SRC},
                            "hidden": {1: BATCH}, "feed": {0: BATCH}},
        "decoder_tokens": {"name": "tokens", "feed": "last"},
        "decoder_memory": {"keys": "keys", "values": "values", "src_mask": "src_mask"},
        "decoder_state": {"hidden": ["hidden", "next_hidden"], "feed": ["feed", "next_feed"]},
        "decoder_outputs": {"logits": {0: BATCH}, "next_hidden": {1: BATCH}, "next_feed": {0: BATCH}},
    },
    "transformer": {
        "encoder_outputs": {"memory": {0: BATCH, 1: SRC}, "src_mask": {0: BATCH, 1: SRC}},
        "decoder_tokens": {"name": "tgt_ids", "feed": "prefix"},
        "decoder_memory": {"memory": "memory", "src_mask": "src_mask"},
        "decoder_state": {},
        "decoder_outputs": {"logits": {0: BATCH, 1: TGT}},
    },
}
WRAPPERS = {"gru": (GRUEncoderGraph, GRUDecoderGraph), "transformer": (TransformerEncoderGraph,
                                                                       TransformerDecoderGraph)}


def _sources(task: Seq2SeqTask, batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random source ids padded to ``length``; the first row full, the others shorter (padding is exercised)."""
    generator = torch.Generator().manual_seed(seed)
    state = task.state()
    ids = torch.randint(4, state["src_vocab_size"], (batch, length), generator=generator)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length
    ids = ids.masked_fill(torch.arange(length).unsqueeze(0) >= lengths.unsqueeze(1), state["pad_id"])
    return ids, lengths


def _targets(task: Seq2SeqTask, batch: int, length: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed + 1)
    state = task.state()
    ids = torch.randint(4, state["tgt_vocab_size"], (batch, length), generator=generator)
    ids[:, 0] = state["bos_id"]
    return ids


def seq2seq_graphs(task: Seq2SeqTask, model: nn.Module) -> GraphSet:
    """The encoder and decoder graphs of ``model`` (a trained translation/summarization network)."""
    model = getattr(model, "module", model).eval()
    family = _family(model)
    layout = LAYOUT[family]
    encoder_cls, decoder_cls = WRAPPERS[family]
    encoder, decoder = encoder_cls(model).eval(), decoder_cls(model).eval()

    batch, src_len, tgt_len = TRACE
    src, lengths = _sources(task, batch, src_len, seed=0)
    with torch.no_grad():
        encoded = dict(zip(layout["encoder_outputs"], encoder(src, lengths)))
    tgt = _targets(task, batch, tgt_len, seed=0)
    tokens = layout["decoder_tokens"]
    decoder_inputs = {tokens["name"]: tgt if tokens["feed"] == "prefix" else tgt[:, 0]}
    decoder_inputs.update({name: encoded[first] for name, (first, _) in layout["decoder_state"].items()})
    decoder_inputs.update({name: encoded[source] for name, source in layout["decoder_memory"].items()})
    # the ONNX inputs follow the wrapper's forward arguments
    decoder_inputs = {name: decoder_inputs[name] for name in inspect.signature(decoder.forward).parameters}

    encoder_axes = {"src_ids": {0: BATCH, 1: SRC}, "src_lengths": {0: BATCH}, **layout["encoder_outputs"]}
    token_axes = {0: BATCH, 1: TGT} if tokens["feed"] == "prefix" else {0: BATCH}
    state_axes = {name: layout["encoder_outputs"][first] for name, (first, _) in layout["decoder_state"].items()}
    memory_axes = {name: layout["encoder_outputs"][source] for name, source in layout["decoder_memory"].items()}
    decoder_axes = {tokens["name"]: token_axes, **state_axes, **memory_axes, **layout["decoder_outputs"]}
    graphs = [
        OnnxGraph("encoder", encoder, {"src_ids": src, "src_lengths": lengths}, list(layout["encoder_outputs"]),
                  encoder_axes),
        OnnxGraph("decoder", decoder, decoder_inputs, list(layout["decoder_outputs"]), decoder_axes),
    ]
    contract = _contract(task, model, layout, graphs)
    return GraphSet(graphs, {META_KEY: json.dumps(contract)}, lambda files: verify(task, model, files))


def _contract(task: Seq2SeqTask, model: nn.Module, layout: dict[str, Any], graphs: list[OnnxGraph]) -> dict:
    """What a runtime needs to run the decoding loop (``onnx_decoding.greedy_decode`` reads it)."""
    state = task.state()
    settings = task.search_settings(beam_size=1)
    dcfg = task.data_cfg.decoding
    cap = min(dcfg.max_new_tokens, state["max_target_tokens"] - 1)
    limit = position_limit(model)
    return {
        "graphs": {g.role: {"inputs": list(g.inputs), "outputs": g.outputs} for g in graphs},
        "decoder_tokens": layout["decoder_tokens"],
        "decoder_memory": layout["decoder_memory"],
        "decoder_state": layout["decoder_state"],
        "logits": "logits",
        "bos_id": state["bos_id"], "eos_id": state["eos_id"], "pad_id": state["pad_id"],
        "unk_id": state["unk_id"], "banned_ids": list(settings.banned_ids),
        "max_source_tokens": state["max_source_tokens"], "max_target_tokens": state["max_target_tokens"],
        # generated tokens per row: min(max_new_tokens, ceil(max_length_ratio × source length + offset))
        "max_new_tokens": cap if limit is None else min(cap, limit),
        "max_length_ratio": dcfg.max_length_ratio, "max_length_offset": dcfg.max_length_offset,
        "tokenizer": state.get("tokenizer"), "target_tokenizer": state.get("target_tokenizer"),
    }


def verify(task: Seq2SeqTask, model: nn.Module, files: dict[str, Path]) -> Verification:
    """Teacher-forced logits within ``TOLERANCE`` at ``CHECKS``; greedy ids equal on ``EXAMPLE_SENTENCES``."""
    try:
        encoder, decoder = open_session(files["encoder"]), open_session(files["decoder"])
    except Exception as exc:  # onnxruntime's own error types
        raise ArtifactError(f"onnxruntime cannot load the exported graphs: {first_line(exc)}") from exc
    diff = 0.0
    for seed, (batch, src_len, tgt_len) in enumerate(CHECKS, start=1):
        src, lengths = _sources(task, batch, src_len, seed)
        tgt = _targets(task, batch, tgt_len, seed)
        shapes = f"src_ids[{batch}, {src_len}], tgt_ids[{batch}, {tgt_len}]"
        with torch.no_grad():  # the task's own teacher-forced path (it drops the last target column)
            expected = task._teacher_forced(model, {"src": src, "src_lengths": lengths,
                                                    "tgt": torch.cat([tgt, tgt[:, :1]], dim=1)}).numpy()
        try:
            actual = teacher_forced_logits(encoder, decoder, src.numpy(), lengths.numpy(), tgt.numpy())
        except Exception as exc:  # the first line says which node failed
            raise ArtifactError(f"onnxruntime cannot run the exported graphs on {shapes}: {first_line(exc)}") from exc
        diff = max(diff, checked_difference(actual, expected, shapes, TOLERANCE))
    batch = task.preprocess(list(EXAMPLE_SENTENCES))
    src, lengths = batch["src"], batch["src_lengths"]
    expected_ids = task.search_ids(model, src, lengths, task.search_settings(beam_size=1), task.decode_limits(lengths))
    actual_ids = greedy_decode(encoder, decoder, src.numpy(), lengths.numpy())
    for i, (want, got) in enumerate(zip(expected_ids, actual_ids)):
        if want != got:
            raise ArtifactError(f"greedy decoding with onnxruntime differs from PyTorch on example {i + 1} "
                                f"({EXAMPLE_SENTENCES[i]!r}): {got[:8]}… vs {want[:8]}…; the export is wrong")
    return Verification(diff, [f"greedy decoding with onnxruntime equals PyTorch's on {len(EXAMPLE_SENTENCES)} "
                               "example sentences"])
