import struct
import wave

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.fft import dct
from scipy.io import wavfile
from scipy.signal import resample_poly

from modelforge.core.errors import DataError
from modelforge.data.audio import (
    FeatureConfig,
    SpecAugmentConfig,
    add_noise,
    colored_noise,
    extract_features,
    log_mel_spectrogram,
    mel_filterbank,
    mfcc,
    power_spectrogram,
    read_wav,
    resample,
    spec_augment,
    speed_perturb,
    write_wav,
)

SR = 16000
CFG = FeatureConfig(normalize="none")


def tone(freq: float, seconds: float = 0.5, rate: int = SR, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)


def write_raw_wav(path, frames: bytes, channels: int, width: int, rate: int) -> None:
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(channels)
        wf.setsampwidth(width)
        wf.setframerate(rate)
        wf.writeframes(frames)


# ---- independent references: NumPy loops, written from the textbook definitions ----


def reference_stft_magnitude(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    padded = np.pad(x, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    starts = range(0, len(padded) - n_fft + 1, hop)
    return np.abs(np.fft.rfft(np.stack([padded[s : s + n_fft] * window for s in starts]), axis=1)).T


def reference_htk_filterbank(n_mels: int, n_fft: int, rate: int, f_min: float, f_max: float) -> np.ndarray:
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(f_min), mel(f_max), n_mels + 2))
    bank = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        low, center, high = edges[m], edges[m + 1], edges[m + 2]
        for k in range(n_fft // 2 + 1):
            f = k * rate / n_fft
            if low < f <= center:
                bank[k, m] = (f - low) / (center - low)
            elif center < f < high:
                bank[k, m] = (high - f) / (high - center)
    return bank


# ---- features ----


def test_stft_magnitude_matches_numpy_reference():
    x = tone(1000.0) + tone(3300.0, amplitude=0.2)
    ours = power_spectrogram(torch.tensor(x, dtype=torch.float32)[None], CFG)[0].sqrt().numpy()
    ref = reference_stft_magnitude(x, CFG.n_fft, CFG.hop_length)
    assert ours.shape == ref.shape == (201, len(x) // 160 + 1)
    assert np.abs(ours - ref).max() / ref.max() < 1e-4  # float32 STFT vs float64 reference, relative to the peak
    assert ours[:, 10].argmax() == round(1000 * CFG.n_fft / SR)  # the 1 kHz bin


@pytest.mark.parametrize("n_fft,f_min,f_max", [(400, 0.0, None), (512, 20.0, 7600.0), (401, 0.0, None)])
def test_mel_filterbank_matches_reference(n_fft, f_min, f_max):
    ours = mel_filterbank(40, n_fft, SR, f_min, f_max).numpy()
    ref = reference_htk_filterbank(40, n_fft, SR, f_min, f_max or SR / 2)
    assert np.abs(ours - ref).max() < 1e-4
    assert ours.max() <= 1.0 and (ours.sum(axis=0) > 0).all()  # peak-1 triangles, none empty


def test_log_mel_and_mfcc_match_reference_and_find_the_tone():
    x = tone(1000.0)
    log_mel = log_mel_spectrogram(torch.tensor(x), CFG).numpy()  # float64 in → float64 out
    power = reference_stft_magnitude(x, CFG.n_fft, CFG.hop_length) ** 2
    ref = np.log(power.T @ reference_htk_filterbank(80, 400, SR, 0.0, SR / 2) + 1e-6)
    assert log_mel.shape == (len(x) // 160 + 1, 80)
    assert np.abs(log_mel - ref).max() < 1e-4
    edges = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 82) / 2595) - 1)
    assert log_mel[10].argmax() == np.abs(edges[1:-1] - 1000).argmin()  # band centred nearest 1 kHz
    cfg = FeatureConfig(normalize="none", features="mfcc")
    ours = mfcc(torch.tensor(x), cfg).numpy()
    assert np.abs(ours - dct(ref, type=2, norm="ortho", axis=-1)[:, :13]).max() < 1e-4


def test_batched_features_normalised_and_masked_by_length():
    cfg = FeatureConfig()
    long, short = tone(440.0, 1.0), tone(880.0, 0.5)
    batch = torch.zeros(2, len(long), dtype=torch.float32)
    batch[0], batch[1, : len(short)] = torch.tensor(long), torch.tensor(short)
    feats, frames = extract_features(batch, cfg, torch.tensor([len(long), len(short)]))
    assert feats.shape == (2, 101, 80) and frames.tolist() == [101, 51]
    valid = feats[1, :51]
    assert valid.mean(0).abs().max() < 1e-4 and (valid.std(0, unbiased=False) - 1).abs().max() < 1e-2
    assert (feats[1, 51:] == 0).all()
    raw_batch, _ = extract_features(batch, CFG, torch.tensor([len(long), len(short)]))
    raw_alone, _ = extract_features(torch.tensor(short, dtype=torch.float32), CFG)
    # identical except the last frames, which see the batch's zero padding instead of reflection
    assert torch.allclose(raw_alone[0, :49], raw_batch[1, :49], atol=1e-4)


def test_feature_config_is_strict():
    with pytest.raises(ValidationError, match="extra"):
        FeatureConfig(n_mel=40)
    with pytest.raises(ValidationError, match="n_mfcc"):
        FeatureConfig(n_mels=10, n_mfcc=13)
    assert FeatureConfig(features="mfcc").n_features == 13


# ---- WAV I/O and bad input ----


def test_wav_round_trip(tmp_path):
    x = tone(440.0).astype(np.float32)
    write_wav(tmp_path / "a.wav", x, SR)
    with wave.open(str(tmp_path / "a.wav")) as wf:
        assert (wf.getnchannels(), wf.getsampwidth(), wf.getframerate(), wf.getnframes()) == (1, 2, SR, len(x))
    back = read_wav(tmp_path / "a.wav", SR)
    assert back.dtype == np.float32 and np.abs(back - x).max() <= 1 / 32767
    assert list(tmp_path.iterdir()) == [tmp_path / "a.wav"]  # no temp file left behind


def test_non_wav_file_names_the_file(tmp_path):
    path = tmp_path / "song.mp3.wav"
    path.write_bytes(b"ID3\x03\x00" + bytes(200))
    with pytest.raises(DataError, match=r"song\.mp3\.wav: not a WAV file.*ffmpeg") as err:
        read_wav(path)
    assert "\n" not in str(err.value)


def test_corrupt_and_truncated_wav(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(30))
    with pytest.raises(DataError, match=r"corrupt\.wav: .*corrupt"):
        read_wav(corrupt)
    write_wav(tmp_path / "whole.wav", tone(440.0), SR)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes((tmp_path / "whole.wav").read_bytes()[:30])
    with pytest.raises(DataError, match=r"truncated\.wav: "):
        read_wav(truncated)
    with pytest.raises(DataError, match=r"missing\.wav: cannot open"):
        read_wav(tmp_path / "missing.wav")


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = np.full(1000, 8000, dtype=np.int16), np.full(1000, -2000, dtype=np.int16)
    write_raw_wav(tmp_path / "stereo.wav", np.stack([left, right], 1).astype("<i2").tobytes(), 2, 2, SR)
    mono = read_wav(tmp_path / "stereo.wav", SR)
    assert mono.shape == (1000,) and np.allclose(mono, 3000 / 32768)


@pytest.mark.parametrize("kind", ["u8", "i24", "i32", "f32", "extensible"])
def test_other_sample_formats_are_converted(tmp_path, kind):
    x = tone(440.0, 0.1, amplitude=0.5)
    path = tmp_path / f"{kind}.wav"
    if kind == "u8":
        write_raw_wav(path, np.round(x * 128 + 128).astype(np.uint8).tobytes(), 1, 1, SR)
        tol = 1 / 128
    elif kind == "i24":
        ints = np.round(x * 2**23).astype("<i4")
        write_raw_wav(path, b"".join(v.to_bytes(3, "little", signed=True) for v in ints.tolist()), 1, 3, SR)
        tol = 1e-6
    elif kind == "i32":
        wavfile.write(path, SR, np.round(x * 2**31).astype(np.int32))
        tol = 1e-6
    elif kind == "f32":
        wavfile.write(path, SR, x.astype(np.float32))  # IEEE-float WAV, which the stdlib wave module rejects
        tol = 1e-7
    else:
        data = np.round(x * 32767).astype("<i2").tobytes()
        guid = struct.pack("<H", 1) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, SR, SR * 2, 2, 16, 22, 16, 4) + guid
        body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
        path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
        tol = 1 / 32767
    out = read_wav(path, SR)
    assert out.dtype == np.float32 and out.shape == x.shape and np.abs(out - x).max() <= tol


def test_empty_and_too_long_files_are_rejected(tmp_path):
    write_raw_wav(tmp_path / "empty.wav", b"", 1, 2, SR)
    with pytest.raises(DataError, match=r"empty\.wav: WAV holds no audio samples"):
        read_wav(tmp_path / "empty.wav")
    write_wav(tmp_path / "long.wav", tone(440.0, 2.0), SR)
    with pytest.raises(DataError, match=r"long\.wav: audio is 2\.0 s long, over the 1\.5 s limit.*max_seconds"):
        read_wav(tmp_path / "long.wav", SR, max_seconds=1.5)
    assert len(read_wav(tmp_path / "long.wav", SR, max_seconds=2.0)) == 2 * SR


def test_other_sample_rate_is_resampled(tmp_path):
    write_wav(tmp_path / "cd.wav", tone(440.0, 1.0, rate=22050), 22050)
    out = read_wav(tmp_path / "cd.wav", SR)
    assert len(out) == SR
    expected = tone(440.0, 1.0)
    assert np.abs(out - expected)[200:-200].max() < 1e-3  # away from the zero-padded edges


def test_resampler_is_accurate_and_anti_aliased():
    for rate in (8000, 44100, 48000):
        x = torch.tensor(tone(1000.0, 1.0, rate=rate))
        y = resample(x, rate, SR).numpy()
        ideal = tone(1000.0, 1.0)
        ref = resample_poly(x.numpy(), SR // np.gcd(rate, SR), rate // np.gcd(rate, SR))
        assert len(y) == len(ideal)
        # at least as close to the ideal tone as scipy's polyphase resampler
        assert np.abs(y - ideal)[300:-300].max() <= max(1e-4, np.abs(ref - ideal)[300:-300].max())
    above_nyquist = resample(torch.tensor(tone(10000.0, 1.0, rate=44100, amplitude=1.0)), 44100, SR)
    alias_rms = above_nyquist[300:-300].pow(2).mean().sqrt().item()
    assert 20 * np.log10(alias_rms / np.sqrt(0.5)) < -60  # a tone above the new Nyquist rate does not alias
    batch = resample(torch.stack([torch.tensor(tone(500.0, rate=22050))] * 3), 22050, SR)
    assert batch.shape == (3, SR // 2) and torch.equal(batch[0], batch[2])


# ---- augmentation ----


def test_spec_augment_is_seeded_and_bounded():
    cfg = SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=2, time_width=30, max_time_ratio=0.2)
    feats = torch.randn(3, 120, 80) + 5.0  # no true zeros, so zeros mark the masks
    lengths = torch.tensor([120, 80, 40])

    def masked(seed):
        return spec_augment(feats, cfg, lengths, torch.Generator().manual_seed(seed))

    a, b, c = masked(7), masked(7), masked(8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (feats > 0).all()  # the input was not modified
    zeros = a == 0
    assert zeros.any()
    for row, length in enumerate(lengths.tolist()):
        time_masked = zeros[row].all(dim=1)
        freq_masked = zeros[row].all(dim=0)
        assert not time_masked[length:].any()  # time masks stay inside the utterance
        assert time_masked.sum() <= 2 * min(30, int(0.2 * length))
        assert freq_masked.sum() <= 2 * 10
        assert (zeros[row] == (time_masked[:, None] | freq_masked[None, :])).all()  # only whole rows/columns


def test_noise_is_added_at_the_requested_snr():
    generator = torch.Generator().manual_seed(0)
    clean = torch.tensor(np.stack([tone(300.0), tone(1200.0, amplitude=0.05)]), dtype=torch.float32)
    lengths = torch.tensor([SR // 2, SR // 4])
    clean[1, SR // 4 :] = 0
    noisy = add_noise(clean, torch.tensor([5.0, 20.0]), lengths=lengths, generator=generator)
    for row, (snr, n) in enumerate(zip([5.0, 20.0], lengths.tolist(), strict=True)):
        signal, noise = clean[row, :n].double(), (noisy[row, :n] - clean[row, :n]).double()
        measured = 10 * torch.log10(signal.pow(2).mean() / noise.pow(2).mean())
        assert measured.item() == pytest.approx(snr, abs=0.01)
    assert (noisy[1, SR // 4 :] == 0).all()  # padding stays silent
    pink = colored_noise(SR // 2, "pink", generator)
    mixed = add_noise(clean[0], 10.0, noise=pink)
    measured = 10 * torch.log10(clean[0].double().pow(2).mean() / (mixed - clean[0]).double().pow(2).mean())
    assert measured.item() == pytest.approx(10.0, abs=0.01)
    spectrum = torch.fft.rfft(colored_noise(SR, "brown", generator)).abs().pow(2)
    assert spectrum[10:200].mean() > 100 * spectrum[4000:6000].mean()  # brown noise: power falls with frequency


def test_speed_perturbation_scales_duration_and_frequency():
    x = torch.tensor(tone(1000.0, 1.0))
    y, lengths = speed_perturb(x[None], 1.1, torch.tensor([SR]))
    assert y.shape[-1] == lengths.item() and abs(y.shape[-1] - SR / 1.1) <= 1
    spectrum = np.abs(np.fft.rfft(y[0].numpy()))
    assert abs(spectrum.argmax() * SR / y.shape[-1] - 1100.0) < 2.0
