"""Speech tasks without espeak-ng: jiwer metrics, bad-file errors at serving time, batching, augmentation, manifests.

Artifacts here are built untrained (tiny models saved through ``save_artifact``): what is tested is the plumbing
around the model — reading inputs, decoding, scoring — not its accuracy (the e2e tests train).
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

import jiwer
import numpy as np
import pytest
import torch

from modelforge.api import transcribe
from modelforge.artifacts.model_dir import save_artifact
from modelforge.core.errors import ConfigError, DataError
from modelforge.data.audio import write_wav
from modelforge.data.speech import WaveformDataset, _mix_noise, augment_waveforms
from modelforge.tasks.recipes import load_recipe
from modelforge.tasks.speech.audio_classification import AudioClassification
from modelforge.tasks.speech.ctc_decoding import DEFAULT_CHARS, CharVocab
from modelforge.tasks.speech.speech_recognition import SpeechRecognition, speech_metrics

SR = 16000
ASR_RECIPE = {
    "name": "tiny-asr",
    "task": "speech_recognition",
    "data": {"source": "manifest", "path": "unused", "noise_snr": None,
             "features": {"n_mels": 16, "max_seconds": 2.0}},
    "model": {"name": "asr_bigru", "channels": 4, "hidden_size": 16, "num_layers": 1, "dropout": 0.0},
}


def tone(seconds: float = 0.5, freq: float = 440.0, rate: int = SR) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


@pytest.fixture(scope="module")
def asr_run(tmp_path_factory) -> Path:
    """An untrained tiny speech_recognition artifact (run directory layout)."""
    run = tmp_path_factory.mktemp("asr-run")
    recipe = load_recipe(ASR_RECIPE)
    task = SpeechRecognition(recipe, state={"vocab": DEFAULT_CHARS, "n_features": 16, "lexicon": None})
    torch.manual_seed(0)
    save_artifact(run / "model", recipe, task, task.build_model())
    return run


# ---- metrics --------------------------------------------------------------------------------------------------


def test_speech_metrics_are_jiwer_corpus_values():
    refs = ["one two three", "four five", "six"]
    hyps = ["one too three", "four five seven", ""]
    got = speech_metrics(refs, hyps)
    # 1 substitution + 1 insertion + 1 deletion over 6 reference words
    assert got["wer"] == pytest.approx(3 / 6) == pytest.approx(jiwer.wer(refs, hyps))
    assert got["cer"] == pytest.approx(jiwer.cer(refs, hyps))
    assert got["utterance_accuracy"] == pytest.approx(0.0)
    assert speech_metrics(["a b"], ["a b"]) == {"wer": 0.0, "cer": 0.0, "utterance_accuracy": 1.0}


class SpellingModel(torch.nn.Module):
    """Emits peaky CTC log-probs that spell fixed texts (one per batch row), whatever the input."""

    def __init__(self, texts: list[str], vocab: CharVocab, frames: int = 60):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))  # Trainer/eval code expects parameters
        logits = torch.full((len(texts), frames, len(vocab)), -20.0)
        logits[:, :, 0] = 0.0
        for row, text in enumerate(texts):
            for i, token in enumerate(vocab.encode(text)):
                logits[row, 2 * i, :] = -20.0
                logits[row, 2 * i, token] = 0.0  # letter, blank, letter, blank: repeats stay separate
        self.logits = logits

    def forward(self, features, lengths):
        return self.logits[: features.shape[0]].log_softmax(-1) + 0 * self.weight

    def output_lengths(self, lengths):
        return torch.full_like(lengths, self.logits.shape[1])


def test_evaluate_scores_decoded_text_with_jiwer():
    recipe = load_recipe(ASR_RECIPE)
    task = SpeechRecognition(recipe, state={"vocab": DEFAULT_CHARS, "n_features": 16, "lexicon": None})
    refs = ["turn on the light", "play music"]
    hyps = ["turn on the lights", "play"]
    dataset = WaveformDataset([np.zeros(4000, np.int16)] * 2,
                              [torch.tensor(task.vocab.encode(t)) for t in refs])
    metrics = task.evaluate(SpellingModel(hyps, task.vocab), [dataset.get_batch([0, 1])])
    assert metrics["wer"] == pytest.approx(jiwer.wer(refs, hyps)) == pytest.approx(2 / 6)
    assert metrics["cer"] == pytest.approx(jiwer.cer(refs, hyps))
    assert metrics["examples"][1] == {"reference": "play music", "hypothesis": "play"}
    assert np.isfinite(metrics["loss"])


# ---- serving: transcribe and bad input ------------------------------------------------------------------------


def write_raw(path: Path, frames: bytes, channels: int, width: int, rate: int) -> Path:
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(channels)
        wf.setsampwidth(width)
        wf.setframerate(rate)
        wf.writeframes(frames)
    return path


def bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    text = tmp / "notes.wav"
    text.write_text("this is not audio")
    corrupt = tmp / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 6)
    empty = write_raw(tmp / "empty.wav", b"", 1, 2, SR)
    long = tmp / "long.wav"
    write_wav(long, tone(3.0), SR)  # over the recipe's 2 s limit
    return {
        "non-wav": (text, "not a WAV file"),
        "corrupt": (corrupt, "corrupt"),
        "empty": (empty, "no audio samples"),
        "too long": (long, "over the 2 s limit"),
        "missing": (tmp / "absent.wav", "no such audio file"),
    }


@pytest.mark.parametrize("kind", ["non-wav", "corrupt", "empty", "too long", "missing"])
def test_transcribe_bad_file_is_one_line_error_naming_it(asr_run, tmp_path, kind):
    path, reason = bad_files(tmp_path)[kind]
    good = tmp_path / "good.wav"
    write_wav(good, tone(), SR)
    with pytest.raises(DataError) as info:
        transcribe(asr_run, [good, path])
    message = str(info.value)
    assert "\n" not in message and str(path) in message and reason in message


def test_transcribe_converts_stereo_8bit_other_rate_and_formats_output(asr_run, tmp_path, capsys):
    from modelforge.cli import main

    stereo = np.stack([tone(0.5, rate=8000), tone(0.5, 660, rate=8000)], axis=1)
    pcm8 = np.clip(np.rint(stereo * 127 + 128), 0, 255).astype(np.uint8).tobytes()
    odd = write_raw(tmp_path / "stereo8.wav", pcm8, 2, 1, 8000)
    plain = tmp_path / "plain.wav"
    write_wav(plain, tone(), SR)
    (single,) = transcribe(asr_run, [odd])
    assert isinstance(single, str) and "\n" not in single
    capsys.readouterr()
    assert main(["transcribe", str(asr_run), str(odd)]) == 0 and capsys.readouterr().out == single + "\n"
    assert main(["transcribe", str(asr_run), str(odd), str(plain)]) == 0
    several = capsys.readouterr().out.rstrip("\n").split("\n")
    assert [line.split("\t")[0] for line in several] == [str(odd), str(plain)]
    assert main(["transcribe", str(asr_run), str(odd), str(plain), "--json", "--beam", "2"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert [row["input"] for row in as_json] == [str(odd), str(plain)] and all("text" in row for row in as_json)
    # every character the decoder may emit is in the vocabulary
    assert set("".join(row["text"] for row in as_json)) <= set(DEFAULT_CHARS)


def test_predict_accepts_wav_bytes_and_names_bad_bytes(asr_run, tmp_path):
    from modelforge.api import load

    plain = tmp_path / "plain.wav"
    write_wav(plain, tone(), SR)
    predictor = load(asr_run)
    from_bytes, from_path = predictor.predict([plain.read_bytes(), str(plain)])
    assert from_bytes == from_path
    with pytest.raises(DataError, match=r"^input #2 \(WAV bytes\): not a WAV file"):
        predictor.predict([plain.read_bytes(), b"garbage"])


def test_transcribe_refuses_other_tasks(tmp_path):
    recipe = load_recipe({**ASR_RECIPE, "task": "audio_classification",
                          "model": {"name": "audio_cnn", "channels": [4, 4], "strides": [1, 2]}})
    task = AudioClassification(recipe, state={"labels": ["a", "b"], "n_features": 16})
    save_artifact(tmp_path / "model", recipe, task, task.build_model())
    with pytest.raises(ConfigError, match="transcribe needs a speech_recognition run"):
        transcribe(tmp_path, [tmp_path / "x.wav"])


# ---- data plumbing --------------------------------------------------------------------------------------------


def test_waveform_dataset_pads_batches_and_keeps_samples():
    audio = [np.arange(5, dtype=np.int16) * 1000, np.full(3, -32768, np.int16)]
    dataset = WaveformDataset(audio, [torch.tensor([1, 2, 3]), torch.tensor([4])])
    waves, wave_lengths, targets, target_lengths = dataset.get_batch([1, 0])
    assert waves.shape == (2, 5) and wave_lengths.tolist() == [3, 5] and target_lengths.tolist() == [1, 3]
    assert waves[0, :3].tolist() == [-1.0] * 3 and waves[0, 3:].tolist() == [0.0, 0.0]
    assert torch.equal(waves[1], torch.arange(5) * 1000 / 32768.0)
    assert targets.tolist() == [[4, 0, 0], [1, 2, 3]]
    labelled = WaveformDataset(audio, [torch.tensor(1), torch.tensor(0)])
    assert labelled.get_batch([0, 1])[2].tolist() == [1, 0]


def test_training_noise_hits_the_drawn_snr_and_leaves_padding_silent():
    torch.manual_seed(0)
    waves = torch.randn(3, 8000) * 0.1
    lengths = torch.tensor([8000, 5000, 2000])
    waves[1, 5000:] = waves[2, 2000:] = 0
    noisy = _mix_noise(waves, lengths, (15.0, 15.0))
    for row, n in enumerate(lengths.tolist()):
        noise = noisy[row, :n] - waves[row, :n]
        snr = 10 * torch.log10(waves[row, :n].square().sum() / noise.square().sum())
        assert snr.item() == pytest.approx(15.0, abs=1e-3)
        assert not noisy[row, n:].any(), "padding must stay silent"


def test_speed_perturbation_shortens_batch_and_lengths_together():
    cfg = load_recipe({**ASR_RECIPE, "data": {**ASR_RECIPE["data"], "speed_perturb": [1.25, 1.25]}}).data
    waves = torch.stack([torch.from_numpy(tone(1.0)), torch.from_numpy(np.pad(tone(0.5), (0, SR // 2)))])
    faster, lengths = augment_waveforms(cfg, waves, torch.tensor([SR, SR // 2]))
    assert lengths.tolist() == [12800, 6400] and faster.shape == (2, 12800)
    assert faster[1, 6400 + 64 :].abs().max() < 1e-3  # the padding stays (nearly) silent, up to filter ringing


def write_manifest(root: Path, rows: list[dict]) -> Path:
    for row in rows:
        write_wav(root / row["audio"], tone(0.3 + 0.05 * len(row["text"]), 300 + 20 * len(row["text"])), SR)
    manifest = root / "data.jsonl"
    manifest.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return manifest


def test_manifest_is_split_by_speaker_and_bad_training_audio_is_skipped(tmp_path):
    rows = [{"audio": f"{s}-{i}.wav", "text": text, "speaker": s}
            for s in ("ann", "bob", "cat", "dan", "eve") for i, text in enumerate(["yes", "no", "stop"])]
    manifest = write_manifest(tmp_path, rows)
    speakers = {}
    recipe = load_recipe({**ASR_RECIPE, "data": {**ASR_RECIPE["data"], "path": str(manifest), "val_size": 0.2,
                                                 "test_size": 0.2}})
    task = SpeechRecognition(recipe)
    splits = task.datasets()
    from modelforge.data.speech import load_records

    for split, records in load_records(task.data_cfg).items():
        speakers[split] = {r.voice for r in records}
    assert not (speakers["train"] & speakers["test"]) and not (speakers["train"] & speakers["val"])
    assert len(splits.train) == 3 * len(speakers["train"]) and len(splits.test) == 3
    assert task.state()["vocab"] == DEFAULT_CHARS
    trained, held_out = sorted(speakers["train"])[0], sorted(speakers["test"])[0]
    (tmp_path / f"{trained}-0.wav").write_text("broken")
    assert SpeechRecognition(recipe).datasets().summary["skipped_files"] == 1
    (tmp_path / f"{held_out}-0.wav").write_text("broken")  # a held-out set must never silently shrink
    with pytest.raises(DataError, match=f"{held_out}-0.wav: not a WAV file"):
        SpeechRecognition(recipe).datasets()


def test_keyword_labels_come_from_training_transcripts(tmp_path):
    rows = [{"audio": f"{i}.wav", "text": text, "split": split}
            for i, (text, split) in enumerate([("go", "train"), ("stop", "train"), ("go", "train"),
                                               ("stop", "test"), ("jump", "test")])]
    manifest = write_manifest(tmp_path, rows)
    recipe = load_recipe({**ASR_RECIPE, "task": "audio_classification",
                          "data": {"source": "manifest", "path": str(manifest), "noise_snr": None,
                                   "features": {"n_mels": 16}},
                          "model": {"name": "audio_cnn", "channels": [4, 4], "strides": [1, 2]}})
    task = AudioClassification(recipe)
    splits = task.datasets()
    assert task.state()["labels"] == ["go", "stop"]
    assert splits.summary["test_unknown_labels"] == 1 and len(splits.test) == 1
    model = task.build_model().eval()
    result = task.postprocess(task.forward(model, task.preprocess([str(tmp_path / "0.wav")])))[0]
    assert result["label"] in ("go", "stop") and sum(t["probability"] for t in result["top"]) == pytest.approx(1)


def test_lexicon_from_training_words_or_a_word_list_file(tmp_path):
    rows = [{"audio": f"{i}.wav", "text": text, "split": "train"} for i, text in enumerate(["Yes, please!", "no"])]
    manifest = write_manifest(tmp_path, rows)
    data = {**ASR_RECIPE["data"], "path": str(manifest), "decoding": "beam"}
    task = SpeechRecognition(load_recipe({**ASR_RECIPE, "data": {**data, "lexicon": "train"}}))
    task.datasets()
    assert task.state()["lexicon"] == ["no", "please", "yes"]
    words = tmp_path / "words.txt"
    words.write_text("Stop\ngo  GO\n")
    task = SpeechRecognition(load_recipe({**ASR_RECIPE, "data": {**data, "lexicon": str(words)}}))
    task.datasets()
    assert task.state()["lexicon"] == ["go", "stop"] and task.lexicon.words == {"go", "stop"}
    missing = tmp_path / "absent.txt"
    with pytest.raises(DataError, match=f"{missing}: cannot read the lexicon"):
        SpeechRecognition(load_recipe({**ASR_RECIPE, "data": {**data, "lexicon": str(missing)}})).datasets()


def test_a_split_column_without_test_rows_holds_the_test_split_out_of_train_by_speaker(tmp_path):
    rows = [{"audio": f"{s}-{i}.wav", "text": text, "speaker": s, "split": "val" if s == "eve" else "train"}
            for s in ("ann", "bob", "cat", "dan", "eve") for i, text in enumerate(["yes", "no", "stop"])]
    data = {**ASR_RECIPE["data"], "path": str(write_manifest(tmp_path, rows)), "val_size": 0.2, "test_size": 0.25}
    task = SpeechRecognition(load_recipe({**ASR_RECIPE, "data": data}))
    from modelforge.data.speech import load_records

    parts = load_records(task.data_cfg)
    speakers = {split: {r.voice for r in records} for split, records in parts.items()}
    assert speakers["val"] == {"eve"} and len(speakers["test"]) == 1 and len(speakers["train"]) == 3
    assert not speakers["train"] & speakers["test"]
    found = task.datasets().summary["found"]
    assert "the manifest's split column (test split off its training rows)" in found, found
