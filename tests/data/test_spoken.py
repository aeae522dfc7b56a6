import json
import wave

import pytest
import torch

from modelforge.core.errors import DataError, MissingDependencyError
from modelforge.data.audio import read_wav
from modelforge.data.builtin import spoken
from modelforge.data.builtin.spoken import (
    COMMANDS,
    VARIANTS,
    generate_spoken,
    list_voices,
    load_spoken_audio,
    plan_utterances,
    split_voices,
)
from modelforge.data.formats.speech_manifest import read_speech_manifest
from modelforge.tasks.speech.ctc_decoding import CharVocab

SIZES = {"n_train": 6, "n_val": 3, "n_test": 3}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """12 generated digit utterances in a private cache (the only espeak-ng synthesis in this file)."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELFORGE_CACHE", str(root))
        records = generate_spoken("spoken-digits", **SIZES, seed=3, progress=False)
    return root, records


def test_generated_utterances_are_16k_mono_with_spoken_word_transcripts(digits):
    _, records = digits
    assert [r.split for r in records] == ["train"] * 6 + ["val"] * 3 + ["test"] * 3
    words = {"zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    for record in records:
        assert 1 <= len(record.text.split()) <= 7 and set(record.text.split()) <= words
        assert 120 <= record.meta["speed"] <= 200 and 20 <= record.meta["pitch"] <= 80
        with wave.open(str(record.path)) as wf:
            assert (wf.getframerate(), wf.getnchannels(), wf.getsampwidth()) == (16000, 1, 2)
            assert 0.2 < wf.getnframes() / 16000 < 6.0
    audio = torch.tensor(read_wav(records[0].path))
    assert audio.abs().max() > 0.05  # speech, not silence


def test_splits_are_voice_disjoint(digits):
    _, records = digits
    by_split = {s: {r.voice for r in records if r.split == s} for s in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["val"])
    assert not (by_split["val"] & by_split["test"])
    voices = list_voices()
    pools = split_voices(voices)
    assert sorted(sum(pools.values(), [])) == sorted(voices)  # every voice in exactly one split
    assert len(pools["test"]) >= 0.1 * len(voices) and len(pools["val"]) >= 1
    assert pools == split_voices(list(reversed(voices)))  # by stable hash, not by listing order
    for split, names in by_split.items():
        assert names <= set(pools[split])


def test_voice_list_is_english_voices_times_variants():
    voices = list_voices()
    bases = sorted({v.split("+")[0] for v in voices})
    assert {"en-gb", "en-us"} <= set(bases)
    assert len(voices) == len(bases) * len(VARIANTS) == len(bases) * 12


def test_second_call_reuses_the_cache_without_espeak(digits, monkeypatch):
    root, records = digits
    monkeypatch.setenv("MODELFORGE_CACHE", str(root))

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"espeak-ng was run again: {args}")

    monkeypatch.setattr(spoken.subprocess, "run", no_subprocess)
    assert generate_spoken("spoken-digits", **SIZES, seed=3, progress=False) == records


def test_a_deleted_file_is_regenerated_alone(digits, monkeypatch):
    root, records = digits
    monkeypatch.setenv("MODELFORGE_CACHE", str(root))
    records[4].path.unlink()
    calls = []
    real_run = spoken.subprocess.run

    def counting_run(command, *args, **kwargs):
        calls.append(command)
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(spoken.subprocess, "run", counting_run)
    again = generate_spoken("spoken-digits", **SIZES, seed=3, progress=False)
    assert again == records and records[4].path.exists()
    assert len([c for c in calls if "-w" in c]) == 1  # one synthesis, for the one missing file
    assert not list(records[4].path.parent.glob(".*"))  # no temp files left


def test_generation_is_deterministic_and_split_sizes_independent():
    voices = list_voices()
    a = plan_utterances("spoken-digits", {"train": 50, "val": 5, "test": 20}, 0, voices)
    b = plan_utterances("spoken-digits", {"train": 10, "val": 5, "test": 20}, 0, voices)
    c = plan_utterances("spoken-digits", {"train": 50, "val": 5, "test": 20}, 1, voices)
    assert a == plan_utterances("spoken-digits", {"train": 50, "val": 5, "test": 20}, 0, voices)
    assert [u for u in a if u.split == "test"] == [u for u in b if u.split == "test"]
    assert a[:10] == b[:10] and a != c
    commands = plan_utterances("spoken-commands", {"train": 200}, 0, voices)
    assert {u.text for u in commands} <= set(COMMANDS) and len({u.text for u in commands}) >= 25
    vocab = CharVocab()
    for text in COMMANDS + ("zero oh one two three four five six seven eight nine",):
        assert vocab.decode(vocab.encode(text)) == text  # every transcript fits the CTC vocabulary
    with pytest.raises(DataError, match="spoken-digits, spoken-commands"):
        plan_utterances("spoken-letters", {"train": 1}, 0, voices)


def test_missing_espeak_is_a_one_line_error_naming_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path / "fresh"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingDependencyError) as err:
        generate_spoken("spoken-commands", n_train=2, n_val=1, n_test=1)
    message = str(err.value)
    assert "\n" not in message and "apt-get install espeak-ng" in message and "make setup-system" in message


def test_background_noise_is_seeded_and_at_a_bounded_snr(digits):
    _, records = digits
    clean = load_spoken_audio(records[0], seed=None)
    noisy = load_spoken_audio(records[0], seed=5)
    assert torch.equal(noisy, load_spoken_audio(records[0], seed=5))
    assert not torch.equal(noisy, load_spoken_audio(records[0], seed=6))
    snr = 10 * torch.log10(clean.double().pow(2).mean() / (noisy - clean).double().pow(2).mean())
    assert 10.0 - 0.05 <= snr.item() <= 30.0 + 0.05


# ---- user manifests (data/formats/speech_manifest.py) ----


def test_tsv_folder_and_jsonl_manifests(tmp_path):
    for name in ("a.wav", "b.wav"):
        (tmp_path / name).write_bytes(b"RIFF")
    (tmp_path / "transcripts.tsv").write_text("file\ttext\na.wav\tTurn on  the light\n\nb.wav\tplay music\n")
    records = read_speech_manifest(tmp_path)
    assert [(r.path, r.text) for r in records] == [(tmp_path / "a.wav", "Turn on the light"),
                                                   (tmp_path / "b.wav", "play music")]
    rows = [{"audio": "a.wav", "text": "hi", "speaker": "s1", "split": "test", "gender": "f"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (record,) = read_speech_manifest(tmp_path / "m.jsonl")
    assert (record.voice, record.split, record.meta["gender"]) == ("s1", "test", "f")


@pytest.mark.parametrize(
    "name,content,pattern",
    [
        ("transcripts.tsv", "a.wav\thello\nmissing.wav\tworld\n", r"transcripts\.tsv line 2: audio file .*missing"),
        ("transcripts.tsv", "a.wav\thello\na.wav\t   \n", r"transcripts\.tsv line 2: empty transcript for 'a\.wav'"),
        ("transcripts.tsv", "a.wav hello\n", r"transcripts\.tsv line 1: expected `file<TAB>text`"),
        ("m.jsonl", '{"audio": "a.wav", "text": "x"}\n{"audio": "a.wav", "text": \n', r"m\.jsonl line 2: invalid JSON"),
        ("m.jsonl", '{"audio": "a.wav", "text": ""}\n', r"m\.jsonl line 1: empty transcript"),
        ("m.jsonl", '{"file": "a.wav", "text": "x"}\n', r"m\.jsonl line 1: expected an object with \"audio\""),
        ("m.jsonl", '{"audio": "a.wav", "text": "x", "split": "dev"}\n', r"m\.jsonl line 1: split 'dev'"),
    ],
)
def test_manifest_errors_name_file_and_line(tmp_path, name, content, pattern):
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=pattern) as err:
        read_speech_manifest(tmp_path / name)
    assert "\n" not in str(err.value)


def test_folder_without_transcripts_explains_the_layout(tmp_path):
    with pytest.raises(DataError, match=r"no transcripts\.tsv in this folder.*file<TAB>text"):
        read_speech_manifest(tmp_path)
