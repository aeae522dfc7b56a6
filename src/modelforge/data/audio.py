"""Audio for speech tasks: WAV I/O, resampling, log-mel/MFCC features with ``torch.stft``, and augmentation.

Conventions: a waveform is float32 in [-1, 1], mono, shape ``(N,)``; a batch is zero-padded ``(B, N)`` with a
``lengths`` tensor of valid samples. Features come out as ``(B, T, F)`` (time-major, what a CTC model consumes).

- WAV reading uses the stdlib ``wave`` module (plus a small chunk reader for IEEE-float and WAVE_FORMAT_EXTENSIBLE
  files, which ``wave`` on Python < 3.12 rejects). 8/16/24/32-bit PCM and 32/64-bit float are converted; several
  channels are averaged to mono; any rate is resampled to the configured one.
- Resampling is one implementation: a Kaiser-windowed sinc, applied as a polyphase filter bank with ``conv1d``
  (stride = the decimation factor). It anti-aliases when downsampling, works on batches, and also does speed
  perturbation. It runs on whatever device the tensor lives on.
- The mel filterbank uses the **HTK mel scale** (``2595 * log10(1 + f / 700)``) with triangles evaluated at the
  exact FFT bin frequencies, peak 1 and no area normalisation (Kaldi/HTK convention, torchaudio's default).
  Log-mel is the natural log of mel power plus ``log_floor``; MFCC is the orthonormal DCT-II of the log-mel.
"""

from __future__ import annotations

import functools
import math
import os
import struct
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal, Optional, Union

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelforge.core.errors import DataError

ArrayLike = Union[np.ndarray, torch.Tensor]
CONVERT_HINT = "convert it with `ffmpeg -i INPUT -ac 1 -ar 16000 -c:a pcm_s16le OUTPUT.wav`"
NOISE_COLORS = ("white", "pink", "brown")


class FeatureConfig(BaseModel):
    """The audio front end: how a WAV becomes model input. Stored with a trained model so serving matches training."""

    model_config = ConfigDict(extra="forbid")

    sample_rate: int = Field(16000, ge=4000, description="every input is resampled to this rate (Hz)")
    max_seconds: float = Field(30.0, gt=0, description="longer inputs are rejected with an error naming the file")
    n_fft: int = Field(400, ge=16, description="FFT size in samples (400 = 25 ms at 16 kHz)")
    win_length: Optional[int] = Field(None, ge=1, description="Hann window length; None = n_fft")
    hop_length: int = Field(160, ge=1, description="frame shift in samples (160 = 10 ms at 16 kHz)")
    n_mels: int = Field(80, ge=1, description="mel bands (HTK mel scale)")
    f_min: float = Field(0.0, ge=0)
    f_max: Optional[float] = Field(None, gt=0, description="upper edge of the filterbank; None = sample_rate / 2")
    n_mfcc: int = Field(13, ge=1, description="cepstral coefficients kept when features='mfcc'")
    features: Literal["log_mel", "mfcc"] = "log_mel"
    log_floor: float = Field(1e-6, gt=0, description="added to mel power before the log, so silence stays finite")
    normalize: Literal["none", "utterance"] = Field(
        "utterance", description="'utterance' = zero mean, unit variance per feature over each utterance's frames"
    )

    @model_validator(mode="after")
    def _check(self) -> FeatureConfig:
        if self.win_length is not None and self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} must be <= n_fft {self.n_fft}")
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc {self.n_mfcc} must be <= n_mels {self.n_mels}")
        top = self.f_max if self.f_max is not None else self.sample_rate / 2
        if top > self.sample_rate / 2 or top <= self.f_min:
            raise ValueError(f"need f_min < f_max <= sample_rate/2, got f_min={self.f_min}, f_max={top}")
        return self

    @property
    def n_features(self) -> int:
        return self.n_mfcc if self.features == "mfcc" else self.n_mels


class SpecAugmentConfig(BaseModel):
    """SpecAugment masking (Park et al. 2019), without time warping."""

    model_config = ConfigDict(extra="forbid")

    freq_masks: int = Field(2, ge=0)
    freq_width: int = Field(15, ge=0, description="max bands per frequency mask")
    time_masks: int = Field(2, ge=0)
    time_width: int = Field(40, ge=0, description="max frames per time mask")
    max_time_ratio: float = Field(0.2, ge=0, le=1, description="a time mask covers at most this share of frames")
    mask_value: float = Field(0.0, description="0 = the mean of utterance-normalised features")


# ---------------------------------------------------------------------------------------------------------------
# WAV reading and writing


def read_wav(path: str | Path, sample_rate: int = 16000, max_seconds: float | None = None) -> np.ndarray:
    """A WAV file → mono float32 samples in [-1, 1] at ``sample_rate``.

    Raises DataError naming the file for a non-WAV, corrupt, empty or too long file.
    """
    path = Path(path)
    samples, rate = _read_wav_frames(path, max_seconds)
    mono = samples.mean(axis=1, dtype=np.float64).astype(np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise DataError(f"{path}: WAV holds NaN or infinite samples; {CONVERT_HINT}")
    if rate != sample_rate:
        mono = resample(torch.from_numpy(np.ascontiguousarray(mono)), *_resample_pair(rate, sample_rate)).numpy()
    return mono


SAMPLE_RATES = (1000, 384_000)  # Hz: what a WAV header may declare; outside is a corrupt or hostile file
MAX_FILTER_PHASES = 1_000_000  # up × down phases of the resampling filter bank (its size grows with both)


def _resample_pair(rate: int, target: int) -> tuple[int, int]:
    """``(rate, target)``, or the nearest ratio whose filter bank stays small: an odd rate (8001 Hz → 16 kHz is
    16000 × 8001 phases) would need tens of GB. The pitch error is then under 1%, for a file that is odd anyway."""
    ratio = Fraction(int(target), int(rate))
    for limit in (None, 1000, 300, 100, 30, 10):
        near = ratio if limit is None else ratio.limit_denominator(limit)
        if near > 0 and near.numerator * near.denominator <= MAX_FILTER_PHASES:
            return near.denominator, near.numerator
    return rate, target  # unreachable for rates within SAMPLE_RATES


def write_wav(path: str | Path, waveform: ArrayLike, sample_rate: int) -> None:
    """Mono float samples in [-1, 1] (clipped) → 16-bit PCM WAV, written to a temp file and renamed into place."""
    path = Path(path)
    data = waveform.detach().cpu().numpy() if isinstance(waveform, torch.Tensor) else np.asarray(waveform)
    if data.ndim != 1:
        raise DataError(f"{path}: write_wav takes a 1-D mono waveform, got shape {tuple(data.shape)}")
    if data.dtype != np.int16:
        data = np.clip(np.rint(data.astype(np.float64) * 32767.0), -32768, 32767).astype(np.int16)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with wave.open(tmp, "wb") as wf:
            wf.setnchannels(1)
            wf.setsampwidth(2)
            wf.setframerate(int(sample_rate))
            wf.writeframes(data.astype("<i2").tobytes())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a cache may be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_wav_frames(path: Path, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 and the file's rate; the duration limit is checked before all data is read."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError as exc:
        raise DataError(f"{path}: cannot open audio file ({exc.strerror or exc})") from None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise DataError(f"{path}: not a WAV file (no RIFF/WAVE header); {CONVERT_HINT}")
    try:
        with wave.open(str(path), "rb") as wf:
            channels, width, rate = wf.getnchannels(), wf.getsampwidth(), wf.getframerate()
            limit, declared = _frame_limit(path, rate, max_seconds), wf.getnframes()
            raw = wf.readframes(limit + 1 if limit is not None else declared)
        fmt = "pcm"  # ``wave`` only opens integer PCM
    except wave.Error as exc:
        if "unknown format" not in str(exc):
            raise DataError(f"{path}: corrupt WAV file ({exc}); {CONVERT_HINT}") from None
        # IEEE float (format 3) and WAVE_FORMAT_EXTENSIBLE: read the chunks ourselves.
        channels, width, rate, fmt, raw = _read_wav_chunks(path)
        limit, declared = _frame_limit(path, rate, max_seconds), len(raw) // max(1, width * channels)
    except (EOFError, struct.error) as exc:
        raise DataError(f"{path}: truncated or corrupt WAV header ({exc or 'unexpected end of file'}); "
                        f"{CONVERT_HINT}") from None
    if channels < 1 or not SAMPLE_RATES[0] <= rate <= SAMPLE_RATES[1]:
        raise DataError(f"{path}: corrupt WAV header ({channels} channels at {rate} Hz; rates from "
                        f"{SAMPLE_RATES[0]} to {SAMPLE_RATES[1]} Hz are read); {CONVERT_HINT}")
    samples = _decode_samples(path, raw, width, fmt)
    frames = samples[: (len(samples) // channels) * channels].reshape(-1, channels)
    if len(frames) == 0:
        raise DataError(f"{path}: WAV holds no audio samples (0 frames); record or export it again")
    if limit is not None and len(frames) > limit:
        raise DataError(
            f"{path}: audio is {max(declared, len(frames)) / rate:.1f} s long, over the {max_seconds:g} s limit; "
            f"trim or split it, or raise max_seconds"
        )
    return frames, rate


def _frame_limit(path: Path, rate: int, max_seconds: float | None) -> int | None:
    if rate < 1:
        raise DataError(f"{path}: corrupt WAV header (sample rate {rate}); {CONVERT_HINT}")
    return None if max_seconds is None else int(math.floor(max_seconds * rate))


def _read_wav_chunks(path: Path) -> tuple[int, int, int, str, bytes]:
    """Minimal RIFF reader for what ``wave`` rejects: returns channels, bytes per sample, rate, 'pcm'|'float', data."""
    blob = path.read_bytes()
    pos, fmt_chunk, data = 12, None, None
    while pos + 8 <= len(blob):
        chunk_id, size = blob[pos : pos + 4], struct.unpack("<I", blob[pos + 4 : pos + 8])[0]
        body = blob[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            fmt_chunk = body
        elif chunk_id == b"data":
            data = body  # a short body (truncated file) is accepted: the whole frames it holds are used
        pos += 8 + size + (size & 1)  # chunks are word aligned
    if fmt_chunk is None or len(fmt_chunk) < 16 or data is None:
        raise DataError(f"{path}: corrupt WAV file (missing fmt or data chunk); {CONVERT_HINT}")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt_chunk[:16])
    if tag == 0xFFFE and len(fmt_chunk) >= 26:
        tag = struct.unpack("<H", fmt_chunk[24:26])[0]  # the sub-format GUID starts with the real format tag
    if tag not in (1, 3):
        raise DataError(f"{path}: unsupported WAV encoding (format tag {tag:#x}, e.g. compressed); {CONVERT_HINT}")
    return channels, bits // 8, rate, "float" if tag == 3 else "pcm", data


@dataclass(frozen=True)
class WavHeader:
    """What a WAV header says, read without touching the samples: enough to index a folder of recordings."""

    channels: int
    sample_width: int  # bytes per sample
    rate: int  # Hz
    frames: int  # whole frames the data chunk holds (capped at what the file really contains)
    encoding: Literal["pcm", "float"]

    def length_at(self, sample_rate: int) -> int:
        """Samples ``read_wav(path, sample_rate)`` returns for this file (its resampled length), without decoding."""
        if self.rate == sample_rate:
            return self.frames
        orig, new = _resample_pair(self.rate, sample_rate)
        g = math.gcd(orig, new)
        up, down = new // g, orig // g
        return self.frames if up == down else -(-self.frames * up // down)


WAV_FORMATS = {"pcm": (1, 2, 3, 4), "float": (4, 8)}  # bytes per sample ``_decode_samples`` converts


def read_wav_header(path: str | Path, max_seconds: float | None = None) -> WavHeader:
    """The RIFF chunks of a WAV (format and data size only, the samples are skipped with a seek): raises the
    DataError ``read_wav`` would for a non-WAV, a corrupt or unsupported header, no samples or a file over
    ``max_seconds``. A file that passes can still fail when decoded (e.g. NaN samples), with a one-line error too."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                raise DataError(f"{path}: not a WAV file (no RIFF/WAVE header); {CONVERT_HINT}")
            fmt_chunk, data_size, pos = None, None, 12
            while data_size is None and pos + 8 <= size:
                fh.seek(pos)
                chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
                if chunk_id == b"fmt ":
                    fmt_chunk = fh.read(min(chunk_size, 40))
                elif chunk_id == b"data" and fmt_chunk is not None:
                    data_size = min(chunk_size, size - pos - 8)  # a truncated file: the frames it really holds
                pos += 8 + chunk_size + (chunk_size & 1)  # chunks are word aligned
    except OSError as exc:
        raise DataError(f"{path}: cannot open audio file ({exc.strerror or exc})") from None
    if fmt_chunk is None or len(fmt_chunk) < 16 or data_size is None:
        raise DataError(f"{path}: corrupt WAV file (missing fmt or data chunk); {CONVERT_HINT}")
    header = _header_of(path, fmt_chunk, data_size)
    limit = _frame_limit(path, header.rate, max_seconds)
    if limit is not None and header.frames > limit:
        raise DataError(f"{path}: audio is {header.frames / header.rate:.1f} s long, over the {max_seconds:g} s "
                        f"limit; trim or split it, or raise max_seconds")
    return header


def _header_of(path: Path, fmt_chunk: bytes, data_size: int) -> WavHeader:
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt_chunk[:16])
    if tag == 0xFFFE and len(fmt_chunk) >= 26:
        tag = struct.unpack("<H", fmt_chunk[24:26])[0]  # the sub-format GUID starts with the real format tag
    if tag not in (1, 3):
        raise DataError(f"{path}: unsupported WAV encoding (format tag {tag:#x}, e.g. compressed); {CONVERT_HINT}")
    if channels < 1 or not SAMPLE_RATES[0] <= rate <= SAMPLE_RATES[1]:
        raise DataError(f"{path}: corrupt WAV header ({channels} channels at {rate} Hz; rates from "
                        f"{SAMPLE_RATES[0]} to {SAMPLE_RATES[1]} Hz are read); {CONVERT_HINT}")
    encoding = "float" if tag == 3 else "pcm"
    width = (bits + 7) // 8
    if width not in WAV_FORMATS[encoding]:
        raise DataError(f"{path}: unsupported WAV sample format ({8 * width}-bit {encoding}); {CONVERT_HINT}")
    frames = data_size // (width * channels)
    if frames == 0:
        raise DataError(f"{path}: WAV holds no audio samples (0 frames); record or export it again")
    return WavHeader(channels, width, rate, frames, encoding)


def _decode_samples(path: Path, raw: bytes, width: int, fmt: str) -> np.ndarray:
    raw = raw[: len(raw) - len(raw) % width] if width else raw
    if fmt == "float" and width in (4, 8):
        return np.frombuffer(raw, dtype=f"<f{width}").astype(np.float32)
    if fmt == "pcm" and width == 1:  # 8-bit WAV is unsigned with 128 as zero
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if fmt == "pcm" and width in (2, 4):
        return (np.frombuffer(raw, dtype=f"<i{width}").astype(np.float64) / float(2 ** (8 * width - 1))).astype(
            np.float32
        )
    if fmt == "pcm" and width == 3:  # 24-bit: place the 3 bytes high in an int32, then shift back with sign
        triples = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        padded = np.zeros((len(triples), 4), dtype=np.uint8)
        padded[:, 1:] = triples
        return ((padded.view("<i4")[:, 0] >> 8).astype(np.float64) / float(2**23)).astype(np.float32)
    raise DataError(f"{path}: unsupported WAV sample format ({8 * width}-bit {fmt}); {CONVERT_HINT}")


# ---------------------------------------------------------------------------------------------------------------
# Resampling and speed perturbation


@functools.lru_cache(maxsize=16)
def _sinc_bank(up: int, down: int, zeros: int, rolloff: float, beta: float) -> tuple[torch.Tensor, int]:
    """Polyphase filter bank (up, 1, K) and the left padding; row p interpolates output phase p of every ``up``.

    Output sample q*up + p sits at input position q*down + p*down/up; tap i of row p weighs input q*down + i - pad.
    """
    cutoff = 0.5 * min(1.0, up / down) * rolloff  # cycles per input sample: below both Nyquist rates
    half_width = zeros / (2.0 * cutoff)  # input samples either side covered by ``zeros`` sinc zero crossings
    pad = math.ceil(half_width)
    taps = torch.arange(down + 2 * pad + 1, dtype=torch.float64) - pad
    centers = torch.arange(up, dtype=torch.float64)[:, None] * down / up
    tau = centers - taps[None, :]
    kaiser_arg = beta * torch.sqrt(torch.clamp(1 - (tau / half_width) ** 2, min=0.0))
    window = torch.special.i0(kaiser_arg) / torch.special.i0(torch.tensor(beta, dtype=torch.float64))
    window = torch.where(tau.abs() <= half_width, window, torch.zeros_like(window))
    bank = 2 * cutoff * torch.sinc(2 * cutoff * tau) * window  # unit DC gain for every phase
    return bank.to(torch.float32)[:, None, :], pad


def resample(
    waveforms: torch.Tensor,
    orig_rate: int,
    new_rate: int,
    *,
    zeros: int = 16,
    rolloff: float = 0.945,
    beta: float = 8.6,
) -> torch.Tensor:
    """Resample ``(..., N)`` from ``orig_rate`` to ``new_rate`` (any integers) with an anti-aliasing sinc filter.

    ``rolloff`` puts the cut-off at that share of the lower Nyquist rate; ``beta`` (Kaiser) ≈ 8.6 gives about
    -90 dB side lobes. Output length is ceil(N * new_rate / orig_rate). Edges are zero padded.
    """
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} → {new_rate}")
    g = math.gcd(int(orig_rate), int(new_rate))
    up, down = int(new_rate) // g, int(orig_rate) // g
    if up == down:
        return waveforms.clone()
    lead, n = waveforms.shape[:-1], waveforms.shape[-1]
    flat = waveforms.reshape(-1, 1, n)
    bank, pad = _sinc_bank(up, down, zeros, rolloff, beta)
    bank = bank.to(device=flat.device, dtype=flat.dtype if flat.is_floating_point() else torch.float32)
    n_out = -(-n * up // down)
    steps = -(-n_out // up)
    right = max(0, (steps - 1) * down + bank.shape[-1] - (n + pad))
    padded = torch.nn.functional.pad(flat.to(bank.dtype), (pad, right))
    out = torch.nn.functional.conv1d(padded, bank, stride=down)  # (B, up, steps)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)[:, :n_out]
    return out.reshape(*lead, n_out)


def resampled_lengths(lengths: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    g = math.gcd(int(orig_rate), int(new_rate))
    up, down = int(new_rate) // g, int(orig_rate) // g
    return torch.div(lengths * up + down - 1, down, rounding_mode="floor")


def speed_perturb(
    waveforms: torch.Tensor, factor: float, lengths: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Play ``factor`` times faster (tempo and pitch both change, as in Kaldi's speed perturbation).

    Implemented as resampling from rate ``factor`` to rate 1 (the factor is taken as a fraction with denominator
    ≤ 100), so the result has about N / factor samples. Returns the waveforms and, if given, the new lengths.
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    frac = Fraction(factor).limit_denominator(100)
    out = resample(waveforms, frac.numerator, frac.denominator)
    new_lengths = None if lengths is None else resampled_lengths(lengths, frac.numerator, frac.denominator)
    return out, new_lengths


# ---------------------------------------------------------------------------------------------------------------
# Features


def hz_to_mel(hz: ArrayLike | float) -> ArrayLike:
    """HTK mel scale (tensors stay tensors; anything else goes through NumPy)."""
    if isinstance(hz, torch.Tensor):
        return 2595.0 * torch.log10(1.0 + hz / 700.0)
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: ArrayLike | float) -> ArrayLike:
    mel = mel if isinstance(mel, torch.Tensor) else np.asarray(mel, dtype=np.float64)
    return 700.0 * ((10.0 ** (mel / 2595.0)) - 1.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(
    n_mels: int, n_fft: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) float64 triangles on the HTK mel scale, peak 1, no area normalisation."""
    f_max = sample_rate / 2 if f_max is None else f_max
    bin_hz = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft  # rfft bins, odd n_fft too
    mel_edges = torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64)
    hz_edges = mel_to_hz(mel_edges)
    lower, center, upper = hz_edges[:-2], hz_edges[1:-1], hz_edges[2:]
    rising = (bin_hz[:, None] - lower[None, :]) / (center - lower)[None, :]
    falling = (upper[None, :] - bin_hz[:, None]) / (upper - center)[None, :]
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


@functools.lru_cache(maxsize=8)
def dct_matrix(n_mels: int, n_mfcc: int) -> torch.Tensor:
    """(n_mels, n_mfcc) float64 orthonormal DCT-II: ``log_mel @ dct_matrix`` = scipy.fft.dct(..., norm='ortho')."""
    n = torch.arange(n_mels, dtype=torch.float64)
    k = torch.arange(n_mfcc, dtype=torch.float64)
    basis = torch.cos(math.pi / n_mels * (n[:, None] + 0.5) * k[None, :]) * math.sqrt(2.0 / n_mels)
    basis[:, 0] /= math.sqrt(2.0)
    return basis


def frame_lengths(lengths: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Valid STFT frames per utterance for ``center=True`` framing."""
    return torch.div(lengths, hop_length, rounding_mode="floor") + 1


def power_spectrogram(waveforms: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """``(B, N)`` → ``(B, n_fft // 2 + 1, T)`` |STFT|², periodic Hann window, centred frames with reflect padding."""
    win_length = cfg.win_length or cfg.n_fft
    window = torch.hann_window(win_length, periodic=True, dtype=waveforms.dtype, device=waveforms.device)
    spec = torch.stft(
        waveforms, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=win_length, window=window,
        center=True, pad_mode="reflect", return_complex=True,
    )
    return spec.real.square() + spec.imag.square()


def log_mel_spectrogram(waveforms: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """``(B, N)`` or ``(N,)`` → ``(B, T, n_mels)`` (or ``(T, n_mels)``) natural-log mel power, not normalised."""
    single = waveforms.dim() == 1
    batch = waveforms[None] if single else waveforms
    if batch.shape[-1] <= cfg.n_fft // 2:  # reflect padding needs more samples than half a window
        batch = torch.nn.functional.pad(batch, (0, cfg.n_fft // 2 + 1 - batch.shape[-1]))
    power = power_spectrogram(batch, cfg)
    fbank = mel_filterbank(cfg.n_mels, cfg.n_fft, cfg.sample_rate, cfg.f_min, cfg.f_max)
    mel = torch.matmul(power.transpose(1, 2), fbank.to(device=power.device, dtype=power.dtype))
    out = torch.log(mel + cfg.log_floor)
    return out[0] if single else out


def mfcc(waveforms: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """``(B, N)`` → ``(B, T, n_mfcc)``: orthonormal DCT-II of the log-mel spectrogram, first ``n_mfcc`` kept."""
    log_mel = log_mel_spectrogram(waveforms, cfg)
    basis = dct_matrix(cfg.n_mels, cfg.n_mfcc).to(device=log_mel.device, dtype=log_mel.dtype)
    return torch.matmul(log_mel, basis)


def normalize_utterances(features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Zero mean, unit variance per feature dimension over each utterance's valid frames; padding set to 0."""
    batch, steps, _ = features.shape
    if lengths is None:
        lengths = torch.full((batch,), steps, dtype=torch.long, device=features.device)
    valid = (torch.arange(steps, device=features.device)[None, :] < lengths[:, None]).unsqueeze(-1)
    count = valid.sum(dim=1, keepdim=True).clamp(min=1).to(features.dtype)
    mean = (features * valid).sum(dim=1, keepdim=True) / count
    var = (((features - mean) * valid) ** 2).sum(dim=1, keepdim=True) / count
    return torch.where(valid, (features - mean) / torch.sqrt(var + 1e-5), torch.zeros_like(features))


def extract_features(
    waveforms: torch.Tensor, cfg: FeatureConfig, lengths: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The configured front end for a padded batch: ``(B, N)`` → features ``(B, T, F)`` and valid frame counts.

    Frames past an utterance's length see the batch's zero padding, which is why they are masked out of the
    normalisation and zeroed; an utterance's last frame differs slightly from the unpadded result (zero instead of
    reflect padding at its end).
    """
    if waveforms.dim() == 1:
        waveforms = waveforms[None]
    if lengths is None:
        lengths = torch.full((waveforms.shape[0],), waveforms.shape[-1], dtype=torch.long)
    feats = mfcc(waveforms, cfg) if cfg.features == "mfcc" else log_mel_spectrogram(waveforms, cfg)
    n_frames = torch.clamp(frame_lengths(lengths.to(feats.device), cfg.hop_length), max=feats.shape[1])
    if cfg.normalize == "utterance":
        feats = normalize_utterances(feats, n_frames)
    return feats, n_frames


# ---------------------------------------------------------------------------------------------------------------
# Augmentation


def _spans(generator: torch.Generator | None, count: int, max_width: torch.Tensor, extent: torch.Tensor, size: int):
    """Boolean ``(B, size)``: the union of ``count`` random spans per row, each ≤ ``max_width`` inside ``extent``."""
    batch = extent.shape[0]
    widths = torch.floor(torch.rand(batch, count, generator=generator) * (max_width[:, None] + 1))
    room = torch.clamp(extent[:, None] - widths + 1, min=1)
    starts = torch.floor(torch.rand(batch, count, generator=generator) * room)
    pos = torch.arange(size)[None, None, :]
    inside = (pos >= starts[..., None]) & (pos < (starts + widths)[..., None])
    return inside.any(dim=1)


def spec_augment(
    features: torch.Tensor,
    cfg: SpecAugmentConfig,
    lengths: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Frequency and time masking of ``(B, T, F)`` features; a seeded ``generator`` makes the masks reproducible.

    Time masks stay within each utterance's valid frames and cover at most ``max_time_ratio`` of them each.
    Returns a new tensor; the input is unchanged.
    """
    batch, steps, bands = features.shape
    lengths = torch.full((batch,), steps) if lengths is None else lengths.detach().cpu()
    lengths = lengths.to(torch.float64)
    freq_extent = torch.full((batch,), float(bands), dtype=torch.float64)
    freq = _spans(generator, cfg.freq_masks, torch.full_like(freq_extent, min(cfg.freq_width, bands)), freq_extent,
                  bands)
    time_cap = torch.clamp(torch.floor(lengths * cfg.max_time_ratio), max=cfg.time_width)
    time = _spans(generator, cfg.time_masks, time_cap, lengths, steps)
    mask = (freq[:, None, :] | time[:, :, None]).to(features.device)
    return features.masked_fill(mask, cfg.mask_value)


def _as_row_tensor(value: float | Sequence[float] | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    out = torch.as_tensor(value, dtype=torch.float64)
    return (out.expand(batch) if out.dim() == 0 else out.reshape(batch)).to(like.device)


def add_noise(
    waveforms: torch.Tensor,
    snr_db: float | Sequence[float] | torch.Tensor,
    noise: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mix ``noise`` (default: white Gaussian) into ``(B, N)`` or ``(N,)`` waveforms at ``snr_db`` (scalar or per row).

    Powers are measured over each row's valid samples, so the SNR is exact for the noise actually added; padding
    stays zero. A silent row gets no noise (its SNR is undefined).
    """
    single = waveforms.dim() == 1
    x = waveforms[None] if single else waveforms
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device)
    noise = (noise[None] if noise.dim() == 1 else noise).to(device=x.device, dtype=torch.float64)
    if noise.shape != x.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} does not match waveforms {tuple(x.shape)}")
    batch, n = x.shape
    valid = torch.ones_like(noise, dtype=torch.bool) if lengths is None else (
        torch.arange(n, device=x.device)[None, :] < lengths.to(x.device)[:, None]
    )
    noise = noise * valid
    count = valid.sum(dim=1).clamp(min=1)
    signal_power = (x.double().square() * valid).sum(dim=1) / count
    noise_power = noise.square().sum(dim=1) / count
    snr = _as_row_tensor(snr_db, batch, x)
    scale = torch.sqrt(signal_power / (noise_power.clamp(min=1e-20) * 10.0 ** (snr / 10.0)))
    out = (x.double() + noise * scale[:, None]).to(x.dtype)
    return out[0] if single else out


def colored_noise(n: int, color: str = "white", generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples of unit-RMS noise with power ∝ 1/f^α: white α=0, pink α=1, brown α=2 (shaped in frequency)."""
    if color not in NOISE_COLORS:
        raise ValueError(f"noise color must be one of {NOISE_COLORS}, got {color!r}")
    white = torch.randn(n, generator=generator, dtype=torch.float64)
    if color != "white" and n > 2:
        alpha = 1.0 if color == "pink" else 2.0
        spectrum = torch.fft.rfft(white)
        freqs = torch.fft.rfftfreq(n, dtype=torch.float64)
        freqs[0] = freqs[1]  # no infinite gain at DC
        white = torch.fft.irfft(spectrum / freqs ** (alpha / 2), n=n)
        white = white - white.mean()
    return white / white.square().mean().sqrt().clamp(min=1e-12)


def add_background_noise(
    waveform: torch.Tensor,
    generator: torch.Generator | None = None,
    snr_db: tuple[float, float] = (10.0, 30.0),
    colors: Sequence[str] = NOISE_COLORS,
) -> torch.Tensor:
    """One utterance ``(N,)`` plus noise of a random colour at an SNR drawn uniformly from ``snr_db``."""
    pick = int(torch.randint(len(colors), (1,), generator=generator))
    snr = snr_db[0] + (snr_db[1] - snr_db[0]) * float(torch.rand(1, generator=generator, dtype=torch.float64))
    noise = colored_noise(waveform.shape[-1], colors[pick], generator)
    return add_noise(waveform, snr, noise=noise)
