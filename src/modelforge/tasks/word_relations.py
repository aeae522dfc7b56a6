"""The word-relation evaluation of word embeddings: related pairs and 3CosAdd analogies, scored as accuracy.

File format (TSV, ``#`` starts a comment): ``corpus<TAB>kind<TAB>words<TAB>note`` where corpus is ``shakespeare``,
``bible`` or ``both`` (which built-in corpora the item was checked against), kind is ``pair`` (two words) or
``analogy`` (four words, a:b::c:d), and words are separated by spaces. The package ships
``data/eval/word_relations.tsv``.

Scoring, with top-k neighbours by cosine similarity (the query words themselves excluded):
- pair (a, b): a hit when b is among a's k nearest words or a among b's — the relation is symmetric, and a rare
  name's neighbourhood is the more telling side;
- analogy a:b::c:d: 3CosAdd (Mikolov et al. 2013), the words nearest to unit(b) − unit(a) + unit(c) excluding a, b
  and c; a hit at k when d is among the k best, and ``analogy_top1`` the stricter standard figure.
Items with a word outside the vocabulary are skipped and counted, never scored as misses.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from modelforge.core.errors import DataError

BUILTIN = "builtin"
_WORDS = {"pair": 2, "analogy": 4}


@dataclass(frozen=True)
class Relation:
    corpus: str
    kind: str
    words: tuple[str, ...]


def read_relations(source: str) -> list[Relation]:
    """Parse a relation file (``builtin`` = the packaged one); a malformed line is an error naming file and line."""
    if source == BUILTIN:
        text = resources.files("modelforge").joinpath("data/eval/word_relations.tsv").read_text(encoding="utf-8")
        name = "word_relations.tsv"
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(f"{path}: relation file not found (data.relations); give a TSV or 'builtin'")
        text, name = path.read_text(encoding="utf-8"), str(path)
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 3:
            raise DataError(f"{name}:{number}: expected 'corpus<TAB>kind<TAB>words[<TAB>note]', got {line[:60]!r}")
        corpus, kind, words = parts[0].strip(), parts[1].strip(), tuple(parts[2].lower().split())
        if kind not in _WORDS:
            raise DataError(f"{name}:{number}: kind {kind!r} is not one of {', '.join(_WORDS)}")
        if len(words) != _WORDS[kind]:
            raise DataError(f"{name}:{number}: {kind} needs {_WORDS[kind]} words, got {len(words)}: {words}")
        items.append(Relation(corpus, kind, words))
    return items


def for_corpus(items: list[Relation], corpus: str | None) -> list[Relation]:
    """Items checked against ``corpus`` (plus those marked ``both``); None keeps every item (user corpora)."""
    return items if corpus is None else [r for r in items if r.corpus in (corpus, "both")]


@torch.no_grad()
def score_relations(vectors: torch.Tensor, index: dict[str, int], items: list[Relation], k: int) -> dict[str, Any]:
    """Accuracies over the in-vocabulary items (see the module docstring); counts of scored and skipped items."""
    known = [r for r in items if all(w in index for w in r.words)]
    metrics: dict[str, Any] = {"relations_scored": len(known), "relations_skipped": len(items) - len(known)}
    if not known:
        return metrics
    unit = F.normalize(vectors.float(), dim=-1)
    k = min(k, len(index) - 4)

    def top(queries: torch.Tensor, banned: torch.Tensor) -> torch.Tensor:
        sims = (queries @ unit.T).scatter(1, banned, float("-inf"))
        return sims.topk(k, dim=-1).indices

    hits = {"pair": [], "analogy": []}
    pairs = torch.tensor([[index[w] for w in r.words] for r in known if r.kind == "pair"]).reshape(-1, 2)
    if len(pairs):
        a, b = pairs[:, 0], pairs[:, 1]
        a_side = (top(unit[a], a[:, None]) == b[:, None]).any(1)
        b_side = (top(unit[b], b[:, None]) == a[:, None]).any(1)
        hits["pair"] = (a_side | b_side).tolist()
    quads = torch.tensor([[index[w] for w in r.words] for r in known if r.kind == "analogy"]).reshape(-1, 4)
    top1 = []
    if len(quads):
        target = unit[quads[:, 1]] - unit[quads[:, 0]] + unit[quads[:, 2]]
        best = top(F.normalize(target, dim=-1), quads[:, :3])
        hits["analogy"] = (best == quads[:, 3:]).any(1).tolist()
        top1 = (best[:, 0] == quads[:, 3]).tolist()
    everything = hits["pair"] + hits["analogy"]
    metrics["relation_accuracy"] = sum(everything) / len(everything)
    for kind, found in hits.items():
        if found:
            metrics[f"{kind}_accuracy"] = sum(found) / len(found)
    if top1:
        metrics["analogy_top1"] = sum(top1) / len(top1)
    return metrics
