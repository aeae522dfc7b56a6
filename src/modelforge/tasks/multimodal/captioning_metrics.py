"""Caption metrics from the field's own implementations: corpus BLEU-4 from sacreBLEU and CIDEr from pycocoevalcap
(the COCO caption evaluation's ``Cider`` scorer, pure Python; no Java tokenizer).

Both score every output against all of its image's reference captions. Captions are compared as the COCO
evaluation's tokenizer leaves them — lower-cased words, punctuation dropped — so that a capital letter or a final
full stop in a user's reference does not count as a wrong word. CIDEr is reported ×1 (COCO papers print ×100);
its document frequencies come from the evaluated set's own references, as in the COCO evaluation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"\w+")


def normalise_caption(text: str) -> str:
    """Lower-cased words joined by single spaces, punctuation dropped (the pre-tokenized form both metrics read)."""
    return " ".join(_WORD.findall(text.lower()))


def caption_scores(references: Sequence[Sequence[str]], outputs: Sequence[str]) -> dict[str, float]:
    """``bleu4`` (sacreBLEU corpus BLEU, 0–100, several references per output) and ``cider`` (pycocoevalcap)."""
    from pycocoevalcap.cider.cider import Cider
    from sacrebleu.metrics import BLEU

    if len(references) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs but {len(references)} reference lists")
    if not outputs:
        return {"bleu4": 0.0, "cider": 0.0}
    refs = [[normalise_caption(r) for r in group] for group in references]
    hyps = [normalise_caption(o) for o in outputs]
    # sacreBLEU takes reference *streams*: stream k holds every output's k-th reference (None where it has fewer)
    streams = [[group[k] if k < len(group) else None for group in refs] for k in range(max(map(len, refs)))]
    bleu = BLEU(tokenize="none", max_ngram_order=4).corpus_score(hyps, streams).score
    gts = {i: group for i, group in enumerate(refs)}
    res = {i: [hyp or "<empty>"] for i, hyp in enumerate(hyps)}  # Cider asserts one non-empty list per image
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu), "cider": float(cider)}
