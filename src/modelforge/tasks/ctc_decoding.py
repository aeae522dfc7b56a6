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

import math
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


# ---------------------------------------------------------------------------------------------------------------
# Prefix beam search


def _logaddexp(a: float, b: float) -> float:
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    high, low = (a, b) if a > b else (b, a)
    return high + math.log1p(math.exp(low - high))


def _extend(prefix: tuple[int, ...], node: _TrieNode | None, token: int, lexicon: Lexicon | None, space: int | None):
    """The trie node after appending ``token`` (None without a lexicon), or False when the lexicon forbids it."""
    if lexicon is None:
        return None
    if token == space:  # a space closes a word: only after a complete one
        return lexicon.root if prefix and prefix[-1] != space and node.is_word else False
    return node.children.get(token, False)


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
    ``[("", -inf)]``.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    array, _ = _as_batch(log_probs, None)
    frames = array[0].astype(np.float64)
    space = vocab.space
    # beam: prefix → [log P(prefix, ending in blank), log P(prefix, ending in its last token)]
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, _NEG_INF]}
    nodes: dict[tuple[int, ...], _TrieNode | None] = {(): lexicon.root if lexicon else None}
    for frame in frames:
        keep = np.flatnonzero(frame >= frame.max() + prune).tolist()
        lp = frame.tolist()
        following: dict[tuple[int, ...], list[float]] = {}
        for prefix, (p_blank, p_token) in beams.items():
            total = _logaddexp(p_blank, p_token)
            last = prefix[-1] if prefix else None
            for token in keep:
                if token == BLANK:
                    slot = following.setdefault(prefix, [_NEG_INF, _NEG_INF])
                    slot[0] = _logaddexp(slot[0], total + lp[token])
                    continue
                if token == last and p_token != _NEG_INF:  # a repeat with no blank between merges into the prefix
                    slot = following.setdefault(prefix, [_NEG_INF, _NEG_INF])
                    slot[1] = _logaddexp(slot[1], p_token + lp[token])
                # after the same token only a path through a blank starts a new character
                source = p_blank if token == last else total
                node = _extend(prefix, nodes[prefix], token, lexicon, space)
                if node is False or source == _NEG_INF:
                    continue
                grown = prefix + (token,)
                nodes.setdefault(grown, node)
                slot = following.setdefault(grown, [_NEG_INF, _NEG_INF])
                slot[1] = _logaddexp(slot[1], source + lp[token])
        ranked = sorted(following.items(), key=lambda item: (-_logaddexp(*item[1]), item[0]))
        beams = dict(ranked[:beam_width])
    return _finish(beams, nodes, vocab, lexicon, n_best)


def _finish(beams, nodes, vocab: CharVocab, lexicon: Lexicon | None, n_best: int) -> list[tuple[str, float]]:
    scored: dict[str, float] = {}
    for prefix, probs in beams.items():
        if lexicon is not None and prefix and prefix[-1] != vocab.space and not nodes[prefix].is_word:
            continue  # ends inside a word
        text = vocab.decode(prefix)
        scored[text] = _logaddexp(scored.get(text, _NEG_INF), _logaddexp(*probs))  # same text, other spacing
    if not scored:
        return [("", _NEG_INF)]
    return sorted(scored.items(), key=lambda item: (-item[1], item[0]))[:n_best]


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
