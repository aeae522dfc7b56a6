"""Translation and summarization with ``model.name=hf``: the checkpoint's own tokenizer and transformers' search.

A T5/BART/Marian checkpoint comes with the tokenizer it was trained with, so no BPE is trained: sources are the
tokenizer's ids (its end-of-sequence appended, as the checkpoint expects), targets ``[decoder start] + label ids``
— the shift transformers itself applies to ``labels`` — so the task's teacher forcing (``tgt[:, :-1]`` in,
``tgt[:, 1:]`` scored) is transformers' own. Beam search is transformers' ``generate`` (``num_beams``, its
``length_penalty``: the score is divided by length ** penalty, not GNMT's term); every row is cut to the task's
per-row token limit afterwards, so greedy output equals a per-row stopping search (and the ONNX decoding loop).

The tokenizer travels with the artifact as the files its ``save_pretrained`` writes (JSON, vocabularies,
sentencepiece models: nothing pickled), and a loaded run reads it back from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from modelforge.core.errors import ConfigError
from modelforge.models.hf_auto import (
    auto_tokenizer,
    checkpoint_config,
    checkpoint_or_artifact,
    saved_files,
)

HF_TOKENIZER = "hf"  # the task state's ``tokenizer``: the artifact holds the checkpoint's own tokenizer files


def decoder_start(model_cfg: Any) -> int | None:
    """The checkpoint config's ``decoder_start_token_id`` (None: the tokenizer's pad token is used)."""
    return getattr(checkpoint_config(model_cfg), "decoder_start_token_id", None)


class CheckpointText:
    """The checkpoint's transformers tokenizer behind the calls the seq2seq tasks make."""

    def __init__(self, model_cfg: Any, artifact_dir: Path | None):
        self.tok = auto_tokenizer(checkpoint_or_artifact(model_cfg, artifact_dir))
        if self.tok.eos_token_id is None:
            raise ConfigError(f"model.checkpoint={model_cfg.kwargs().get('checkpoint')}: its tokenizer has no "
                              "end-of-sequence token; a seq2seq checkpoint needs one")

    def state(self, start: int | None, max_source_tokens: int, max_target_tokens: int) -> dict[str, Any]:
        """The task state: special ids (``bos_id`` = the decoder's start token) and sizes."""
        if start is None:
            start = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        unk = self.tok.unk_token_id if self.tok.unk_token_id is not None else pad
        return {"tokenizer": HF_TOKENIZER, "target_tokenizer": None, "src_vocab_size": len(self.tok),
                "tgt_vocab_size": len(self.tok), "pad_id": pad, "unk_id": unk, "bos_id": int(start),
                "eos_id": self.tok.eos_token_id, "max_source_tokens": max_source_tokens,
                "max_target_tokens": max_target_tokens}

    def encode_sources(self, texts: list[str], keep: int, unk: int) -> list[list[int]]:
        rows = self.tok(list(texts), truncation=True, max_length=keep)["input_ids"]
        return [list(row) or [unk] for row in rows]

    def encode_targets(self, texts: list[str], keep: int, start: int) -> list[list[int]]:
        """``[start] + label ids``, the labels (end-of-sequence included) cut to ``keep - 1`` tokens."""
        rows = self.tok(text_target=list(texts), truncation=True, max_length=keep - 1)["input_ids"]
        return [[start, *row] for row in rows]

    def decode(self, rows: list[list[int]]) -> list[str]:
        return [text.strip() for text in self.tok.batch_decode(rows, skip_special_tokens=True)]

    def files(self) -> dict[str, bytes]:
        return saved_files(self.tok)


def banned_ids(state: dict[str, Any]) -> tuple[int, ...]:
    """Never generated: padding and unknown (the start token is fed, not generated; BART's is its end token)."""
    return tuple(sorted({state["pad_id"], state["unk_id"]} - {state["eos_id"]}))


def generated_rows(model: Any, src: torch.Tensor, src_lengths: torch.Tensor, state: dict[str, Any],
                   limits: torch.Tensor, beam_size: int, length_penalty: float) -> list[list[int]]:
    """transformers' search over a padded source batch: per row the generated ids (no start token), up to and
    without the end-of-sequence, at most ``limits[row]`` tokens (end-of-sequence included)."""
    mask = torch.arange(src.shape[1], device=src.device).unsqueeze(0) < src_lengths.unsqueeze(1)
    suppress = banned_ids(state)
    search = {"num_beams": beam_size, "length_penalty": length_penalty, "max_new_tokens": int(limits.max()),
              "decoder_start_token_id": state["bos_id"], "eos_token_id": state["eos_id"],
              "pad_token_id": state["pad_id"], "suppress_tokens": list(suppress) or None, "early_stopping": True}
    ids = getattr(model, "module", model).generate_ids(src, mask, search)[:, 1:].tolist()
    rows = []
    for row, limit in zip(ids, limits.tolist()):
        row = row[:limit]
        rows.append(row[: row.index(state["eos_id"])] if state["eos_id"] in row else row)
    return rows
