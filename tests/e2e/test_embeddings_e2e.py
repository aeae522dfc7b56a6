"""The word-embedding recipes (skip-gram on both corpora, CBOW) train a few steps on a slice of their real corpus
through the CLI, write an artifact with its vocabulary, and answer `modelforge neighbors` (words, analogies, and
one-line errors); the CBOW run also exports its word vectors to ONNX."""

import json

import pytest

import modelforge

TINY = ["train.max_steps=3", "train.batch_size=256", "train.eval_batch_size=512", "train.eval_every_steps=3",
        "train.progress=off", "data.eval_pairs=500", "model.dim=16"]
RECIPES = {
    "skipgram-shakespeare": ["data.limit=300000"],
    "skipgram-bible": ["data.bible_key=Gen 1-5", "data.min_count=2"],
    "cbow-shakespeare": ["data.limit=300000"],
}


pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_embedding_recipe_trains_through_cli_and_answers_neighbors(cli, train_cli, tmp_path, recipe):
    run_dir = tmp_path / recipe
    train_cli(recipe, run_dir, [*TINY, *RECIPES[recipe]],
              files=("recipe.yaml", "metrics.jsonl", "results.json", "model/model.safetensors", "model/vocab.tsv"))
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [e for e in evals if e["event"] == "eval"][-1]
    assert last["val_loss"] > 0 and last["val_relations_scored"] > 0 and 0 <= last["val_relation_accuracy"] <= 1
    vocab = (run_dir / "model" / "vocab.tsv").read_text().splitlines()
    task_state = json.loads((run_dir / "model" / "task.json").read_text())
    assert task_state["vocab_size"] == len(vocab) and vocab[0].split("\t")[0] == "the"

    word = "god" if recipe == "skipgram-bible" else "king"
    shown = cli("neighbors", str(run_dir), word, "--k", "4")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.strip().splitlines()
    assert lines[0] == f"nearest to {word}" and len(lines) == 5
    words = {line.split("\t")[0] for line in lines[1:]}
    assert word not in words and all(-1 <= float(line.split("\t")[1]) <= 1 for line in lines[1:])

    out = modelforge.load(run_dir).predict([word.upper()])  # lower-cased like the corpus
    assert [n["word"] for n in out[0]["neighbors"][:4]] == [line.split("\t")[0] for line in lines[1:]]

    if recipe == "cbow-shakespeare":  # trained on windows, served and exported from the same word vectors
        data = json.loads((run_dir / "results.json").read_text())["summary"]["data"]
        assert data["train_windows"] > 0 and data["val_windows"] > 0 and "train_pairs" not in data
        exported = cli("export", str(run_dir), "--format", "onnx")
        assert exported.returncode == 0, exported.stderr
        assert (run_dir / "model.embeddings.onnx").is_file()
    if recipe == "skipgram-shakespeare":  # the CLI's analogy form and its errors, once
        analogy = cli("neighbors", str(run_dir), "--analogy", "man", "king", "woman", "--k", "3")
        assert analogy.returncode == 0 and analogy.stdout.startswith("man : king :: woman : ?")
        assert len(analogy.stdout.strip().splitlines()) == 4
        unknown = cli("neighbors", str(run_dir), "kingg")
        assert unknown.returncode == 2 and unknown.stderr.strip().count("\n") == 0
        assert "not in the vocabulary" in unknown.stderr and "king" in unknown.stderr
        neither = cli("neighbors", str(run_dir))
        assert neither.returncode == 2 and "--analogy" in neither.stderr


def test_corpus_without_words_fails_with_one_line(cli, tmp_path):
    corpus = tmp_path / "numbers.txt"
    corpus.write_text("1 2 3\n\n4 5 6 -- 7\n")
    result = cli("train", "skipgram-shakespeare", "data.source=file", f"data.path={corpus}", *TINY,
                 "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "has no words" in result.stderr and "Traceback" not in result.stderr
