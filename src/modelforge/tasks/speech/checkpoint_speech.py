"""Speech recognition with ``model.name=hf``: a CTC checkpoint (wav2vec2 …) or a Whisper-style encoder–decoder,
with the checkpoint's own tokenizer and feature extractor.

Waveforms stay the task's (read, resampled, padded, noise/speed-augmented as for its own models); the
checkpoint's feature extractor turns each batch into what the network expects (wav2vec2: normalised samples;
Whisper: log-mel features of a fixed window), so the task's log-mel front end and SpecAugment are not used.
Transcripts are the tokenizer's ids: for CTC the letters (blank = the tokenizer's pad token, as transformers' own
CTC loss), for Whisper the decoder prompt (start, language, task tokens), the text and the end token. CTC decodes
greedily (best path, repeats merged, blanks dropped, by the tokenizer); Whisper through transformers' ``generate``
continuing the prompt (``decoding: beam`` = ``num_beams: beam_width``). Transcripts and references are compared
after the task's text normalisation (lower case, punctuation dropped), so WER does not count case or commas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.models.hf_auto import (
    auto_feature_extractor,
    auto_tokenizer,
    checkpoint_config,
    checkpoint_or_artifact,
    saved_files,
)

MAX_NEW_TOKENS = 128  # most transcript tokens generated (capped by the checkpoint's target positions)


def checkpoint_kind(model_cfg: Any) -> str:
    """``seq2seq`` (the checkpoint's config is an encoder–decoder: Whisper) or ``ctc``."""
    return "seq2seq" if getattr(checkpoint_config(model_cfg), "is_encoder_decoder", False) else "ctc"


class CheckpointSpeech:
    """The checkpoint's tokenizer and feature extractor behind the calls ``SpeechRecognition`` makes."""

    def __init__(self, model_cfg: Any, artifact_dir: Path | None, kind: str):
        folder = checkpoint_or_artifact(model_cfg, artifact_dir)
        self.tok, self.extractor, self.kind = auto_tokenizer(folder), auto_feature_extractor(folder), kind
        self.prompt = self._prompt() if kind == "seq2seq" else []

    def _prompt(self) -> list[int]:
        """The decoder prompt: what the tokenizer puts before any text (Whisper: start, language, task,
        no-timestamps), else its start token."""
        ids = list(self.tok("")["input_ids"])
        if ids and ids[-1] == self.tok.eos_token_id:
            ids = ids[:-1]
        start = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
        return ids or [start]

    def check(self, sample_rate: int) -> None:
        rate = getattr(self.extractor, "sampling_rate", sample_rate)
        if rate != sample_rate:
            raise ConfigError(f"data.features.sample_rate={sample_rate} but the checkpoint's feature extractor "
                              f"expects {rate} Hz; set data.features.sample_rate={rate}")

    def encode(self, text: str) -> list[int]:
        ids = list(self.tok(" ".join(text.split()))["input_ids"])
        if self.kind == "seq2seq" and ids[: len(self.prompt)] != self.prompt:
            ids = self.prompt + ids
        return ids

    def decode_reference(self, ids: list[int]) -> str:
        options = {"group_tokens": False} if self.kind == "ctc" else {}  # a reference's letters are all kept
        return self.tok.decode(ids, skip_special_tokens=True, **options)

    def files(self) -> dict[str, bytes]:
        return saved_files(self.tok, self.extractor)

    # ---- the network ------------------------------------------------------------------------------------------
    def inputs(self, waves: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """The feature extractor's tensors for a padded batch (each row cut to its own length first)."""
        rows = [wave[: int(n)].numpy() for wave, n in zip(waves.cpu(), lengths.cpu())]
        # CTC: padded to the longest row; Whisper's extractor pads (or cuts) every row to its fixed window itself
        padding = {"padding": True} if self.kind == "ctc" else {}
        features = self.extractor(rows, sampling_rate=self.extractor.sampling_rate, return_tensors="pt", **padding)
        return {name: features[name].to(waves.device) for name in self.extractor.model_input_names
                if name in features}

    def loss(self, model: nn.Module, waves: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """CTC loss (blank = pad token) or teacher-forced cross entropy over the transcript tokens."""
        inputs = self.inputs(waves, lengths)
        if self.kind == "ctc":
            log_probs = model(**inputs).float().log_softmax(-1)
            frames = model.output_lengths(lengths).clamp(max=log_probs.shape[1])
            loss = F.ctc_loss(log_probs.transpose(0, 1), targets, frames, target_lengths,
                              blank=self.tok.pad_token_id, zero_infinity=True, reduction=reduction)
            return loss
        logits = model(inputs["input_features"], targets[:, :-1]).float()
        scored = torch.arange(1, targets.shape[1], device=targets.device).unsqueeze(0) < target_lengths.unsqueeze(1)
        losses = F.cross_entropy(logits.flatten(0, 1), targets[:, 1:].flatten(), reduction="none")
        losses = losses[scored.flatten()]
        return losses.sum() if reduction == "sum" else losses.mean()

    @torch.no_grad()
    def transcribe(self, model: nn.Module, waves: torch.Tensor, lengths: torch.Tensor, beams: int = 1) -> list[str]:
        inputs = self.inputs(waves, lengths)
        if self.kind == "ctc":
            logits = model(**inputs)
            frames = model.output_lengths(lengths)
            best = logits.argmax(-1)
            best[torch.arange(best.shape[1], device=best.device).unsqueeze(0) >= frames.unsqueeze(1)] = \
                self.tok.pad_token_id
            return [text.strip() for text in self.tok.batch_decode(best.tolist())]
        rows = self.generated_ids(model, inputs["input_features"], beams)
        return [text.strip() for text in self.tok.batch_decode(rows, skip_special_tokens=True)]

    def search(self, model: nn.Module, beams: int = 1) -> dict[str, Any]:
        """transformers' ``generate`` settings of a Whisper-style transcript (after the prompt, up to the end token)."""
        net_config = getattr(model, "net", model).config
        room = getattr(net_config, "max_target_positions", MAX_NEW_TOKENS + len(self.prompt)) - len(self.prompt)
        return {"num_beams": beams, "max_new_tokens": max(1, min(MAX_NEW_TOKENS, room)),
                "eos_token_id": self.tok.eos_token_id, "decoder_start_token_id": self.prompt[0],
                "pad_token_id": self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id}

    def generated_ids(self, model: nn.Module, features: torch.Tensor, beams: int = 1) -> list[list[int]]:
        """The transcript ids generated after the prompt for each row, cut before the end token."""
        prompt = torch.tensor([self.prompt], device=features.device).expand(len(features), -1)
        ids = model.generate_ids(features, prompt, self.search(model, beams))[:, len(self.prompt):].tolist()
        return [row[: row.index(self.tok.eos_token_id)] if self.tok.eos_token_id in row else row for row in ids]

    # ---- ONNX export ------------------------------------------------------------------------------------------
    def example_inputs(self, batch_size: int, frames: int) -> dict[str, torch.Tensor]:
        """A CTC checkpoint's graph inputs: normalised waveforms of ``frames`` 10-ms frames (and the attention mask
        when the feature extractor makes one); a Whisper-style checkpoint exports as encoder + decoder graphs."""
        if self.kind != "ctc":
            raise NotImplementedError("a Whisper-style checkpoint exports as encoder + decoder graphs, not one graph "
                                      "of example inputs")
        generator = torch.Generator().manual_seed(0)
        waves = torch.randn(batch_size, frames * self.extractor.sampling_rate // 100, generator=generator)
        inputs = {"input_values": (waves - waves.mean(1, keepdim=True)) / waves.std(1, keepdim=True)}
        if getattr(self.extractor, "return_attention_mask", False):
            inputs["attention_mask"] = torch.ones_like(waves, dtype=torch.long)
        return inputs

    def export_dynamic_axes(self) -> dict[str, dict[int, str]]:
        samples = {0: "batch", 1: "samples"}
        return {"input_values": samples, "attention_mask": samples, "output": {0: "batch", 1: "output_frames"}}
