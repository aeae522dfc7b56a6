"""Speech data shared by the speech tasks: the data section of their recipes, the user's manifest indexed for reading
per item (``lazy_speech``) or the generated utterances held as waveforms, batching of variable-length audio,
training-time augmentation (speed, noise) and the audio front end (features, served WAV inputs)."""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
from pydantic import Field

from modelforge.core.config import StrictConfig
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
from modelforge.data.padding import collate_speech
from modelforge.data.split_config import SplitSeed, TestFraction, ValFraction

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
    # a manifest without a split column: shares only (a speaker split has no fixed count), hence *Fraction types
    val_size: ValFraction = 0.1
    test_size: TestFraction = 0.1
    split_seed: SplitSeed = 0  # by speaker when every line names one
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


def manifest_origin(parts: dict[str, list[SpeechRecord]]) -> str:
    """How ``load_records`` split a manifest, for the found line."""
    everything = [r for records in parts.values() for r in records]
    if not any(r.split for r in everything):
        return "split off by speaker" if all(r.voice for r in everything) else "split off at random"
    held = [split for split in ("val", "test") if parts.get(split) and not any(r.split == split for r in parts[split])]
    return "the manifest's split column" + (f" ({' and '.join(held)} split off its training rows)" if held else "")


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
        return _held_out_of_train({split: [r for r in records if (r.split or "train") == split] for split in
                                   SPLIT_NAMES}, cfg)
    return _cut(records, {"train": 1 - cfg.val_size - cfg.test_size, "val": cfg.val_size, "test": cfg.test_size},
                cfg.split_seed)


def _held_out_of_train(parts: dict[str, list[SpeechRecord]], cfg: SpeechDataConfig) -> dict[str, list[SpeechRecord]]:
    """``parts`` with each split the manifest's split column does not name (and whose share is set) held out of its
    training rows."""
    missing = {split: getattr(cfg, f"{split}_size") for split in ("val", "test") if not parts[split]}
    missing = {split: share for split, share in missing.items() if share > 0}
    if not missing or not parts["train"]:
        return parts
    return {**parts, **_cut(parts["train"], {"train": 1 - sum(missing.values()), **missing}, cfg.split_seed)}


def _cut(records: list[SpeechRecord], fractions: dict[str, float], seed: int) -> dict[str, list[SpeechRecord]]:
    """``records`` cut into the splits of ``fractions``: by speaker when every record names one (no voice heard in
    two splits), else at random."""
    from modelforge.data.splits import split_groups, split_indices

    if fractions["train"] <= 0:
        held = sum(share for split, share in fractions.items() if split != "train")
        raise DataError(f"data.val_size + data.test_size = {held:g} leaves no training data")
    if all(r.voice for r in records):
        parts = split_groups([r.voice for r in records], fractions, seed)
    else:
        parts = split_indices(len(records), fractions, seed)
    return {split: [records[i] for i in parts[split]] for split in fractions}


def read_split(
    cfg: SpeechDataConfig, records: list[SpeechRecord], split: str
) -> tuple[list[np.ndarray], list[SpeechRecord], list[str]]:
    """Decode a generated split's audio to int16 arrays; returns (audio, kept records, messages of skipped files).

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


def speech_split(
    cfg: SpeechDataConfig, records: list[SpeechRecord], split: str, target: Callable[[SpeechRecord], torch.Tensor]
) -> tuple[torch.utils.data.Dataset, list[SpeechRecord], list[str]]:
    """A split's dataset, the records it kept and the messages of skipped files; ``target`` maps a record to its
    label or token ids (from the manifest text only).

    The user's manifest is indexed from the WAV headers and decoded per item (``lazy_speech.WavFileDataset``), so
    no waveform is held in memory; the generated sets are small and held as 16-bit samples (``WaveformDataset``).
    Unreadable training files are skipped and counted (``data.on_error=skip``); in a held-out split they stop the run.
    """
    if cfg.source == "manifest":
        from modelforge.data.lazy_speech import WavFileDataset, index_recordings

        kept, lengths, skipped = index_recordings(records, cfg.features, cfg.on_error == "skip" and split == "train")
        if not kept:
            raise DataError(f"no readable audio among the {len(records)} {split} files of {cfg.path}")
        dataset = WavFileDataset([r.path for r in kept], [target(r) for r in kept], lengths, cfg.features.sample_rate,
                                 cfg.features.max_seconds)
        return dataset, kept, skipped
    audio, kept, skipped = read_split(cfg, records, split)
    return WaveformDataset(audio, [target(r) for r in kept]), kept, skipped


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
