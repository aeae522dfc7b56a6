"""WordPiece training that gives the same vocabulary on every run.

The ``tokenizers`` trainer numbers the ``##`` continuation pieces (``##s``, ``##e`` …) in the iteration order of a
hash map that is seeded at random in every process (huggingface/tokenizers#1794), and those numbers break the ties
between equally frequent merges: the same texts gave a different vocabulary, and different token ids, from one run
to the next. Naming every continuation piece up front as a special token fixes its number before training; the
pieces are then turned back into plain vocabulary entries (special tokens would also be matched verbatim in text).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from tokenizers import Tokenizer, trainers

PREFIX = "##"


def continuation_pieces(backend: Tokenizer, texts: Iterable[str]) -> list[str]:
    """``##c`` for every character ``c`` that follows another inside a word of ``texts``, as the trainer splits them
    (the backend's normaliser and pre-tokeniser), sorted: exactly the pieces the trainer would create."""
    normalize = backend.normalizer.normalize_str if backend.normalizer is not None else str
    chunks: set[str] = set()
    for text in texts:  # whitespace-separated chunks first: the pre-tokeniser then sees each distinct one once
        chunks.update(normalize(text).split())
    characters: set[str] = set()
    for chunk in chunks:
        words = backend.pre_tokenizer.pre_tokenize_str(chunk) if backend.pre_tokenizer is not None else [(chunk, 0)]
        for word, _ in words:
            characters.update(word[1:])
    return [PREFIX + c for c in sorted(characters)]


def train_wordpiece(backend: Tokenizer, texts: Iterable[str], special_tokens: Sequence[str],
                    **options: Any) -> Tokenizer:
    """``backend`` (a WordPiece model with its normaliser and pre-tokeniser) trained on ``texts`` with
    ``trainers.WordPieceTrainer(special_tokens=…, **options)``, deterministically: a new Tokenizer (the pieces named
    up front are plain vocabulary entries again; only ``special_tokens`` stay special)."""
    texts = texts if isinstance(texts, (list, tuple)) else list(texts)  # read twice: pieces, then training
    pieces = continuation_pieces(backend, texts)
    backend.train_from_iterator(texts, trainers.WordPieceTrainer(special_tokens=[*special_tokens, *pieces],
                                                                 **options))
    layout = json.loads(backend.to_str())
    named = set(pieces)
    layout["added_tokens"] = [token for token in layout["added_tokens"] if token["content"] not in named]
    return Tokenizer.from_str(json.dumps(layout))
