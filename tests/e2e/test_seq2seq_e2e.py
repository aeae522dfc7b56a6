"""Every translation and summarization recipe trains a few steps on a tiny slice of its real data through the CLI,
writes a loadable artifact with its tokenizer(s), reports the library metrics, and translates/summarizes."""

import json

import pytest

import modelforge

TINY = ["train.max_steps=2", "train.batch_size=8", "train.progress=off", "train.eval_every_steps=null",
        "data.tokenizer.vocab_size=300", "data.val_limit=4", "data.test_limit=4", "data.decoding.max_new_tokens=6",
        "data.decoding.beam_size=2"]
TRANSFORMER = ["model.dim=32", "model.num_layers=1", "model.num_decoder_layers=1", "model.num_heads=2",
               "model.mlp_hidden=64"]
RECIPES = {
    # Obadiah, Jonah and Micah: three books, so each split gets a whole book (diatheke reads them in ~1 s)
    "seq2seq-attention": ["data.bible_range=Obadiah-Micah", "data.val_fraction=0.2", "data.test_fraction=0.2",
                          "model.embed_dim=16", "model.hidden_size=16"],
    "translator-transformer": ["data.bible_range=Obadiah-Micah", "data.val_fraction=0.2", "data.test_fraction=0.2",
                               *TRANSFORMER],
    "bbc-headline": ["data.limit=16", "data.max_source_tokens=48", "train.early_stopping=null", *TRANSFORMER],
}
METRICS = {
    "seq2seq-attention": ["test_bleu:", "test_chrf:", "test_bleu_greedy:"],
    "translator-transformer": ["test_bleu:", "test_chrf:"],
    "bbc-headline": ["test_rouge1:", "test_rougeL:", "test_lead_rouge1:", "test_lead_rougeL:"],
}


pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_seq2seq_recipe_trains_through_cli_and_generates(cli, train_cli, tmp_path, recipe):
    run_dir = tmp_path / recipe
    result = train_cli(recipe, run_dir, [*TINY, *RECIPES[recipe]],
                       files=("results.json", "model/model.safetensors", "model/tokenizer.json", "model/task.json"))
    for metric in METRICS[recipe]:
        assert metric in result.stdout, metric
    results = json.loads((run_dir / "results.json").read_text())
    samples = results["metrics"]["test_samples"]
    assert samples and all(set(s) == {"source", "reference", "output"} for s in samples)
    if recipe == "seq2seq-attention":  # separate vocabularies: the target tokenizer travels too
        assert (run_dir / "model" / "tokenizer_target.json").exists()
        translated = cli("translate", str(run_dir), "In the beginning God created the heavens.", "Amen.",
                         "--beam", "3", "--length-penalty", "1.0")
        assert translated.returncode == 0, translated.stderr
        lines = translated.stdout.rstrip("\n").split("\n")
        assert len(lines) == 2  # one line per input text
        from modelforge.api import translate
        from modelforge.core.errors import ConfigError

        assert translate(run_dir, ["Amen."], beam_size=1) == translate(run_dir, ["Amen."], 1, 2.0)
        with pytest.raises(ConfigError, match="--beam"):
            translate(run_dir, ["Amen."], beam_size=0)
    else:
        key = "summary" if recipe == "bbc-headline" else "translation"
        out = modelforge.load(run_dir).predict(["The government said on Monday that taxes would rise."])
        assert len(out) == 1 and isinstance(out[0][key], str)
