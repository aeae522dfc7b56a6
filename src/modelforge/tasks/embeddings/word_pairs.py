"""word2vec data policy: word tokens, the vocabulary, frequent-word subsampling, dynamic windows, noise words.

Everything here is NumPy over id arrays and seeded by the caller, so a run's training pairs are a pure function of
(corpus, config, seed): the Trainer's resume rebuilds exactly the same pairs and only has to skip the batches it
already consumed.

Choices follow word2vec.c (Mikolov et al. 2013): words below ``min_count`` are dropped from the stream (not mapped to
an unknown token); subsampling removes a word with the probability of word2vec.c's formula *before* windows are
formed, so windows reach past removed words; each centre word draws a window radius uniformly from 1..window, so
near words are paired more often than far ones; negatives come from the unigram distribution raised to 0.75.
Skip-gram pairs the centre with each context word (``skipgram_pairs``); CBOW keeps a centre's whole window as one
example (``cbow_windows``), whose mean input vector predicts the centre. Unlike word2vec.c, the subsampled stream
and the radii are drawn once per run rather than once per epoch: the examples then form one fixed in-memory tensor
that the Trainer shuffles each epoch.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from modelforge.core.errors import DataError

# Letters with inner apostrophes ("o'er", "king's"); digits and underscores are not words. A leading apostrophe
# ("'tis") is dropped, so "'tis" and "tis" are one word.
WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
_SEGMENT_BREAK = re.compile(r"\n\s*\n")  # windows never cross a blank line (a speech, a paragraph, a document)


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """The words of ``text`` in order (lower-cased unless told otherwise)."""
    return WORD.findall(text.lower() if lowercase else text)


def segments(text: str, lowercase: bool = True) -> list[list[str]]:
    """The words of each blank-line-separated block; empty blocks are left out."""
    return [words for block in _SEGMENT_BREAK.split(text) if (words := tokenize(block, lowercase))]


@dataclass
class Vocabulary:
    """Words in id order (most frequent first, ties alphabetical) and their training-corpus counts."""

    words: list[str]
    counts: list[int]

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def build(cls, words: Counter[str], min_count: int, max_size: int | None = None) -> Vocabulary:
        kept = sorted(((w, c) for w, c in words.items() if c >= min_count), key=lambda wc: (-wc[1], wc[0]))
        if max_size:
            kept = kept[:max_size]
        if len(kept) < 2:
            raise DataError(
                f"only {len(kept)} distinct word(s) occur at least data.min_count={min_count} times; "
                "give a larger corpus or lower data.min_count"
            )
        return cls([w for w, _ in kept], [c for _, c in kept])

    def encode(self, words: list[str]) -> np.ndarray:
        """Ids of the in-vocabulary words (out-of-vocabulary words are dropped, as word2vec does)."""
        return np.fromiter((i for w in words if (i := self.index.get(w)) is not None), dtype=np.int64)

    def to_tsv(self) -> str:
        return "".join(f"{w}\t{c}\n" for w, c in zip(self.words, self.counts))

    @classmethod
    def from_tsv(cls, text: str, source: str) -> Vocabulary:
        words, counts = [], []
        for number, line in enumerate(text.splitlines(), 1):
            parts = line.split("\t")
            if len(parts) != 2 or not parts[1].isdigit():
                raise DataError(f"{source}:{number}: expected 'word<TAB>count', got {line[:60]!r}")
            words.append(parts[0])
            counts.append(int(parts[1]))
        return cls(words, counts)


def keep_probabilities(counts: np.ndarray, threshold: float) -> np.ndarray:
    """word2vec.c's chance of keeping each word: (sqrt(f/t) + 1)·t/f for frequency f, capped at 1; t=0 keeps all."""
    if threshold <= 0:
        return np.ones(len(counts))
    freq = counts / counts.sum()
    return np.minimum(1.0, (np.sqrt(freq / threshold) + 1) * threshold / freq)


def subsample(ids: np.ndarray, keep: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask over ``ids``: which tokens survive subsampling."""
    return rng.random(len(ids)) < keep[ids]


def skipgram_pairs(ids: np.ndarray, segment: np.ndarray, window: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(centre, context) id pairs with dynamic windows: centre ``i`` draws a radius r in 1..window and pairs with
    every word at distance ≤ r in the same segment. Both arrays are in stream order of the centre, then offset."""
    n = len(ids)
    radius = rng.integers(1, window + 1, size=n)
    centres, contexts = [], []
    for offset in range(1, min(window, n - 1) + 1):
        left, right = np.arange(n - offset), np.arange(offset, n)
        same = segment[left] == segment[right]
        forward = same & (radius[left] >= offset)  # centre left, context right
        backward = same & (radius[right] >= offset)  # centre right, context left
        centres += [ids[left[forward]], ids[right[backward]]]
        contexts += [ids[right[forward]], ids[left[backward]]]
    if not centres:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(centres), np.concatenate(contexts)


def cbow_windows(ids: np.ndarray, segment: np.ndarray, window: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CBOW examples with dynamic windows: ``(contexts (n, 2·window), mask (n, 2·window), centres (n,))``.

    Centre ``i`` draws a radius r in 1..window (as in ``skipgram_pairs``); its context is every word at distance
    ≤ r in the same segment. Column j holds the word at offset ``-window … -1, 1 … window`` (j-th of those) from the
    centre, or id 0 where ``mask`` is False (outside the radius, the stream or the segment). Centres without any
    context word (a one-word segment) are dropped. Rows are in stream order of the centre.
    """
    n = len(ids)
    radius = rng.integers(1, window + 1, size=n)
    offsets = np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])
    position = np.arange(n)[:, None] + offsets  # (n, 2·window) stream positions of the context slots
    inside = (position >= 0) & (position < n)
    position = np.clip(position, 0, max(n - 1, 0))  # out-of-stream slots read a real word, then get masked
    mask = inside & (segment[position] == segment[:, None]) & (np.abs(offsets) <= radius[:, None])
    contexts = np.where(mask, ids[position], 0).astype(np.int64)
    keep = mask.any(axis=1)
    return contexts[keep], mask[keep], ids[keep].astype(np.int64)


def noise_distribution(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
    """Negative-sampling probabilities: unigram counts ** power, normalised."""
    weights = np.asarray(counts, dtype=np.float64) ** power
    return weights / weights.sum()


def subsampled_stream(words_by_segment: list[list[str]], vocab: Vocabulary, threshold: float,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Encode a list of segments and subsample it: the kept ids and the segment number of each (both in order)."""
    encoded = [vocab.encode(words) for words in words_by_segment]
    encoded = [e for e in encoded if len(e)]
    if not encoded:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ids = np.concatenate(encoded)
    segment = np.repeat(np.arange(len(encoded)), [len(e) for e in encoded])
    mask = subsample(ids, keep_probabilities(np.asarray(vocab.counts, dtype=np.float64), threshold), rng)
    return ids[mask], segment[mask]


def corpus_pairs(words_by_segment: list[list[str]], vocab: Vocabulary, window: int, threshold: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Encode, subsample and pair a list of segments: (centres, contexts, tokens kept after subsampling)."""
    ids, segment = subsampled_stream(words_by_segment, vocab, threshold, rng)
    centres, contexts = skipgram_pairs(ids, segment, window, rng)
    return centres, contexts, len(ids)


def corpus_windows(words_by_segment: list[list[str]], vocab: Vocabulary, window: int, threshold: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Encode, subsample and cut CBOW windows from a list of segments: (contexts, mask, centres, tokens kept)."""
    ids, segment = subsampled_stream(words_by_segment, vocab, threshold, rng)
    contexts, mask, centres = cbow_windows(ids, segment, window, rng)
    return contexts, mask, centres, len(ids)
