"""Speech recognition: WAV → text with a CTC acoustic model over characters, scored by WER/CER (jiwer).

Data comes from the generated ``spoken-digits`` / ``spoken-commands`` sets (espeak-ng, test voices never heard in
training) or a user manifest (a folder with ``transcripts.tsv`` or a JSONL file). Waveforms are held in memory as
16-bit samples; every batch is padded, optionally augmented (background noise, speed), turned into log-mel/MFCC
features and SpecAugment-masked inside ``training_step``, so each epoch hears fresh noise and every random draw comes
from the global torch RNG, which checkpoints capture (exact resume).

The pieces both speech tasks share (data config, loading, the waveform dataset, augmentation, reading inputs for
serving) live here; ``audio_classification`` imports them.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from modelforge.core.config import Recipe, StrictConfig
from modelforge.core.errors import DataError
from modelforge.data.audio import (
    NOISE_COLORS,
    FeatureConfig,
    SpecAugmentConfig,
    colored_noise,
    extract_features,
    read_wav,
    spec_augment,
    speed_perturb,
)
from modelforge.data.formats.speech_manifest import SpeechRecord
from modelforge.tasks.base import ReportSamples, Splits, StepOutput, Task
from modelforge.tasks.ctc_decoding import DEFAULT_CHARS, CharVocab, Lexicon, decode

SPLIT_NAMES = ("train", "val", "test")


# ---------------------------------------------------------------------------------------------------------------
# Shared by the speech tasks: configuration, loading, the in-memory waveform dataset, augmentation


class SpeechDataConfig(StrictConfig):
    source: Literal["spoken-digits", "spoken-commands", "manifest"] = "spoken-digits"
    path: Optional[str] = Field(None, description="manifest source: a folder with transcripts.tsv, or a .tsv/.jsonl")
    n_train: int = Field(2000, ge=1, description="generated sources: training utterances (voices never in test)")
    n_val: int = Field(200, ge=0, description="generated sources: validation utterances (their own voices)")
    n_test: int = Field(400, ge=0, description="generated sources: test utterances (held-out voices)")
    generation_seed: int = Field(0, description="generated sources: seed of texts, speeds, pitches and eval noise")
    val_size: float = Field(0.1, ge=0, lt=1, description="manifest without a split column: validation share")
    test_size: float = Field(0.1, ge=0, lt=1, description="manifest without a split column: test share")
    split_seed: int = Field(0, description="manifest: seed of the split (by speaker when every line names one)")
    noise_snr: Optional[tuple[float, float]] = Field(
        (10.0, 30.0),
        description="background noise SNR range in dB (white/pink/brown): fresh per batch while training; generated "
        "val/test sets get fixed noise per file. null = clean audio",
    )
    speed_perturb: Optional[tuple[float, float]] = Field(
        None, description="training augmentation: play each batch at a random speed in this range, e.g. [0.9, 1.1]"
    )
    features: FeatureConfig = Field(default_factory=FeatureConfig, description="the audio front end (max_seconds too)")
    spec_augment: Optional[SpecAugmentConfig] = Field(None, description="SpecAugment while training; null = off")
    on_error: Literal["skip", "fail"] = Field("skip", description="unreadable audio in the training data")


def load_records(cfg: SpeechDataConfig) -> dict[str, list[SpeechRecord]]:
    """The source's utterances by split; a manifest without splits is cut by speaker (or at random)."""
    if cfg.source != "manifest":
        from modelforge.data.builtin.spoken import generate_spoken

        records = generate_spoken(cfg.source, cfg.n_train, cfg.n_val, cfg.n_test, seed=cfg.generation_seed)
        return {split: [r for r in records if r.split == split] for split in SPLIT_NAMES}
    if not cfg.path:
        raise DataError("data.source=manifest needs data.path=FOLDER (with transcripts.tsv) or a .tsv/.jsonl file")
    from modelforge.data.formats.speech_manifest import read_speech_manifest

    records = read_speech_manifest(Path(cfg.path).expanduser())
    if any(r.split for r in records):  # the manifest decides; lines without a split train
        return {split: [r for r in records if (r.split or "train") == split] for split in SPLIT_NAMES}
    from modelforge.data.splits import split_groups, split_indices

    fractions = {"train": 1 - cfg.val_size - cfg.test_size, "val": cfg.val_size, "test": cfg.test_size}
    if fractions["train"] <= 0:
        raise DataError(f"data.val_size + data.test_size = {cfg.val_size + cfg.test_size:g} leaves no training data")
    if all(r.voice for r in records):
        parts = split_groups([r.voice for r in records], fractions, cfg.split_seed)
    else:
        parts = split_indices(len(records), fractions, cfg.split_seed)
    return {split: [records[i] for i in parts[split]] for split in SPLIT_NAMES}


def read_split(
    cfg: SpeechDataConfig, records: list[SpeechRecord], split: str
) -> tuple[list[np.ndarray], list[SpeechRecord], list[str]]:
    """Decode a split's audio to int16 arrays; returns (audio, kept records, messages of skipped files).

    Generated held-out splits get their background noise here, fixed per file, so every epoch and every run scores
    the same audio. Training audio stays clean: its noise is drawn per batch.
    """
    fixed_noise = cfg.source != "manifest" and split != "train" and cfg.noise_snr is not None
    audio, kept, skipped = [], [], []
    for record in records:
        try:
            if fixed_noise:
                from modelforge.data.builtin.spoken import load_spoken_audio

                wave = load_spoken_audio(record, seed=cfg.generation_seed, snr_db=tuple(cfg.noise_snr)).numpy()
            else:
                wave = read_wav(record.path, cfg.features.sample_rate, cfg.features.max_seconds)
        except DataError as exc:
            if cfg.on_error == "fail" or split != "train":
                raise  # a held-out set that silently shrinks would make its figure incomparable
            skipped.append(str(exc))
            continue
        audio.append(np.clip(np.rint(wave * 32767.0), -32768, 32767).astype(np.int16))
        kept.append(record)
    return audio, kept, skipped


class WaveformDataset(torch.utils.data.Dataset):
    """Utterances as one flat int16 tensor plus per-item targets; batches come out padded by ``collate_speech``."""

    def __init__(self, audio: list[np.ndarray], targets: Sequence[torch.Tensor]):
        if len(audio) != len(targets):
            raise ValueError("WaveformDataset needs one target per utterance")
        if not audio:
            raise DataError("a speech split holds no utterances; enlarge the data (data.n_*, or the manifest)")
        self.lengths = torch.tensor([len(a) for a in audio], dtype=torch.long)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), self.lengths.cumsum(0)[:-1]])
        self.samples = torch.from_numpy(np.concatenate(audio))
        self.targets = list(targets)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start, length = int(self.offsets[index]), int(self.lengths[index])
        return self.samples[start : start + length].float() / 32768.0, self.targets[index]

    def get_batch(self, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, ...]:
        return collate_speech([self[int(i)] for i in indices])

    def seconds(self, sample_rate: int) -> float:
        return float(self.lengths.sum()) / sample_rate


def pad_stack(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D tensors → zero-padded ``(B, max_len)`` and their lengths."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    out = rows[0].new_zeros((len(rows), int(lengths.max()) if len(rows) else 0))
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out, lengths


def collate_speech(items: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    """(waveform, target) items → (waves, wave_lengths, targets[, target_lengths]): sequences padded, labels stacked."""
    waves, wave_lengths = pad_stack([item[0] for item in items])
    targets = [item[1] for item in items]
    if targets[0].dim() == 0:
        return waves, wave_lengths, torch.stack(targets)
    return (waves, wave_lengths, *pad_stack(targets))


def augment_waveforms(
    cfg: SpeechDataConfig, waves: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-time speed perturbation (one factor per batch) and background noise (colour and SNR per row)."""
    if cfg.speed_perturb is not None:
        low, high = cfg.speed_perturb
        # factors on a 0.05 grid keep the number of distinct resampling filter banks (and their cache) small
        factor = round(float(low + (high - low) * torch.rand(())) * 20) / 20
        if factor != 1.0:
            waves, lengths = speed_perturb(waves, factor, lengths)
    if cfg.noise_snr is not None:
        waves = _mix_noise(waves, lengths, cfg.noise_snr)
    return waves, lengths


def _mix_noise(waves: torch.Tensor, lengths: torch.Tensor, snr_range: tuple[float, float]) -> torch.Tensor:
    """Noise at an SNR drawn per row, measured over valid samples; padding stays zero.

    ``data.audio.add_noise`` does the same in float64 for exact SNRs (used for the fixed eval noise); per training
    batch float32 is plenty and several times cheaper.
    """
    low, high = snr_range
    # drawn on the CPU, so the random stream (and a resumed run) does not depend on the device
    snr_db = (low + (high - low) * torch.rand(len(waves))).to(waves.device)
    valid = (torch.arange(waves.shape[1], device=waves.device)[None, :] < lengths[:, None]).to(waves.dtype)
    noise = _colored_noise(waves.shape).to(waves.device) * valid
    count = lengths.clamp(min=1).to(waves.dtype)
    signal_power = (waves.square() * valid).sum(1) / count
    noise_power = noise.square().sum(1) / count
    scale = torch.sqrt(signal_power / (noise_power.clamp(min=1e-20) * 10.0 ** (snr_db / 10.0)))
    return waves + noise * scale[:, None]


_NOISE_BANK_SIZE = 1 << 19  # 32.8 s at 16 kHz


@functools.lru_cache(maxsize=1)
def _noise_bank() -> torch.Tensor:
    """(3, 2^19) unit-RMS white, pink and brown noise, made once with a fixed seed; batches take random crops.

    Cropping a long fixed recording costs an index per sample where fresh coloured noise costs an FFT of the whole
    padded batch, and with random offsets per row no two utterances hear the same stretch in practice.
    """
    generator = torch.Generator().manual_seed(0)
    return torch.stack([colored_noise(_NOISE_BANK_SIZE, color, generator).float() for color in NOISE_COLORS])


def _colored_noise(shape: torch.Size) -> torch.Tensor:
    """Rows of white, pink or brown noise (colour and offset drawn per row with the global torch RNG)."""
    batch, n = shape
    if n > _NOISE_BANK_SIZE:  # longer than the bank: fresh noise, one row at a time
        colors = torch.randint(len(NOISE_COLORS), (batch,)).tolist()
        return torch.stack([colored_noise(n, NOISE_COLORS[c]).float() for c in colors])
    colors = torch.randint(len(NOISE_COLORS), (batch,))
    offsets = torch.randint(_NOISE_BANK_SIZE - n + 1, (batch,))
    return _noise_bank()[colors[:, None], offsets[:, None] + torch.arange(n)[None, :]]


def speech_features(cfg: SpeechDataConfig, waves: torch.Tensor, lengths: torch.Tensor, train: bool = False):
    """Padded waveforms → ``(B, T, F)`` features and frame counts; SpecAugment when training and configured."""
    feats, frames = extract_features(waves, cfg.features, lengths)
    if train and cfg.spec_augment is not None:
        feats = spec_augment(feats, cfg.spec_augment, frames)
    return feats, frames


def read_input_audio(item: Any, features: FeatureConfig, index: int = 0) -> torch.Tensor:
    """A serving input → mono float waveform at the configured rate: a WAV path, WAV bytes, or samples.

    Errors are one line naming the file (or the input's position for bytes).
    """
    if isinstance(item, (str, Path)):
        path = Path(item)
        if not path.is_file():
            raise DataError(f"{path}: no such audio file")
        return torch.from_numpy(read_wav(path, features.sample_rate, features.max_seconds))
    if isinstance(item, (bytes, bytearray)):
        fd, tmp = tempfile.mkstemp(suffix=".wav")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(bytes(item))
            return torch.from_numpy(read_wav(tmp, features.sample_rate, features.max_seconds))
        except DataError as exc:
            raise DataError(str(exc).replace(tmp, f"input #{index + 1} (WAV bytes)")) from None
        finally:
            os.unlink(tmp)
    if isinstance(item, (np.ndarray, torch.Tensor)):
        wave = torch.as_tensor(item, dtype=torch.float32).flatten()
        if wave.numel() == 0:
            raise DataError(f"input #{index + 1}: empty waveform")
        return wave
    raise DataError(f"input #{index + 1}: cannot read {str(item)[:80]!r} as audio; give a WAV path or WAV bytes")


def audio_input_spec(features: FeatureConfig) -> dict[str, Any]:
    """What ``GET /models`` tells clients about a speech model's input (a WAV, resampled to this rate)."""
    return {"kind": "audio", "format": "wav", "sample_rate": features.sample_rate,
            "max_seconds": features.max_seconds}


def example_features(n_features: int, batch_size: int, frames: int) -> dict[str, torch.Tensor]:
    """ONNX example inputs of the speech networks: ``features`` (B, F, T), zero past each row's end, and ``lengths``
    (frames); the last row is shorter, so the masking path is traced and verified."""
    frames = max(frames, 8)
    lengths = torch.full((batch_size,), frames, dtype=torch.long)
    lengths[-1] = frames - 5
    feats = torch.randn(batch_size, n_features, frames, generator=torch.Generator().manual_seed(frames))
    valid = torch.arange(frames)[None, None, :] < lengths[:, None, None]
    return {"features": feats * valid, "lengths": lengths}


def check_split_sizes(parts: dict[str, list[SpeechRecord]]) -> None:
    if not parts["train"]:
        raise DataError("the speech data has no training utterances")


# ---------------------------------------------------------------------------------------------------------------
# Speech recognition


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


class SpeechRecognition(Task):
    """Transcribe speech with a CTC acoustic model over characters (spoken digits, commands, or your recordings)."""

    name = "speech_recognition"
    DataConfig = AsrDataConfig
    input_kind = "audio"

    def __init__(self, recipe: Recipe, state: dict[str, Any] | None = None):
        super().__init__(recipe, state)
        self.vocab = CharVocab(self.state_dict_.get("vocab", DEFAULT_CHARS))
        self._lexicon: Lexicon | None = None

    # ---- data -------------------------------------------------------------------------------------------------
    def datasets(self) -> Splits:
        cfg = self.data_cfg
        parts = load_records(cfg)
        check_split_sizes(parts)
        built, summary = {}, {"source": cfg.source}
        for split in SPLIT_NAMES:
            if not parts[split]:
                continue
            audio, kept, skipped = read_split(cfg, parts[split], split)
            tokens = [torch.tensor(self._encode(r), dtype=torch.long) for r in kept]
            built[split] = WaveformDataset(audio, tokens)
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
        summary.update(vocab_size=len(self.vocab), train_words=len(words))
        return Splits(built["train"], built.get("val"), built.get("test"), summary)

    def _encode(self, record: SpeechRecord) -> list[int]:
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

    # ---- model ------------------------------------------------------------------------------------------------
    def derived_model_kwargs(self) -> dict[str, Any]:
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
        feats, frames = speech_features(self.data_cfg, waves, wave_lengths, train=True)
        log_probs, out_lengths = self.log_probs(model, feats, frames)
        loss = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, target_lengths, blank=self.vocab.blank,
                          zero_infinity=True)
        return StepOutput(loss)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, Any]:
        total, count, refs, hyps, greedy = 0.0, 0, [], [], []
        beam = self.data_cfg.decoding == "beam"
        for waves, wave_lengths, targets, target_lengths in loader:
            feats, frames = speech_features(self.data_cfg, waves, wave_lengths)
            log_probs, out_lengths = self.log_probs(model, feats, frames)
            loss = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, target_lengths,
                              blank=self.vocab.blank, zero_infinity=True, reduction="sum")
            total, count = total + float(loss), count + len(waves)
            refs += [self.vocab.decode(t[:n].tolist()) for t, n in zip(targets, target_lengths, strict=True)]
            greedy += decode(log_probs, self.vocab, out_lengths)
            if beam:
                hyps += self.decode(log_probs, out_lengths)
        metrics: dict[str, Any] = {"loss": total / max(count, 1)}
        metrics.update(speech_metrics(refs, hyps if beam else greedy))
        if beam:
            metrics.update(speech_metrics(refs, greedy, prefix="greedy_"))
        metrics["examples"] = [{"reference": r, "hypothesis": h} for r, h in zip(refs[:5], (hyps or greedy)[:5])]
        return metrics

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """The configured decoding: greedy, or prefix beam search (with the lexicon when one is set)."""
        cfg = self.data_cfg
        return decode(log_probs, self.vocab, lengths, cfg.decoding, cfg.beam_width, self.lexicon)

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
        n_features = self.state_dict_.get("n_features", self.data_cfg.features.n_features)
        return example_features(n_features, batch_size, length)

    def export_dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"features": {0: "batch", 2: "frames"}, "lengths": {0: "batch"},
                "output": {0: "batch", 1: "output_frames"}}

    def preprocess(self, inputs: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        waves = [read_input_audio(item, self.data_cfg.features, i) for i, item in enumerate(inputs)]
        return speech_features(self.data_cfg, *pad_stack(waves))

    def forward(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> Any:
        return self.log_probs(model, *batch)

    def postprocess(self, outputs: Any) -> list[dict[str, Any]]:
        log_probs, lengths = outputs
        return [{"text": text} for text in self.decode(log_probs, lengths)]
