"""Every text classification and language modeling recipe trains a few steps on a tiny slice of its real data
through the CLI, writes a loadable artifact with its tokenizer, and predicts (or generates) from it."""

import json

import pytest

import modelforge

TINY = ["train.max_steps=3", "train.batch_size=16", "train.progress=off"]
CLASSIFIERS = {
    "sentiment-lstm": ["data.limit=48"],
    "sentiment-transformer": ["data.limit=48"],
    "sentiment-minilm": ["data.limit=24", "data.max_length=32", "train.eval_batch_size=24"],
    "news-topic": ["data.limit=48", "data.max_length=64"],
    "seed-rnn": ["data.limit=48", "data.max_length=40"],
}
LMS = {
    "shakespeare-char": [],
    "shakespeare-bpe": ["data.tokenizer.vocab_size=300"],
}
LM_TINY = ["data.limit=20000", "data.block_size=32", "data.eval_windows=4", "model.dim=32", "model.num_layers=1",
           "model.num_heads=2", "train.eval_every_steps=2", "serve.max_new_tokens=24"]


pytestmark = pytest.mark.usefixtures("isolated_cache")
ARTIFACT = ("recipe.yaml", "metrics.jsonl", "results.json", "model/model.safetensors", "model/tokenizer.json")


@pytest.mark.parametrize("recipe", list(CLASSIFIERS))
def test_classifier_recipe_trains_through_cli_and_predicts(cli, train_cli, tmp_path, recipe):
    run_dir = tmp_path / recipe
    result = train_cli(recipe, run_dir, [*TINY, *CLASSIFIERS[recipe]], files=ARTIFACT)
    assert "test_accuracy:" in result.stdout and "test_macro_f1:" in result.stdout
    results = json.loads((run_dir / "results.json").read_text())
    matrix = results["metrics"]["test_confusion_matrix"]
    labels = json.loads((run_dir / "model" / "task.json").read_text())["labels"]
    assert len(matrix) == len(labels) >= 2

    texts = ["A witty, moving film.", "Shares fell sharply after the bank cut its profit forecast."]
    if recipe == "sentiment-lstm":  # one recipe per task goes through the CLI's predict; the others in-process
        predicted = cli("predict", str(run_dir), *texts)
        assert predicted.returncode == 0, predicted.stderr
        out = json.loads(predicted.stdout)
        empty = cli("predict", str(run_dir), "")
        assert empty.returncode == 2 and empty.stderr.strip().count("\n") == 0 and "empty" in empty.stderr
    else:
        out = modelforge.load(run_dir).predict(texts)
    assert len(out) == 2 and all(o["label"] in labels for o in out)
    assert all(0 < o["probability"] <= 1 and o["top"][0]["label"] == o["label"] for o in out)


@pytest.mark.parametrize("recipe", list(LMS))
def test_language_model_recipe_trains_predicts_and_generates(cli, train_cli, tmp_path, recipe, capsys):
    run_dir = tmp_path / recipe
    result = train_cli(recipe, run_dir, [*TINY, *LM_TINY, *LMS[recipe]], files=ARTIFACT)
    assert "test_perplexity:" in result.stdout and "test_loss:" in result.stdout
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("val_perplexity" in e for e in evals)

    if recipe == "shakespeare-char":
        predicted = cli("predict", str(run_dir), "ROMEO:")
        assert predicted.returncode == 0, predicted.stderr
        out = json.loads(predicted.stdout)[0]
    else:
        out = modelforge.load(run_dir).predict(["ROMEO:"])[0]
    assert out["text"] == "ROMEO:" + out["continuation"] and out["continuation"]
    if recipe == "shakespeare-char":
        assert len(out["continuation"]) == 24  # one character per token

    from modelforge.api import generate
    from modelforge.cli import main

    capsys.readouterr()
    assert main(["generate", str(run_dir), "--prompt", "KING:", "--max-new-tokens", "16", "--temperature", "0.9",
                 "--top-k", "20", "--top-p", "0.95", "--seed", "3"]) == 0
    streamed = capsys.readouterr().out
    pieces: list[str] = []
    text = generate(run_dir, "KING:", max_new_tokens=16, temperature=0.9, top_k=20, top_p=0.95, seed=3,
                    on_text=pieces.append)
    assert streamed == text + "\n" and text.startswith("KING:") and len(text) > len("KING:")
    assert "KING:" + "".join(pieces) == text and len(pieces) > 1
    assert generate(run_dir, "KING:", 16, 0.9, 20, 0.95, 3) == text
    assert capsys.readouterr().out == ""
