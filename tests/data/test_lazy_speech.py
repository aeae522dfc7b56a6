"""The user's recordings read lazily: the index reads WAV headers only (lengths exact without decoding), waveforms are
decoded per item (in workers or not), the split objects hold no audio, and bad files are skipped or stop the run
with one line naming the file."""

import json
import logging
import struct

import numpy as np
import pytest
import torch

from modelforge.core.errors import DataError
from modelforge.data import lazy_speech, speech
from modelforge.data.audio import FeatureConfig, read_wav, read_wav_header, write_wav
from modelforge.data.formats.speech_manifest import read_speech_manifest
from modelforge.data.lazy_speech import WavFileDataset
from modelforge.tasks import get_task
from modelforge.tasks.recipes import load_recipe
from modelforge.training.batches import epoch_order, iterate


def _float_wav(path, samples, rate, channels=1, bits=32):
    """An IEEE-float WAV (format 3), which the stdlib ``wave`` module does not write."""
    data = np.asarray(samples, dtype=np.float32 if bits == 32 else np.float64).tobytes()
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 3, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def _tone(seconds, rate, pitch=300.0):
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32)


def _speech_folder(root, count=12, texts=("yes", "no", "stop")):
    root.mkdir(parents=True)
    lines = []
    for i in range(count):
        text = texts[i % len(texts)]
        write_wav(root / f"{i}.wav", _tone(0.2 + 0.03 * i, 16000, 250 + 80 * texts.index(text)), 16000)
        lines.append(f"{i}.wav\t{text}")
    (root / "transcripts.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_header_lengths_equal_the_decoded_lengths_without_reading_samples(tmp_path):
    write_wav(tmp_path / "a.wav", _tone(0.31, 16000), 16000)
    write_wav(tmp_path / "b.wav", _tone(0.27, 8000), 8000)  # upsampled
    _float_wav(tmp_path / "c.wav", np.repeat(_tone(0.2, 44100), 2), 44100, channels=2)  # stereo float, downsampled
    _float_wav(tmp_path / "d.wav", _tone(0.1, 22050), 22050, bits=64)
    for name in "abcd":
        assert read_wav_header(tmp_path / f"{name}.wav").length_at(16000) == len(read_wav(tmp_path / f"{name}.wav"))
    # NaN samples fail only when decoded: the header check never looked at them
    _float_wav(tmp_path / "nan.wav", np.full(800, np.nan), 16000)
    assert read_wav_header(tmp_path / "nan.wav").frames == 800
    with pytest.raises(DataError, match="NaN"):
        read_wav(tmp_path / "nan.wav")


def test_header_check_raises_what_decoding_would(tmp_path):
    (tmp_path / "text.wav").write_text("not audio at all")
    write_wav(tmp_path / "long.wav", _tone(2.5, 8000), 8000)
    _float_wav(tmp_path / "empty.wav", np.zeros(0), 16000)
    compressed = bytearray(_float_wav(tmp_path / "adpcm.wav", np.zeros(64), 16000).read_bytes())
    compressed[20:22] = struct.pack("<H", 2)  # format tag 2: MS ADPCM
    (tmp_path / "adpcm.wav").write_bytes(bytes(compressed))
    for name in ("text", "long", "empty", "adpcm"):
        path = tmp_path / f"{name}.wav"
        with pytest.raises(DataError) as decoded:
            read_wav(path, 16000, max_seconds=2.0)
        with pytest.raises(DataError) as header:
            read_wav_header(path, max_seconds=2.0)
        assert str(header.value) == str(decoded.value) and str(path) in str(header.value)


def _datasets(root, recipe="audio-classifier", extra=()):
    recipe = load_recipe(recipe, [f"data.path={root}", "data.val_size=0.25", "data.test_size=0.25", *extra])
    task = get_task(recipe.task)(recipe)
    return task, task.datasets()


@pytest.mark.parametrize("recipe", ["audio-classifier", "speech-recognizer"])
def test_splits_hold_no_waveforms_and_decode_per_item(tmp_path, monkeypatch, recipe):
    root = _speech_folder(tmp_path / "speech")
    monkeypatch.setattr(lazy_speech, "read_wav", lambda *a: pytest.fail("building the splits decoded audio"))
    monkeypatch.setattr(speech, "read_wav", lambda *a: pytest.fail("building the splits decoded audio"))
    task, splits = _datasets(root, recipe)
    monkeypatch.undo()
    parts = [splits.train, splits.val, splits.test]
    assert all(isinstance(part, WavFileDataset) for part in parts) and sum(map(len, parts)) == 12
    for part in parts:  # only paths, token ids and lengths: a few bytes per utterance, nothing per sample
        held = [v for v in vars(part).values() if isinstance(v, (np.ndarray, torch.Tensor))]
        assert not any(v.dtype.is_floating_point if isinstance(v, torch.Tensor) else v.dtype.kind == "f" for v in held)
        held_bytes, audio_bytes = sum(v.nbytes for v in held), 4 * int(part.lengths.sum())
        assert held_bytes < 256 * len(part) and held_bytes < audio_bytes / 100
    manifest = {line.split("\t")[0]: line.split("\t")[1] for line in (root / "transcripts.tsv").read_text().split("\n")
                if line}
    for i in range(len(splits.train)):
        wave, target = splits.train[i]
        path = splits.train.path(i)
        assert torch.equal(wave, torch.from_numpy(read_wav(path))) and len(wave) == int(splits.train.lengths[i])
        expected = manifest[path.name]
        if recipe == "audio-classifier":
            assert task.labels[int(target)] == expected
        else:
            assert task.vocab.decode(target.tolist()) == expected
    # 12 utterances of 0.2 to 0.53 s: the hours come from the headers
    if recipe == "speech-recognizer":
        assert splits.summary["train_hours"] == round(splits.train.seconds(16000) / 3600, 3) > 0


def test_workers_give_the_same_batches_and_leave_the_global_rng_alone(tmp_path):
    _, splits = _datasets(_speech_folder(tmp_path / "speech"))
    dataset = splits.train
    plan = epoch_order(len(dataset), 3, seed=2, epoch=1)
    before = torch.get_rng_state()
    main = list(iterate(dataset, plan, speech.collate_speech, 0))
    workers = list(iterate(dataset, plan, speech.collate_speech, 2))
    assert torch.equal(torch.get_rng_state(), before)
    for a, b in zip(main, workers, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert torch.equal(dataset.subset([2, 0]).get_batch([0, 1])[0], dataset.get_batch([2, 0])[0])


def test_bad_training_file_is_skipped_and_counted_or_stops_with_one_line(tmp_path, caplog):
    root = _speech_folder(tmp_path / "speech")
    (root / "3.wav").write_text("this is no recording")
    rows = [{"audio": f"{i}.wav", "text": ("yes", "no", "stop")[i % 3], "split": "train" if i < 9 else "test"}
            for i in range(12)]
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    no_val = ["data.val_size=0"]  # the split column names no val rows: none held out of train here
    with caplog.at_level(logging.WARNING, logger="modelforge.data"):
        _, splits = _datasets(root / "manifest.jsonl", extra=no_val)
    assert len(splits.train) == 8 and splits.summary["skipped_files"] == 1
    assert "3.wav: not a WAV file" in splits.summary["first_skipped"] and "3.wav: not a WAV file" in caplog.text
    with pytest.raises(DataError, match=r"3\.wav: not a WAV file") as info:
        _datasets(root / "manifest.jsonl", extra=[*no_val, "data.on_error=fail"])
    assert "\n" not in str(info.value)
    (root / "3.wav").unlink()
    write_wav(root / "3.wav", _tone(0.3, 16000), 16000)
    (root / "10.wav").write_text("broken test file")  # a held-out split never shrinks silently
    with pytest.raises(DataError, match=r"10\.wav: not a WAV file"):
        _datasets(root / "manifest.jsonl", extra=no_val)


def test_a_file_that_fails_only_when_decoded_stops_with_one_line_also_from_a_worker(tmp_path):
    root = _speech_folder(tmp_path / "speech", count=4)
    _float_wav(root / "1.wav", np.full(3200, np.nan), 16000)
    features = FeatureConfig()
    kept, lengths, skipped = lazy_speech.index_recordings(read_speech_manifest(root), features, skip=True)
    assert len(kept) == 4 and not skipped  # the header is fine
    dataset = WavFileDataset([r.path for r in kept], [torch.tensor(0)] * 4, lengths, 16000, features.max_seconds)
    for workers in (0, 1):
        with pytest.raises(DataError) as info:
            list(iterate(dataset, epoch_order(4, 2, 0, 0, shuffle=False), speech.collate_speech, workers))
        assert "1.wav: WAV holds NaN or infinite samples" in str(info.value) and "\n" not in str(info.value)


def test_mfcc_baseline_streams_the_files_once_and_scores_like_the_waveforms_in_memory(tmp_path, monkeypatch):
    from modelforge.tasks import baselines

    task, splits = _datasets(_speech_folder(tmp_path / "speech", count=24))
    decoded = []
    real = lazy_speech.read_wav
    monkeypatch.setattr(lazy_speech, "read_wav", lambda path, *a: decoded.append(path) or real(path, *a))
    lazy = baselines._mfcc_means(splits.train, task.data_cfg.features)
    assert sorted(decoded) == sorted(splits.train.path(i) for i in range(len(splits.train)))  # each file once
    items = [(torch.from_numpy(read_wav(splits.train.path(i))), t) for i, t in enumerate(splits.train.targets)]

    class InMemory:
        def __len__(self):
            return len(items)

        def get_batch(self, indices):
            return speech.collate_speech([items[i] for i in indices])

    assert np.array_equal(lazy, baselines._mfcc_means(InMemory(), task.data_cfg.features))
    result = baselines.run_baseline(task, splits)
    assert result["train_rows"] == len(splits.train) and 0 <= result["test_accuracy"] <= 1


def test_what_a_split_holds_does_not_grow_with_the_recordings(tmp_path):
    def held(seconds, folder):
        root = tmp_path / folder
        root.mkdir()
        for i in range(8):
            write_wav(root / f"{i}.wav", _tone(seconds, 16000), 16000)
        (root / "transcripts.tsv").write_text("".join(f"{i}.wav\tyes no\n" for i in range(8)))
        _, splits = _datasets(root, "speech-recognizer")
        part = splits.train
        return sum(v.nbytes for v in vars(part).values() if isinstance(v, (np.ndarray, torch.Tensor))), part

    short, short_part = held(0.1, "a")
    long, long_part = held(1.0, "b")  # ten times the audio
    assert short == long and int(long_part.lengths.sum()) == 10 * int(short_part.lengths.sum())
