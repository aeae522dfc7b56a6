"""Run an exported encoder–decoder (``model.encoder.onnx`` + ``model.decoder.onnx``) with onnxruntime and NumPy.

``modelforge export RUN`` writes both graphs for a translation or summarization run; this module is the loop a
consumer runs around them, and needs nothing but ``numpy`` and ``onnxruntime`` (no torch)::

    from modelforge.tasks.seq2seq.onnx_decoding import greedy_decode
    ids = greedy_decode("runs/x/model.encoder.onnx", "runs/x/model.decoder.onnx", src_ids, src_lengths)

``src_ids`` (batch, src_len) int64 are source token ids padded with any id, ``src_lengths`` (batch,) int64 the real
lengths; the source tokenizer is ``runs/x/model/tokenizer.json`` (HF ``tokenizers``), truncated to
``max_source_tokens`` (an empty encoding becomes one ``unk_id``). The result holds the generated target ids per row,
without BOS/EOS; decode them with the target tokenizer (``tokenizer_target.json`` when the run has one, else the same
file). The result is the run's own greedy decoding (``--beam 1``) token for token: the exporter checks that before
it writes the files.

Both files carry the same ``modelforge.export_id`` (graphs of different exports are refused together) and the
loop's contract as JSON under the metadata key ``modelforge.seq2seq``: the special ids
(``bos_id``, ``eos_id``, ``pad_id``, ``banned_ids`` never generated), the length limits, each graph's input and
output names, and how the decoder is fed:

- ``decoder_tokens.feed = "prefix"`` (Transformer): the decoder takes all target ids so far (batch, tgt_len) and
  returns logits (batch, tgt_len, vocab), of which the last position is used; no KV cache, so step t costs t
  positions;
- ``decoder_tokens.feed = "last"`` (GRU with attention): the decoder takes the previous token (batch,) and a
  recurrent state, and returns logits (batch, vocab) and the next state;
- ``decoder_memory`` maps decoder inputs to the encoder outputs passed unchanged at every step (memory, mask);
- ``decoder_state`` maps each state input to ``[encoder output giving its first value, decoder output giving the
  next]``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

META_KEY = "modelforge.seq2seq"


def open_session(graph: Any) -> Any:
    """An onnxruntime session for a path (or the session itself), on the CPU."""
    if isinstance(graph, (str, Path)):
        import onnxruntime as ort

        return ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    return graph


def read_contract(session: Any) -> dict[str, Any]:
    """The ``modelforge.seq2seq`` metadata of an exported encoder or decoder graph."""
    meta = session.get_modelmeta().custom_metadata_map
    if META_KEY not in meta:
        raise ValueError(f"this ONNX graph has no {META_KEY!r} metadata; it is not a modelforge encoder–decoder")
    return json.loads(meta[META_KEY])


class EncoderDecoder:
    """The two sessions and their contract; ``encode`` once, then ``step`` per target position."""

    def __init__(self, encoder: Any, decoder: Any):
        self.encoder, self.decoder = open_session(encoder), open_session(decoder)
        self.contract = read_contract(self.encoder)
        ids = [s.get_modelmeta().custom_metadata_map.get("modelforge.export_id") for s in (self.encoder, self.decoder)]
        if ids[0] != ids[1]:  # e.g. an export interrupted between its two renames, or files mixed by hand
            raise ValueError(f"the encoder and decoder graphs come from different exports ({ids[0]} ≠ {ids[1]}); "
                             "export the run again")
        # an input the exporter found unused (e.g. a state a model overwrites before reading) is not in the graph
        self._decoder_inputs = {i.name for i in self.decoder.get_inputs()}
        self._decoder_outputs = [o.name for o in self.decoder.get_outputs()]

    def encode(self, src_ids: np.ndarray, src_lengths: np.ndarray) -> dict[str, np.ndarray]:
        names = self.contract["graphs"]["encoder"]["inputs"]
        values = self.encoder.run(None, dict(zip(names, (np.asarray(src_ids, np.int64),
                                                         np.asarray(src_lengths, np.int64)))))
        return dict(zip((o.name for o in self.encoder.get_outputs()), values))

    def initial_state(self, encoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: encoded[first] for name, (first, _) in self.contract["decoder_state"].items()}

    def step(self, tokens: np.ndarray, encoded: dict[str, np.ndarray],
             state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits for ``tokens`` — (batch, tgt_len) ids so far for ``prefix`` feeding, the (batch,) previous ids
        for ``last`` — and the next state."""
        contract = self.contract
        feeds = {name: encoded[source] for name, source in contract["decoder_memory"].items()}
        feeds[contract["decoder_tokens"]["name"]] = np.asarray(tokens, np.int64)
        feeds.update(state)
        feeds = {name: value for name, value in feeds.items() if name in self._decoder_inputs}
        outputs = dict(zip(self._decoder_outputs, self.decoder.run(None, feeds)))
        next_state = {name: outputs[after] for name, (_, after) in contract["decoder_state"].items()}
        return outputs[contract["logits"]], next_state


def teacher_forced_logits(encoder: Any, decoder: Any, src_ids: np.ndarray, src_lengths: np.ndarray,
                          tgt_ids: np.ndarray) -> np.ndarray:
    """Logits (batch, tgt_len, vocab) for every position of ``tgt_ids`` (BOS first) given the previous ones."""
    model = EncoderDecoder(encoder, decoder)
    encoded = model.encode(src_ids, src_lengths)
    state = model.initial_state(encoded)
    if model.contract["decoder_tokens"]["feed"] == "prefix":
        return model.step(tgt_ids, encoded, state)[0]
    steps = []
    for t in range(tgt_ids.shape[1]):
        logits, state = model.step(tgt_ids[:, t], encoded, state)
        steps.append(logits)
    return np.stack(steps, axis=1)


def max_new_tokens(contract: dict[str, Any], src_lengths: np.ndarray) -> np.ndarray:
    """Per row: ceil(ratio × source length + offset), at most the run's cap (as the task's PyTorch decoding)."""
    # float32 as in the PyTorch decoding, so a limit on a rounding boundary agrees
    raw = np.asarray(src_lengths).astype(np.float32) * np.float32(contract["max_length_ratio"])
    raw = raw + np.float32(contract["max_length_offset"])
    return np.minimum(np.ceil(raw).astype(np.int64), int(contract["max_new_tokens"]))


def greedy_decode(encoder: Any, decoder: Any, src_ids: np.ndarray, src_lengths: np.ndarray,
                  max_new: int | None = None) -> list[list[int]]:
    """Greedy decoding: generated target ids per source row, without BOS/EOS.

    ``encoder``/``decoder``: paths of the exported graphs or onnxruntime sessions. ``max_new`` caps the generated
    tokens (EOS included) below the run's own per-row limit.
    """
    model = EncoderDecoder(encoder, decoder)
    contract = model.contract
    bos, eos, banned = contract["bos_id"], contract["eos_id"], list(contract["banned_ids"])
    batch = int(np.asarray(src_ids).shape[0])
    limits = max_new_tokens(contract, src_lengths)
    if max_new is not None:
        limits = np.minimum(limits, max_new)
    encoded = model.encode(src_ids, src_lengths)
    state = model.initial_state(encoded)
    prefix = np.full((batch, 1), bos, dtype=np.int64)
    finished = np.zeros(batch, dtype=bool)
    out: list[list[int]] = [[] for _ in range(batch)]
    for t in range(int(limits.max()) if batch else 0):
        fed = prefix if contract["decoder_tokens"]["feed"] == "prefix" else prefix[:, -1]
        logits, state = model.step(fed, encoded, state)
        logits = np.array(logits[:, -1] if logits.ndim == 3 else logits, dtype=np.float32)
        logits[:, banned] = -math.inf
        tokens = logits.argmax(axis=-1)
        for row in np.flatnonzero(~finished):
            out[row].append(int(tokens[row]))
        finished |= (tokens == eos) | (limits <= t + 1)
        if finished.all():
            break
        prefix = np.concatenate([prefix, tokens[:, None].astype(np.int64)], axis=1)
    return [row[:-1] if row and row[-1] == eos else row for row in out]
