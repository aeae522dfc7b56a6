"""Summarization: ROUGE comes from rouge_score, the lead baseline is the first sentence, both in one evaluation."""

import pytest
from rouge_score import rouge_scorer

from modelforge.tasks.recipes import load_recipe
from modelforge.tasks.seq2seq.summarization import Summarization, lead_sentence, rouge_scores

REFERENCE = "Shares in the bank fell sharply after profit warning"
OUTPUT = "Bank shares fall after a profit warning"


def test_rouge_values_are_rouge_scores_own():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = scorer.score(REFERENCE, OUTPUT)
    ours = rouge_scores([REFERENCE], [OUTPUT])
    for kind in ("rouge1", "rouge2", "rougeL"):
        assert ours[kind] == pytest.approx(100 * expected[kind].fmeasure)
    assert 10 < ours["rouge1"] < 90  # a real partial overlap, not 0 or 100


def test_lead_sentence_is_the_first_sentence():
    body = "The firm said profits rose 5%. It expects more. Mr. Smith agreed."
    assert lead_sentence(body) == "The firm said profits rose 5%."
    assert lead_sentence("  One line   without a stop ") == "One line without a stop"
    assert lead_sentence('He said "No." Then he left.') == 'He said "No."'


def test_metrics_put_the_model_next_to_the_lead_baseline():
    recipe = load_recipe({"name": "s", "task": "summarization",
                          "model": {"name": "transformer_seq2seq_small"}})
    task = Summarization(recipe)
    sources = [f"{REFERENCE}. The rest of the article follows here.", "Nothing in common at all. Really."]
    references = [REFERENCE, "Completely different headline"]
    metrics = task.text_metrics(sources, references, [OUTPUT, "Completely different headline"])
    assert set(metrics) == {"rouge1", "rouge2", "rougeL", "lead_rouge1", "lead_rouge2", "lead_rougeL"}
    leads = [REFERENCE + ".", "Nothing in common at all."]
    assert metrics["lead_rouge1"] == pytest.approx(rouge_scores(references, leads)["rouge1"])
    assert metrics["rouge1"] != metrics["lead_rouge1"]
