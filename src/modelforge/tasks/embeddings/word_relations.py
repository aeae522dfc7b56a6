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


@dataclass(frozen=True)
class RelationHit:
    """One scored item: ``found`` within the top k, ``top1`` (analogies: d is the best answer; pairs: = found),
    and ``nearest``: the ranked words the verdict was read from (a's neighbours, or the analogy's answers)."""

    relation: Relation
    found: bool
    top1: bool
    nearest: list[int]


@torch.no_grad()
def relation_hits(vectors: torch.Tensor, index: dict[str, int], items: list[Relation], k: int) -> list[RelationHit]:
    """Each in-vocabulary item of ``items``, in order, scored as the module docstring says."""
    known = [r for r in items if all(w in index for w in r.words)]
    if not known:
        return []
    unit = F.normalize(vectors.float(), dim=-1)
    k = min(k, len(index) - 4)

    def top(query: torch.Tensor, banned: list[int]) -> list[int]:
        sims = (query @ unit.T).index_fill(0, torch.tensor(banned), float("-inf"))
        return sims.topk(k).indices.tolist()

    hits = []
    for relation in known:
        ids = [index[w] for w in relation.words]
        if relation.kind == "pair":
            a, b = ids
            near_a = top(unit[a], [a])
            found = b in near_a or a in top(unit[b], [b])
            hits.append(RelationHit(relation, found, found, near_a))
        else:
            a, b, c, d = ids
            answers = top(F.normalize(unit[b] - unit[a] + unit[c], dim=-1), [a, b, c])
            hits.append(RelationHit(relation, d in answers, answers[0] == d, answers))
    return hits


def score_relations(vectors: torch.Tensor, index: dict[str, int], items: list[Relation], k: int) -> dict[str, Any]:
    """Accuracies over the in-vocabulary items (see the module docstring); counts of scored and skipped items."""
    hits = relation_hits(vectors, index, items, k)
    metrics: dict[str, Any] = {"relations_scored": len(hits), "relations_skipped": len(items) - len(hits)}
    if not hits:
        return metrics
    metrics["relation_accuracy"] = sum(h.found for h in hits) / len(hits)
    for kind in ("pair", "analogy"):
        found = [h.found for h in hits if h.relation.kind == kind]
        if found:
            metrics[f"{kind}_accuracy"] = sum(found) / len(found)
    top1 = [h.top1 for h in hits if h.relation.kind == "analogy"]
    if top1:
        metrics["analogy_top1"] = sum(top1) / len(top1)
    return metrics
