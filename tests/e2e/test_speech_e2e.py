"""Each speech recipe trains a few steps through the real CLI on a handful of espeak-ng utterances, writes a loadable
run, and the run predicts on a WAV. The utterances are generated once into a private cache for this module."""

from __future__ import annotations

import json

import pytest

SIZES = ["data.n_train=6", "data.n_val=2", "data.n_test=2"]
QUICK = ["train.max_steps=2", "train.batch_size=3", "train.progress=off", "train.warmup_steps=0"]
SMALL_ASR = ["model.channels=4", "model.hidden_size=16", "model.num_layers=1", "data.beam_width=2"]
# The first 14 generated commands hold the first test utterance's phrase ("snooze the alarm"); with fewer, no test
# label would have been trained on and the held-out set would be empty. The first 6 are the asr-commands ones.
KWS_SIZES = ["data.n_train=14", "data.n_val=0", "data.n_test=1"]
CASES = {
    "asr-digits": ([*SIZES, *QUICK, *SMALL_ASR], (6, 2)),
    "asr-commands": ([*SIZES, *QUICK, *SMALL_ASR], (6, 2)),
    "keyword-spotting": ([*KWS_SIZES, *QUICK, "model.channels=[8,8]", "model.strides=[1,2]"], (14, 1)),
}
# Each CLI call pays a fresh torch import: one recipe predicts through the CLI, the others load the run in-process.
PREDICT_THROUGH_CLI = {"asr-digits"}


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """The CLI subprocesses inherit MODELFORGE_CACHE, so generation never touches the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELFORGE_CACHE", str(tmp_path_factory.mktemp("speech-cache")))
        mp.setenv("OMP_NUM_THREADS", "1")
        yield


@pytest.mark.parametrize("recipe", list(CASES))
def test_speech_recipe_trains_through_cli_and_predicts_on_a_wav(cli, train_cli, tmp_path, recipe):
    run_dir = tmp_path / recipe
    overrides, sizes = CASES[recipe]
    result = train_cli(recipe, run_dir, overrides,
                       files=("recipe.yaml", "metrics.jsonl", "results.json", "model/model.safetensors",
                              "model/task.json"))
    metric = "test_accuracy:" if recipe == "keyword-spotting" else "test_wer:"
    assert metric in result.stdout and str(run_dir) in result.stdout
    summary = json.loads((run_dir / "results.json").read_text())["summary"]["data"]
    assert (summary["train_size"], summary["test_size"]) == sizes

    from modelforge.data.cache import cache_dir
    from modelforge.data.formats.speech_manifest import read_speech_manifest

    source = "spoken-digits" if recipe == "asr-digits" else "spoken-commands"
    manifest = next(cache_dir("spoken", source).glob("manifest-*.jsonl"))
    wav = next(r.path for r in read_speech_manifest(manifest) if r.split == "test")
    if recipe in PREDICT_THROUGH_CLI:
        predicted = cli("predict", str(run_dir), str(wav))
        assert predicted.returncode == 0, predicted.stderr
        out = json.loads(predicted.stdout)[0]
        assert out["input"] == str(wav)
    else:
        from modelforge.api import load

        out = load(run_dir).predict(str(wav))[0]
    if recipe == "keyword-spotting":
        labels = json.loads((run_dir / "model" / "task.json").read_text())["labels"]
        assert out["label"] in labels and len(labels) >= 2
    else:
        from modelforge.api import transcribe

        assert isinstance(out["text"], str) and transcribe(run_dir, [wav]) == [out["text"]]
