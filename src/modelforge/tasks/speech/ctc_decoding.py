"""CTC decoding: a character vocabulary, greedy (best-path) decoding and prefix beam search.

Decoding works on per-frame log-probabilities ``(T, V)`` or a padded batch ``(B, T, V)`` with ``lengths``; token 0
is the CTC blank. Prefix beam search (Hannun et al. 2014, without a language model) scores a prefix by the sum over
all alignments that collapse to it, which is why it can beat best-path decoding. A lexicon restricts the output to
words of a list: a prefix may only grow along a character trie of those words, a space may only follow a complete
word, and a finished hypothesis must end on one.

Note: beam width 1 keeps the single most probable *prefix* each frame, which equals greedy decoding whenever each
frame's best token dominates (the usual case for a trained CTC model), but not on every contrived input.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from modelforge.core.errors import DataError

BLANK = 0
DEFAULT_CHARS = " abcdefghijklmnopqrstuvwxyz'"
_NEG_INF = float("-inf")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "-": " ", "_": " ", "/": " "})
_DROPPED_PUNCTUATION = set('.,!?;:"()[]{}')


class CharVocab:
    """Index ↔ character map for CTC: 0 is the blank, then the characters (default: space, a–z, apostrophe)."""

    def __init__(self, chars: str = DEFAULT_CHARS) -> None:
        if len(set(chars)) != len(chars):
            raise ValueError(f"vocabulary characters must be unique, got {chars!r}")
        self.chars = chars
        self.tokens = ["<blank>", *chars]
        self._index = {c: i for i, c in enumerate(self.tokens) if i != BLANK}
        self.blank = BLANK
        self.space = self._index.get(" ")

    def __len__(self) -> int:
        return len(self.tokens)

    def normalize(self, text: str) -> str:
        """Lower case, accents stripped, curly quotes → apostrophe, hyphens → spaces, sentence punctuation dropped."""
        text = unicodedata.normalize("NFKD", text.lower().translate(_APOSTROPHES))
        text = "".join(c for c in text if not unicodedata.combining(c) and c not in _DROPPED_PUNCTUATION)
        return " ".join(text.split())

    def encode(self, text: str, normalize: bool = True) -> list[int]:
        """Text → token ids (no blanks); DataError listing the characters the vocabulary lacks."""
        text = self.normalize(text) if normalize else text
        unknown = sorted({c for c in text if c not in self._index})
        if unknown:
            raise DataError(
                f"transcript {text[:60]!r} has characters outside the vocabulary: {''.join(unknown)!r}; spell "
                f"numbers and symbols out as words"
            )
        return [self._index[c] for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids → text: blanks dropped, whitespace collapsed (no CTC repeat collapsing: see ``ctc_collapse``)."""
        return " ".join("".join(self.tokens[i] for i in ids if i != BLANK).split())

    def to_json(self) -> dict:
        return {"type": "char", "chars": self.chars}

    @classmethod
    def from_json(cls, data: dict) -> CharVocab:
        return cls(data["chars"])


# ---------------------------------------------------------------------------------------------------------------
# Greedy


def ctc_collapse(ids: Sequence[int], blank: int = BLANK) -> list[int]:
    """Best-path post-processing: merge runs of the same token, then drop blanks (``aa-ab`` → ``aab``)."""
    out, previous = [], None
    for token in ids:
        if token != previous and token != blank:
            out.append(int(token))
        previous = token
    return out


def _as_batch(log_probs: torch.Tensor | np.ndarray, lengths) -> tuple[np.ndarray, list[int]]:
    array = log_probs.detach().float().cpu().numpy() if isinstance(log_probs, torch.Tensor) else np.asarray(log_probs)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"expected log-probs of shape (T, V) or (B, T, V), got {array.shape}")
    if lengths is None:
        sizes = [array.shape[1]] * array.shape[0]
    else:
        sizes = [int(n) for n in (lengths.tolist() if isinstance(lengths, torch.Tensor) else lengths)]
    return array, sizes


def greedy_decode(
    log_probs: torch.Tensor | np.ndarray, vocab: CharVocab, lengths: torch.Tensor | Sequence[int] | None = None
) -> list[str]:
    """Best path per utterance: argmax token per frame, repeats merged, blanks dropped. Returns one string a row."""
    array, sizes = _as_batch(log_probs, lengths)
    best = array.argmax(axis=-1)
    return [vocab.decode(ctc_collapse(best[b, : sizes[b]].tolist())) for b in range(len(sizes))]


# ---------------------------------------------------------------------------------------------------------------
# Lexicon


@dataclass
class _TrieNode:
    children: dict[int, _TrieNode] = field(default_factory=dict)
    is_word: bool = False
    allowed: np.ndarray | None = None  # (V,) bool: tokens that may follow here (letters of words, space after one)


class Lexicon:
    """A word list as a character trie over a ``CharVocab``'s ids; words are normalised like transcripts."""

    def __init__(self, words: Iterable[str], vocab: CharVocab) -> None:
        if vocab.space is None:
            raise ValueError("a lexicon needs a vocabulary with a space character between words")
        self.root = _TrieNode()
        self.words: set[str] = set()
        for raw in words:
            for word in vocab.normalize(raw).split():
                node = self.root
                for token in vocab.encode(word, normalize=False):
                    node = node.children.setdefault(token, _TrieNode())
                node.is_word = True
                self.words.add(word)
        if not self.words:
            raise DataError("the lexicon is empty; give at least one word")
        stack = [self.root]
        while stack:
            node = stack.pop()
            node.allowed = np.zeros(len(vocab), dtype=bool)
            node.allowed[list(node.children)] = True
            node.allowed[vocab.space] = node.is_word  # a space may only close a complete word
            stack.extend(node.children.values())

    def step(self, node: _TrieNode, token: int, space: int) -> _TrieNode:
        return self.root if token == space else node.children[token]


# ---------------------------------------------------------------------------------------------------------------
# Prefix beam search


def prefix_beam_search(
    log_probs: torch.Tensor | np.ndarray,
    vocab: CharVocab,
    beam_width: int = 8,
    lexicon: Lexicon | None = None,
    prune: float = -12.0,
    n_best: int = 1,
) -> list[tuple[str, float]]:
    """CTC prefix beam search over ``(T, V)`` log-probs → up to ``n_best`` (text, log-probability), best first.

    ``prune``: tokens more than this many nats below the frame's best are not tried (the frame's best always is).
    With a lexicon, hypotheses that do not end on a complete word are dropped; if none is left the result is
    ``[("", -inf)]``. With an unbounded beam and no pruning the scores are the exact CTC label probabilities.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    array, _ = _as_batch(log_probs, None)
    # a beam: prefixes, log P(prefix, path ends in blank), log P(prefix, path ends in the prefix's last token)
    prefixes: list[tuple[int, ...]] = [()]
    p_blank, p_token = np.zeros(1), np.full(1, _NEG_INF)
    nodes: dict[tuple[int, ...], _TrieNode | None] = {(): lexicon.root if lexicon else None}
    for frame in array[0].astype(np.float64):
        prefixes, p_blank, p_token = _beam_step(prefixes, p_blank, p_token, frame, nodes, lexicon, vocab.space,
                                                beam_width, prune)
    return _finish(prefixes, np.logaddexp(p_blank, p_token), nodes, vocab, lexicon, n_best)


def _beam_step(prefixes, p_blank, p_token, frame, nodes, lexicon, space, beam_width, prune):
    """One frame: every beam either stays (blank, or its last token repeated) or grows by one token."""
    with np.errstate(invalid="ignore"):  # -inf - -inf never reaches a kept score
        total = np.logaddexp(p_blank, p_token)
        last = np.array([p[-1] if p else -1 for p in prefixes])
        ends = last >= 0
        stay_blank = total + frame[BLANK]
        stay_token = np.where(ends, p_token + frame[np.maximum(last, 0)], _NEG_INF)
        # growing by the token it ends with needs a blank in between, so only paths ending in blank count
        source = np.repeat(total[:, None], len(frame), axis=1)
        source[np.flatnonzero(ends), last[ends]] = p_blank[ends]
        grow = source + frame[None, :]
    grow[:, BLANK] = _NEG_INF
    grow[:, frame < frame.max() + prune] = _NEG_INF
    if lexicon is not None:
        grow[~np.stack([nodes[p].allowed for p in prefixes])] = _NEG_INF
    index = {p: i for i, p in enumerate(prefixes)}
    for j, prefix in enumerate(prefixes):  # growth that lands on a prefix already in the beam merges into it
        i = index.get(prefix[:-1]) if prefix else None
        if i is not None and grow[i, prefix[-1]] > _NEG_INF:
            stay_token[j] = np.logaddexp(stay_token[j], grow[i, prefix[-1]])
            grow[i, prefix[-1]] = _NEG_INF
    # a new prefix has a single parent, so only the beam_width best growths can survive this frame
    flat = grow.ravel()
    finite = np.flatnonzero(flat > _NEG_INF)
    if len(finite) > beam_width:
        finite = finite[np.argpartition(-flat[finite], beam_width - 1)[:beam_width]]
    pool = [(prefixes[j], stay_blank[j], stay_token[j]) for j in range(len(prefixes))]
    for flat_index in finite.tolist():
        i, token = divmod(flat_index, len(frame))
        grown = prefixes[i] + (token,)
        if lexicon is not None:
            nodes.setdefault(grown, lexicon.step(nodes[prefixes[i]], token, space))
        pool.append((grown, _NEG_INF, flat[flat_index]))
    pool = [entry for entry in pool if np.logaddexp(entry[1], entry[2]) > _NEG_INF]
    pool.sort(key=lambda entry: (-np.logaddexp(entry[1], entry[2]), entry[0]))
    kept = pool[:beam_width]
    return [e[0] for e in kept], np.array([e[1] for e in kept]), np.array([e[2] for e in kept])


def _finish(prefixes, scores, nodes, vocab: CharVocab, lexicon, n_best: int) -> list[tuple[str, float]]:
    merged: dict[str, float] = {}
    for prefix, score in zip(prefixes, scores.tolist(), strict=True):
        if lexicon is not None and prefix and prefix[-1] != vocab.space and not nodes[prefix].is_word:
            continue  # ends inside a word
        text = vocab.decode(prefix)
        merged[text] = float(np.logaddexp(merged.get(text, _NEG_INF), score))  # same text, other spacing
    if not merged:
        return [("", _NEG_INF)]
    return sorted(merged.items(), key=lambda item: (-item[1], item[0]))[:n_best]


def beam_decode(
    log_probs: torch.Tensor | np.ndarray,
    vocab: CharVocab,
    lengths: torch.Tensor | Sequence[int] | None = None,
    beam_width: int = 8,
    lexicon: Lexicon | None = None,
    prune: float = -12.0,
) -> list[str]:
    """Prefix beam search for each utterance of ``(B, T, V)`` (or ``(T, V)``) log-probs; one string a row."""
    array, sizes = _as_batch(log_probs, lengths)
    return [
        prefix_beam_search(array[b, : sizes[b]], vocab, beam_width, lexicon, prune)[0][0] for b in range(len(sizes))
    ]


def decode(
    log_probs: torch.Tensor | np.ndarray,
    vocab: CharVocab,
    lengths: torch.Tensor | Sequence[int] | None = None,
    method: str = "greedy",
    beam_width: int = 8,
    lexicon: Lexicon | None = None,
) -> list[str]:
    """Dispatch by ``method`` ('greedy' or 'beam'), the decoding policy a task exposes in its config."""
    if method == "greedy":
        return greedy_decode(log_probs, vocab, lengths)
    if method == "beam":
        return beam_decode(log_probs, vocab, lengths, beam_width, lexicon)
    raise ValueError(f"unknown CTC decoding method {method!r}; choose 'greedy' or 'beam'")
