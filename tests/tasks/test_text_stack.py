"""The text classifier's stack method (frozen MiniLM embedding + in-graph TF-IDF → logistic regression) and the
automatic method choice: the TF-IDF equals scikit-learn's on the same tokens, ``model.method=auto`` picks the stack
for long texts and fine-tuning for short ones and says so, and a stack run predicts, serves and exports to ONNX
with the same logits."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import yaml
from fastapi.testclient import TestClient
from sklearn.feature_extraction.text import TfidfVectorizer

from modelforge.models.text_stack import InGraphTfidf
from modelforge.tasks import get_task
from modelforge.tasks.recipes import load_recipe

GOOD = "bright clever warm joyful generous honest gentle brave kind lively".split()
BAD = "cruel bitter lazy rude greedy gloomy harsh dull selfish angry".split()
FILLER = "the people in our town said that this plan for new roads and schools was".split()


def _table(path, rows: int, words: int, seed: int = 0):
    """A CSV of ``rows`` texts of ``words`` words each, labelled by which adjective list they draw from."""
    rng = np.random.default_rng(seed)
    lines = ["text,label"]
    for i in range(rows):
        label, pool = ("good", GOOD) if i % 2 else ("bad", BAD)
        lines.append(" ".join(rng.choice(pool + FILLER, words)) + f",{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_in_graph_tfidf_is_scikit_learns_tfidf_of_the_same_tokens():
    tfidf = InGraphTfidf(vocab_size=10, pair_buckets=7, ignored_ids=[0, 1])  # 0: padding, 1: a [CLS]-like id
    ids = torch.tensor([[1, 3, 4, 3, 4, 5, 0], [1, 3, 6, 3, 0, 0, 0], [1, 7, 7, 7, 8, 0, 0]])
    mask = (ids != 0).long()
    assert tfidf.fit_idf([(ids, mask)]) == 12
    # hand-checked: unigram 3 is in 2 of the 3 rows → smooth idf ln(4/3) + 1; unigram 9 in none → 0 (not a feature)
    assert tfidf.idf[3].item() == pytest.approx(np.log(4 / 3) + 1) and tfidf.idf[9].item() == 0
    buckets, weights = tfidf(ids, mask)
    ours = torch.zeros(3, tfidf.size, dtype=torch.float64).scatter_add_(1, buckets, weights.double())
    # the same tokens (unigram ids and hashed pair buckets, as strings) through scikit-learn
    docs = []
    for row, kept in zip(*tfidf.buckets(ids, mask)):
        docs.append([str(int(b)) for b in row[kept]])
    assert docs[2] == ["7", "7", "7", "8", *docs[2][4:]] and len(docs[2]) == 7  # [CLS] and padding never count
    vectorizer = TfidfVectorizer(analyzer=lambda doc: doc, sublinear_tf=True).fit(docs)
    theirs = np.zeros((3, tfidf.size))
    theirs[:, [int(token) for token in vectorizer.get_feature_names_out()]] = vectorizer.transform(docs).toarray()
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-6)
    # row 3 by hand: unigram 7 three times, 8 once, pair bucket 10 twice (also in row 1), pair bucket 11 once
    rare, common = np.log(4 / 2) + 1, np.log(4 / 3) + 1
    values = {7: (1 + np.log(3)) * rare, 8: rare, 10: (1 + np.log(2)) * common, 11: rare}
    norm = np.sqrt(sum(v * v for v in values.values()))
    assert {b: round(ours[2, b].item(), 6) for b in values} == {b: round(v / norm, 6) for b, v in values.items()}


@pytest.mark.parametrize(("words", "method"), [(250, "stack"), (6, "finetune")])
def test_auto_picks_the_stack_for_long_texts_and_fine_tuning_for_short_ones(tmp_path, words, method):
    path = _table(tmp_path / "notes.csv", 30, words)
    task = get_task("text_classification")(load_recipe("text-classifier", [f"data.path={path}"]))
    summary = task.datasets().summary
    assert summary["method"]["method"] == method
    assert task.recipe.model.method == method  # what recipe.yaml records
    assert task.recipe.model.name == ("text_stack" if method == "stack" else "encoder_classifier")
    budget = "over the 300k budget" if method == "stack" else "within the 300k budget"
    assert re.search(f" · method {method} \\(auto: (\\d+) rows × \\d+ tokens: fine-tuning would process \\d+k token "
                     f"positions, {budget}\\) · train \\1 ", summary["found"]), summary["found"]


@pytest.mark.parametrize(("rows", "max_length", "method", "tokens"), [
    (540, 43, "finetune", 102 * 16 * 43),  # Rotten Tomatoes snippets: fine-tuning won (75.2 % vs the stack's 70.8 %)
    (769, 256, "stack", 147 * 16 * 256),  # the debates: the stack won (75.3 % vs 69.7 % in 15.6 CPU-minutes)
    (1080, 256, "stack", 204 * 16 * 256),  # BBC News: the stack won (98.5 %); fine-tuning was over the CPU bar
    (30, 256, "stack", 100 * 16 * 256),  # a few long rows: train.min_steps makes fine-tuning cost 100 steps
])
def test_auto_follows_the_measured_tables(rows, max_length, method, tokens):
    from modelforge.tasks.text.text_method import choose_method

    train = load_recipe("text-classifier", ["data.path=t.csv"]).train
    choice = choose_method("auto", "encoder_classifier", True, train, rows, max_length)
    assert (choice.method, choice.finetune_tokens) == (method, tokens)
    assert choose_method("auto", "encoder_classifier", True, train, rows, max_length, "adapter").method == "finetune"
    assert choose_method("auto", "hf", True, train, rows, max_length).method == "finetune"
    assert choose_method("auto", "encoder_classifier", False, train, rows, max_length).method == "finetune"


def test_method_is_checked_at_the_edge(tmp_path):
    from modelforge.core.errors import ConfigError

    path = _table(tmp_path / "notes.csv", 30, 6)
    with pytest.raises(ConfigError, match="valid: auto, finetune, stack"):
        load_recipe("text-classifier", [f"data.path={path}", "model.method=boost"])
    with pytest.raises(ConfigError, match="takes no such method|trains with no such method"):
        load_recipe("mnist-cnn", ["model.method=stack"])
    recipe = load_recipe("text-classifier", [f"data.path={path}", "model.method=stack", "data.init_encoder=null"])
    with pytest.raises(ConfigError, match="needs a pretrained encoder"):
        get_task("text_classification")(recipe).datasets()
    recipe = load_recipe("text-classifier", [f"data.path={path}", "model.method=stack", "adapter.r=4"])
    with pytest.raises(ConfigError, match="takes no adapter section"):
        get_task("text_classification")(recipe).datasets()


@pytest.fixture(scope="module")
def stack_run(tmp_path_factory, cli):
    root = tmp_path_factory.mktemp("stack")
    train, test = _table(root / "train.csv", 40, 60), _table(root / "test.csv", 12, 60, seed=1)
    # 60-word texts keep the encoder's work small; 400 planned steps put fine-tuning over the budget all the same
    result = cli("train", "text-classifier", f"data.path={train}", f"data.test_path={test}", "train.min_steps=400",
                 "train.progress=off", "--run-dir", str(root / "run"))
    assert result.returncode == 0, result.stderr
    return root / "run", result.stdout


def test_a_stack_run_says_what_it_chose_and_records_it(stack_run):
    run, stdout = stack_run
    results = json.loads((run / "results.json").read_text())
    found = results["summary"]["data"]["found"]
    assert "method stack (auto: 30 rows × " in found and found in stdout
    assert "fitted without gradient steps: stack (frozen encoder + TF-IDF) by logistic regression, C=" in stdout
    assert results["summary"]["fitted"]["C"] in (0.01, 0.1, 1.0, 10.0, 100.0)
    assert results["metrics"]["test_accuracy"] >= 0.9  # the adjectives separate the classes
    saved = yaml.safe_load((run / "recipe.yaml").read_text())["model"]
    assert saved["name"] == "text_stack" and saved["method"] == "stack" and "dropout" not in saved


def test_a_stack_run_predicts_serves_and_exports_the_same_logits(stack_run):
    import onnxruntime

    from modelforge.api import load
    from modelforge.artifacts.export import export_onnx
    from modelforge.models.layers.masks import length_mask
    from modelforge.serve.app import ServeSettings, create_app

    run, _ = stack_run
    predictor = load(run)
    texts = [" ".join(GOOD[:5] + FILLER * 3), "rude and " * 20 + "selfish", "gloomy"]
    predicted = predictor.predict(texts)
    assert [p["label"] for p in predicted] == ["good", "bad", "bad"]
    with TestClient(create_app([run], ServeSettings())) as client:
        response = client.post(f"/models/{run.name}/predict", json={"inputs": texts})
    assert response.status_code == 200 and response.json()["predictions"] == predicted

    target = export_onnx(run, output=run / "stack.onnx").path
    ids, lengths = predictor.task.preprocess(texts)  # padded to the longest text, unlike the traced example
    mask = length_mask(lengths, ids.shape[1])
    with torch.no_grad():
        expected = predictor.model(ids, mask).numpy()
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)
