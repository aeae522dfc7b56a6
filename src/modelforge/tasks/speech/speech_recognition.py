"""Speech recognition: WAV → text with a CTC acoustic model over characters, scored by WER/CER (jiwer).

Data comes from the generated ``spoken-digits`` / ``spoken-commands`` sets (espeak-ng, test voices never heard in
training) or a user manifest (a folder with ``transcripts.tsv`` or a JSONL file). The generated waveforms are held
in memory as 16-bit samples; a manifest's WAVs are indexed from their headers and decoded per item, in DataLoader
workers (``data/lazy_speech.py``). Every batch is padded, optionally augmented (background noise, speed), turned
into log-mel/MFCC features and SpecAugment-masked inside ``training_step``, so each epoch hears fresh noise and every
random draw comes from the global torch RNG, which checkpoints capture (exact resume).

With ``model.name=hf`` (a wav2vec2-style CTC or a Whisper checkpoint) ``checkpoint_speech.py`` supplies the
checkpoint's feature extractor, tokenizer, loss and decoding in place of the log-mel front end and the characters.

The pieces both speech tasks share (data config, loading, the waveform dataset, augmentation, reading inputs for
serving) live here; ``audio_classification`` imports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from modelforge.core.config import Recipe
from modelforge.core.errors import ConfigError, DataError
from modelforge.core.registry import register
from modelforge.data.formats.speech_manifest import SpeechRecord
from modelforge.data.padding import pad_rows
from modelforge.data.speech import (
    SPLIT_NAMES,
    SpeechDataConfig,
    audio_input_spec,
    augment_waveforms,
    check_split_sizes,
    collate_speech,
    example_features,
    load_records,
    read_input_audio,
    speech_features,
    speech_split,
)
from modelforge.tasks.base import ReportSamples, Splits, StepOutput, Task
from modelforge.tasks.metrics import across_ranks, summed_in_order
from modelforge.tasks.speech.ctc_decoding import DEFAULT_CHARS, CharVocab, Lexicon, decode


class AsrDataConfig(SpeechDataConfig):
    decoding: Literal["greedy", "beam"] = Field("greedy", description="CTC decoding for evaluation and serving")
    beam_width: int = Field(8, ge=1, description="beam decoding: prefixes kept per frame")
    lexicon: Optional[str] = Field(
        None, description="beam decoding: restrict words to 'train' (the training transcripts' words) or a word-list "
        "file (whitespace separated)"
    )


def speech_metrics(references: list[str], hypotheses: list[str], prefix: str = "") -> dict[str, float]:
    """Corpus WER and CER by jiwer (errors / reference words or characters), and exact-utterance accuracy."""
    import jiwer

    if not references:
        return {}
    exact = sum(r == h for r, h in zip(references, hypotheses, strict=True)) / len(references)
    return {
        f"{prefix}wer": float(jiwer.wer(references, hypotheses)),
        f"{prefix}cer": float(jiwer.cer(references, hypotheses)),
        f"{prefix}utterance_accuracy": float(exact),
    }


@register("task", "speech_recognition")
class SpeechRecognition(Task):
    """Transcribe speech with a CTC acoustic model over characters (spoken digits, commands, or your recordings)."""

    name = "speech_recognition"
    capabilities = frozenset({"transcribe"})
    call_options = frozenset({"decoding", "beam_width"})
    DataConfig = AsrDataConfig
    input_kind = "audio"
    evaluation_gathers_ranks = True  # both evaluations gather their rows once (across_ranks): a rank may take a share

    def __init__(self, recipe: Recipe, state: dict[str, Any] | None = None):
        super().__init__(recipe, state)
        self.vocab = CharVocab(self.state_dict_.get("vocab", DEFAULT_CHARS))
        self._lexicon: Lexicon | None = None
        # model.name=hf: a CTC or Whisper-style checkpoint with its own tokenizer and feature extractor
        self.pretrained = recipe.model.name == "hf"
        self._checkpoint_speech: Any = None

    def checkpoint_speech(self) -> Any:
        """The checkpoint's tokenizer and feature extractor (``checkpoint_speech.CheckpointSpeech``)."""
        if self._checkpoint_speech is None:
            from modelforge.tasks.speech.checkpoint_speech import CheckpointSpeech, checkpoint_kind

            kind = self.state_dict_.get("checkpoint_kind") or checkpoint_kind(self.recipe.model)
            self._checkpoint_speech = CheckpointSpeech(self.recipe.model, self.artifact_dir, kind)
        return self._checkpoint_speech

    # ---- data -------------------------------------------------------------------------------------------------
    def datasets(self) -> Splits:
        cfg = self.data_cfg
        if self.pretrained:
            speech = self.checkpoint_speech()
            speech.check(cfg.features.sample_rate)
            if speech.kind == "ctc" and cfg.decoding == "beam":
                raise ConfigError("data.decoding=beam: a CTC checkpoint (model.name=hf) decodes greedily; set "
                                  "data.decoding=greedy")
        parts = load_records(cfg)
        check_split_sizes(parts)
        built, summary = {}, {"source": cfg.source}
        for split in SPLIT_NAMES:
            if not parts[split]:
                continue
            built[split], kept, skipped = speech_split(
                cfg, parts[split], split, lambda r: torch.tensor(self._encode(r), dtype=torch.long))
            summary[f"{split}_size"] = len(kept)
            summary[f"{split}_hours"] = round(built[split].seconds(cfg.features.sample_rate) / 3600, 3)
            if skipped:
                summary["skipped_files"] = len(skipped)
                summary["first_skipped"] = skipped[0]
        words = sorted({w for r in parts["train"] for w in self.vocab.normalize(r.text).split()})
        self.state_dict_ = {
            "vocab": self.vocab.chars,
            "n_features": cfg.features.n_features,
            "lexicon": self._lexicon_words(words),
        }
        if self.pretrained:
            self.state_dict_.update(checkpoint_kind=self.checkpoint_speech().kind, lexicon=None)
        summary.update(vocab_size=len(self.vocab), train_words=len(words))
        if cfg.source == "manifest":
            from modelforge.data.found import found_line
            from modelforge.data.speech import manifest_origin

            origin, sizes = manifest_origin(parts), {s: summary[f"{s}_size"] for s in SPLIT_NAMES if s in built}
            summary["found"] = found_line(f"{cfg.path} ({sum(map(len, parts.values()))} WAV files listed)", None,
                                          {s: (n, origin) for s, n in sizes.items()},
                                          f"{len(words)} training words, {len(self.vocab)} characters")
        return Splits(built["train"], built.get("val"), built.get("test"), summary)

    def _encode(self, record: SpeechRecord) -> list[int]:
        if self.pretrained:
            return self.checkpoint_speech().encode(record.text)
        try:
            ids = self.vocab.encode(record.text)
        except DataError as exc:
            raise DataError(f"{record.path}: {exc}") from None
        if not ids:
            raise DataError(f"{record.path}: its transcript {record.text!r} has no letters to recognise")
        return ids

    def _lexicon_words(self, train_words: list[str]) -> list[str] | None:
        choice = self.data_cfg.lexicon
        if choice is None:
            return None
        if choice == "train":
            return train_words
        path = Path(choice).expanduser()
        try:
            words = path.read_text(encoding="utf-8").split()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read the lexicon word list ({exc})") from None
        if not words:
            raise DataError(f"{path}: the lexicon word list is empty")
        return sorted({w for word in words for w in self.vocab.normalize(word).split()})

    def collate(self, items: list[Any]) -> Any:
        return collate_speech(items)

    def extra_files(self) -> dict[str, bytes]:
        return self.checkpoint_speech().files() if self.pretrained else {}

    # ---- model ------------------------------------------------------------------------------------------------
    def derived_model_kwargs(self) -> dict[str, Any]:
        if self.pretrained:
            return {"head": "speech"}
        n_features = self.state_dict_.get("n_features", self.data_cfg.features.n_features)
        return {"n_mels": n_features, "n_features": n_features, "vocab_size": len(self.vocab)}

    def log_probs(self, model: nn.Module, feats: torch.Tensor, frames: torch.Tensor):
        """(B, T', V) float log-probabilities and valid output frames.

        The zoo's CTC models (``models/asr.py``) take ``(B, F, T)`` features with lengths and return ``(B, T', V)``;
        ``model.output_lengths`` maps input frames to output frames, since the front-end subsamples time.
        """
        out = model(feats.transpose(1, 2), frames)
        out_lengths = model.output_lengths(frames) if hasattr(model, "output_lengths") else frames
        # log_softmax is idempotent, so this is right whether the model returns logits or log-probabilities
        return out.float().log_softmax(-1), out_lengths.to(torch.long).clamp(max=out.shape[1])

    # ---- training and evaluation --------------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: Any) -> StepOutput:
        waves, wave_lengths, targets, target_lengths = batch
        waves, wave_lengths = augment_waveforms(self.data_cfg, waves, wave_lengths)
        if self.pretrained:
            return StepOutput(self.checkpoint_speech().loss(model, waves, wave_lengths, targets, target_lengths))
        feats, frames = speech_features(self.data_cfg, waves, wave_lengths, train=True)
        log_probs, out_lengths = self.log_probs(model, feats, frames)
        loss = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, target_lengths, blank=self.vocab.blank,
                          zero_infinity=True)
        return StepOutput(loss)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, Any]:
        if self.pretrained:
            return self._evaluate_checkpoint(model, loader)
        beam = self.data_cfg.decoding == "beam"
        losses, counts, refs, hyps, greedy = across_ranks(*self._evaluation_rows(model, loader, beam))
        metrics: dict[str, Any] = {"loss": summed_in_order(losses) / max(int(counts.sum()), 1)}
        metrics.update(speech_metrics(refs, hyps if beam else greedy))
        if beam:
            metrics.update(speech_metrics(refs, greedy, prefix="greedy_"))
        metrics["examples"] = [{"reference": r, "hypothesis": h} for r, h in zip(refs[:5], (hyps or greedy)[:5])]
        return metrics

    def _evaluation_rows(self, model: nn.Module, loader: Any, beam: bool) -> tuple[Any, ...]:
        """What ``evaluate`` reads from its batches: the summed CTC loss and the utterances of each batch (arrays),
        then every utterance's reference, beam transcript (``beam`` only) and greedy transcript."""
        losses, counts, refs, hyps, greedy = [], [], [], [], []
        for waves, wave_lengths, targets, target_lengths in loader:
            feats, frames = speech_features(self.data_cfg, waves, wave_lengths)
            log_probs, out_lengths = self.log_probs(model, feats, frames)
            loss = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, target_lengths,
                              blank=self.vocab.blank, zero_infinity=True, reduction="sum")
            losses.append(float(loss))
            counts.append(len(waves))
            refs += [self.vocab.decode(t[:n].tolist()) for t, n in zip(targets, target_lengths, strict=True)]
            greedy += decode(log_probs, self.vocab, out_lengths)
            if beam:
                hyps += self.decode(log_probs, out_lengths)
        return np.array(losses, dtype=np.float64), np.array(counts, dtype=np.int64), refs, hyps, greedy

    def _evaluate_checkpoint(self, model: nn.Module, loader: Any) -> dict[str, Any]:
        """Loss and WER/CER of a ``model.name=hf`` network (its own decoding: CTC greedy, or Whisper's search)."""
        speech = self.checkpoint_speech()
        losses, counts, refs, hyps = [], [], [], []
        for waves, wave_lengths, targets, target_lengths in loader:
            losses.append(float(speech.loss(model, waves, wave_lengths, targets, target_lengths, reduction="sum")))
            counts.append(len(waves))
            refs += [self.vocab.normalize(speech.decode_reference(t[:n].tolist()))
                     for t, n in zip(targets, target_lengths, strict=True)]
            hyps += self._transcripts(model, waves, wave_lengths)
        losses, counts, refs, hyps = across_ranks(np.array(losses, dtype=np.float64), np.array(counts, dtype=np.int64),
                                                  refs, hyps)
        metrics: dict[str, Any] = {"loss": summed_in_order(losses) / max(int(counts.sum()), 1),
                                   **speech_metrics(refs, hyps)}
        metrics["examples"] = [{"reference": r, "hypothesis": h} for r, h in zip(refs[:5], hyps[:5])]
        return metrics

    def _transcripts(self, model: nn.Module, waves: torch.Tensor, wave_lengths: torch.Tensor,
                     beam_width: int | None = None) -> list[str]:
        """Normalised transcripts by a ``model.name=hf`` network (``beam_width``: Whisper's beams this call)."""
        cfg = self.data_cfg
        beams = beam_width or (cfg.beam_width if cfg.decoding == "beam" else 1)
        texts = self.checkpoint_speech().transcribe(model, waves, wave_lengths, beams)
        return [self.vocab.normalize(text) for text in texts]

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor, decoding: str | None = None,
               beam_width: int | None = None) -> list[str]:
        """The configured decoding (or the one given): greedy, or prefix beam search (with the lexicon when one is
        set)."""
        cfg = self.data_cfg
        return decode(log_probs, self.vocab, lengths, decoding or cfg.decoding, beam_width or cfg.beam_width,
                      self.lexicon)

    @property
    def lexicon(self) -> Lexicon | None:
        words = self.state_dict_.get("lexicon")
        if self._lexicon is None and words:
            self._lexicon = Lexicon(words, self.vocab)
        return self._lexicon

    # ---- report -----------------------------------------------------------------------------------------------
    def report_samples(self, model: nn.Module, splits: Splits, count: int) -> ReportSamples:
        """Held-out utterances: reference, transcript (the configured decoding) and the WER of each."""
        import jiwer

        from modelforge.render import samples

        split, dataset = samples.held_out(splits)
        if dataset is None:
            return ReportSamples(note="the recipe has no test or validation split")
        waves, wave_lengths, targets, target_lengths = self.collate(
            [dataset[i] for i in samples.spread(len(dataset), count)])
        if self.pretrained:
            hyps = self._transcripts(model, waves, wave_lengths)
            refs = [self.vocab.normalize(self.checkpoint_speech().decode_reference(t[:n].tolist()))
                    for t, n in zip(targets, target_lengths, strict=True)]
        else:
            log_probs, out_lengths = self.log_probs(model, *speech_features(self.data_cfg, waves, wave_lengths))
            hyps = self.decode(log_probs, out_lengths)
            refs = [self.vocab.decode(t[:n].tolist()) for t, n in zip(targets, target_lengths, strict=True)]
        seconds = (wave_lengths.float() / self.data_cfg.features.sample_rate).tolist()
        rows = [(r, h, round(float(jiwer.wer(r, h)), 3), round(s, 2)) for r, h, s in zip(refs, hyps, seconds)]
        right = [r == h for r, h in zip(refs, hyps)]
        return ReportSamples(
            html=samples.table(["reference", "transcript", "WER", "seconds"], rows, right),
            note=f"WER of these {len(rows)}: {jiwer.wer(refs, hyps):.3f} ({self.data_cfg.decoding} decoding); "
                 f"evenly spaced over the {split} split",
        )

    # ---- serving and export -----------------------------------------------------------------------------------
    def input_spec(self) -> dict[str, Any]:
        return audio_input_spec(self.data_cfg.features)

    def example_inputs(self, batch_size: int = 2, length: int = 40) -> dict[str, torch.Tensor]:
        """The acoustic model alone: features (B, F, T) + frame counts → per-frame CTC log-probs (B, T', V), with
        T' = (T - 1) // 2 + 1 valid frames per row; decoding (greedy/beam, lexicon) stays with the consumer."""
        if self.pretrained:  # a CTC checkpoint: waveform → logits (checkpoint_speech.py); Whisper: export_graphs
            return self.checkpoint_speech().example_inputs(batch_size, length)
        n_features = self.state_dict_.get("n_features", self.data_cfg.features.n_features)
        return example_features(n_features, batch_size, length)

    def export_graphs(self, model: nn.Module) -> Any:
        """A Whisper-style checkpoint: encoder + decoder graphs (``speech_export.py``); else one graph."""
        if not (self.pretrained and self.checkpoint_speech().kind == "seq2seq"):
            return None
        from modelforge.tasks.speech.speech_export import speech_seq2seq_graphs

        return speech_seq2seq_graphs(self.checkpoint_speech(), model)

    def export_dynamic_axes(self) -> dict[str, dict[int, str]]:
        if self.pretrained:
            return self.checkpoint_speech().export_dynamic_axes()
        return {"features": {0: "batch", 2: "frames"}, "lengths": {0: "batch"},
                "output": {0: "batch", 1: "output_frames"}}

    def preprocess(self, inputs: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        waves = [read_input_audio(item, self.data_cfg.features, i) for i, item in enumerate(inputs)]
        if self.pretrained:  # the checkpoint's feature extractor runs in forward
            return pad_rows(waves)
        return speech_features(self.data_cfg, *pad_rows(waves))

    def forward(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], decoding: str | None = None,
                beam_width: int | None = None) -> Any:
        """Log-probabilities and frame counts, with this call's decoding (None: the recipe's) for postprocess."""
        if decoding not in (None, "greedy", "beam"):
            raise ConfigError(f"unknown decoding {decoding!r}; valid: greedy, beam")
        if beam_width is not None and beam_width < 1:
            raise ConfigError(f"beam_width must be >= 1, got {beam_width}")
        if self.pretrained:  # transcripts already: a CTC checkpoint greedy, Whisper with this call's beams
            if decoding == "beam" and self.checkpoint_speech().kind == "ctc":
                raise ConfigError("a CTC checkpoint (model.name=hf) decodes greedily; beam decoding is not available")
            beams = 1 if decoding == "greedy" else beam_width or (self.data_cfg.beam_width if decoding else None)
            return self._transcripts(model, *batch, beam_width=beams)
        return (*self.log_probs(model, *batch), decoding, beam_width)

    def postprocess(self, outputs: Any) -> list[dict[str, Any]]:
        if isinstance(outputs, list):  # a checkpoint's transcripts (forward decoded them)
            return [{"text": text} for text in outputs]
        log_probs, lengths, *how = outputs
        return [{"text": text} for text in self.decode(log_probs, lengths, *how)]
