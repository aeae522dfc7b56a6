"""Summarization: article → short summary with the same encoder–decoder machinery as translation.

``bbc-headline`` generates the headline (first line) of a BBC News article from its body (the fixed 80/10/10 hash
split of ``data/builtin/bbc_news.py``); the body is truncated to ``max_source_tokens``. ``parallel`` takes the user's
``article<TAB>summary`` TSV or line-aligned files, as translation does.

Metrics are ROUGE-1/2/L F-measures (×100, Porter stemming) from the ``rouge-score`` library, and in the same
evaluation the same scores of the lead baseline — the first sentence of the source — so every run says whether the
model beats simply copying the lead (``lead_rouge1`` …).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field

from modelforge.core.registry import register
from modelforge.data.split_config import TestFraction, ValFraction
from modelforge.tasks.seq2seq.translation import (
    Pairs,
    Seq2SeqDataConfig,
    Translation,
    load_parallel_splits,
    split_fractions,
)

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
# Up to the first ., ! or ? (with any closing quotes/brackets) that is followed by a capital or digit, or the end.
_FIRST_SENTENCE = re.compile(r".*?[.!?][\"')\]]*(?=\s+[\"'(\[]?[A-Z0-9]|$)")


class SummarizationDataConfig(Seq2SeqDataConfig):
    source: Literal["bbc-headline", "parallel"] = "bbc-headline"
    val_fraction: ValFraction = 0.1  # BBC: a fixed split
    test_fraction: TestFraction = 0.1
    max_source_tokens: int = Field(400, ge=2, description="article tokens kept (the rest is cut)")
    max_target_tokens: int = Field(32, ge=3, description="summary tokens kept, <bos>/<eos> included")
    val_limit: int | None = Field(None, ge=1, description="evaluate on N evenly spaced validation items")


def lead_sentence(text: str) -> str:
    """The first sentence: up to the first ., ! or ? followed by space and a capital/digit (or the whole text)."""
    text = " ".join(text.split())
    match = _FIRST_SENTENCE.match(text)
    return match.group(0) if match else text


def rouge_scores(references: list[str], outputs: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure ×100 over the pairs, computed by ``rouge_score``."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for reference, output in zip(references, outputs, strict=True):
        scores = scorer.score(reference, output)
        for kind in ROUGE_TYPES:
            totals[kind] += scores[kind].fmeasure
    count = max(len(references), 1)
    return {kind: 100.0 * total / count for kind, total in totals.items()}


@register("task", "summarization")
class Summarization(Translation):
    """Summarize text with an encoder–decoder (BBC News body → headline, or your TSV); ROUGE vs the lead baseline."""

    name = "summarization"
    DataConfig = SummarizationDataConfig
    output_key = "summary"

    def load_pairs(self) -> dict[str, Pairs]:
        cfg = self.data_cfg
        if cfg.source == "parallel":
            return load_parallel_splits(cfg)
        from modelforge.data.builtin.bbc_news import load_bbc_news

        splits = load_bbc_news(split_fractions(cfg), cfg.split_seed)
        # Paragraph breaks carry no meaning for the model; one line per article keeps the BPE corpus uniform.
        return {name: ([" ".join(a.body.split()) for a in articles], [a.title for a in articles])
                for name, articles in splits.items()}

    def text_metrics(self, sources: list[str], references: list[str], outputs: list[str]) -> dict[str, Any]:
        metrics = rouge_scores(references, outputs)
        lead = rouge_scores(references, [lead_sentence(s) for s in sources])
        metrics.update({f"lead_{k}": v for k, v in lead.items()})
        return metrics
