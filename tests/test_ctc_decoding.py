import itertools
import math

import numpy as np
import pytest
import torch

from modelforge.core.errors import DataError
from modelforge.tasks.speech.ctc_decoding import (
    CharVocab,
    Lexicon,
    beam_decode,
    ctc_collapse,
    decode,
    greedy_decode,
    prefix_beam_search,
)

VOCAB = CharVocab()


def frames_for(tokens: list[str], peak: float = 6.0, second: dict | None = None, vocab: CharVocab = VOCAB):
    """(T, V) log-probs whose per-frame argmax is the given token ('-' = blank); ``second`` adds runner-ups."""
    logits = np.zeros((len(tokens), len(vocab)))
    for t, token in enumerate(tokens):
        logits[t, 0 if token == "-" else vocab.tokens.index(token)] = peak
    for t, (token, value) in (second or {}).items():
        logits[t, vocab.tokens.index(token)] = value
    return torch.log_softmax(torch.tensor(logits), dim=-1).numpy()


def exact_label_probs(log_probs: np.ndarray, vocab: CharVocab) -> dict[str, float]:
    """Brute force: P(text) = sum over every alignment path that collapses to it."""
    probs: dict[str, float] = {}
    steps, size = log_probs.shape
    for path in itertools.product(range(size), repeat=steps):
        text = vocab.decode(ctc_collapse(path))
        probs[text] = probs.get(text, 0.0) + math.exp(sum(log_probs[t, k] for t, k in enumerate(path)))
    return probs


def test_vocab_layout_round_trip_and_errors():
    assert VOCAB.tokens[0] == "<blank>" and VOCAB.space == 1 and len(VOCAB) == 29
    assert VOCAB.tokens[2] == "a" and VOCAB.tokens[27] == "z" and VOCAB.tokens[28] == "'"
    ids = VOCAB.encode("What's  the Weather, today?")
    assert VOCAB.decode(ids) == "what's the weather today"
    assert VOCAB.normalize("Café\u2019s self-driving car.") == "cafe's self driving car"
    with pytest.raises(DataError, match=r"outside the vocabulary: '57'.*spell numbers"):
        VOCAB.encode("call 75")
    assert CharVocab.from_json(VOCAB.to_json()).tokens == VOCAB.tokens


def test_greedy_decodes_hand_made_sequence():
    # repeats merge, a blank separates the two l's, spaces between words survive, padding frames are ignored
    tokens = list("hh-e-ll-lo--") + [" ", " "] + list("w-oo-r-ll-d")
    log_probs = torch.tensor(frames_for(tokens))
    assert greedy_decode(log_probs, VOCAB) == ["hello world"]
    batch = torch.stack([log_probs, torch.tensor(frames_for(list("-c-a-t") + ["x"] * (len(tokens) - 6)))])
    assert greedy_decode(batch, VOCAB, lengths=torch.tensor([len(tokens), 6])) == ["hello world", "cat"]
    assert ctc_collapse([0, 3, 3, 0, 3, 2, 2, 0]) == [3, 3, 2]


def test_beam_width_one_equals_greedy_on_peaky_outputs():
    rng = np.random.default_rng(0)
    for _ in range(25):
        steps = int(rng.integers(5, 40))
        targets = np.where(rng.random(steps) < 0.4, 0, rng.integers(1, len(VOCAB), steps))
        logits = rng.normal(size=(steps, len(VOCAB)))
        logits[np.arange(steps), targets] += 7.0
        log_probs = torch.log_softmax(torch.tensor(logits), dim=-1)
        assert beam_decode(log_probs, VOCAB, beam_width=1) == greedy_decode(log_probs, VOCAB)
    assert decode(log_probs, VOCAB, method="beam", beam_width=1) == decode(log_probs, VOCAB, method="greedy")


def test_beam_finds_more_probable_text_than_greedy():
    vocab = CharVocab("a")
    # each frame: blank 0.6, 'a' 0.4. Best path is blank-blank ("", 0.36) but "a" totals 0.4² + 2·0.6·0.4 = 0.64
    log_probs = np.log(np.array([[0.6, 0.4], [0.6, 0.4]]))
    assert greedy_decode(log_probs, vocab) == [""]
    (text, score), = prefix_beam_search(log_probs, vocab, beam_width=4)
    assert text == "a" and score == pytest.approx(math.log(0.64))


def test_wide_beam_scores_equal_exact_alignment_sums():
    vocab = CharVocab("ab")
    log_probs = torch.log_softmax(torch.randn(5, 3, generator=torch.Generator().manual_seed(3)), -1).double().numpy()
    exact = exact_label_probs(log_probs, vocab)
    hyps = prefix_beam_search(log_probs, vocab, beam_width=1000, prune=-1e9, n_best=1000)
    assert len(hyps) == len(exact)
    for text, score in hyps:
        assert math.exp(score) == pytest.approx(exact[text], rel=1e-9)
    assert hyps[0][0] == max(exact, key=exact.get)


def test_lexicon_constrains_output_to_listed_words():
    lexicon = Lexicon(["four", "oh", "seven", "zero"], VOCAB)
    # "foor oh seven" by best path; the runner-up 'u' at frame 3 spells the lexicon word "four"
    tokens = list("-f-o-o-r-") + [" "] + list("-o-h-") + [" "] + list("-s-e-v-e-n-")
    log_probs = frames_for(tokens, second={5: ("u", 5.0)})
    assert greedy_decode(log_probs, VOCAB) == ["foor oh seven"]
    assert beam_decode(log_probs, VOCAB, beam_width=8) == ["foor oh seven"]
    assert beam_decode(log_probs, VOCAB, beam_width=8, lexicon=lexicon) == ["four oh seven"]


def test_lexicon_output_only_ever_holds_lexicon_words():
    words = ["cat", "cut", "at", "a"]
    lexicon = Lexicon(words, VOCAB)
    generator = torch.Generator().manual_seed(1)
    for _ in range(10):
        log_probs = torch.log_softmax(2 * torch.randn(12, len(VOCAB), generator=generator), -1)
        text = beam_decode(log_probs, VOCAB, beam_width=6, lexicon=lexicon)[0]
        assert set(text.split()) <= set(words)
    with pytest.raises(DataError, match="empty"):
        Lexicon([" "], VOCAB)


def test_decode_rejects_unknown_method():
    with pytest.raises(ValueError, match="greedy"):
        decode(np.zeros((2, 29)), VOCAB, method="viterbi")
