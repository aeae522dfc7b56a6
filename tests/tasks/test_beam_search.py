"""Seq2seq decoding: beam 1 is exactly greedy (both model families), greedy matches the Transformer's own greedy
generate, cached beam reordering matches a cache-free reference, and the length penalty changes the ranking."""

import math

import pytest
import torch

from modelforge.core.errors import ConfigError
from modelforge.core.registry import build
from modelforge.tasks.seq2seq.decoding import (
    SearchSettings,
    beam_search,
    decode_ids,
    greedy_search,
    length_penalty,
    normalized_score,
    step_decoder,
)

VOCAB = 30
EOS = 3
SETTINGS = SearchSettings(bos_id=2, eos_id=EOS, banned_ids=(0, 1, 2))


def _sources():
    generator = torch.Generator().manual_seed(1)
    lengths = torch.tensor([7, 4, 6])
    src = torch.randint(4, VOCAB, (3, 7), generator=generator)
    src[1, 4:] = 0
    src[2, 6:] = 0
    return src, lengths


@pytest.fixture(scope="module", params=["gru", "transformer"])
def model(request):
    torch.manual_seed(0)
    if request.param == "gru":
        net = build("model", "seq2seq_gru_bahdanau", src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, embed_dim=16,
                    hidden_size=32, dropout=0.0)
    else:
        net = build("model", "transformer_seq2seq_small", src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, dim=32,
                    num_layers=2, num_decoder_layers=2, num_heads=2, mlp_hidden=64, dropout=0.0, max_positions=32)
    return net.eval()


def test_beam_of_one_is_exactly_greedy(model):
    src, lengths = _sources()
    limits = torch.tensor([12, 5, 9])
    greedy = greedy_search(step_decoder(model, src, lengths, 12), 3, SETTINGS, limits)
    one_beam = beam_search(step_decoder(model, src, lengths, 12), 3, SettingsWith(beam_size=1), limits)
    assert one_beam == greedy
    assert [len(row) for row in greedy] != [0, 0, 0]  # a random model does not stop at once: a real comparison
    assert all(len(row) <= limit for row, limit in zip(greedy, limits.tolist()))
    wide = beam_search(step_decoder(model, src, lengths, 12), 3, SettingsWith(beam_size=4), limits)
    assert all(len(row) <= limit for row, limit in zip(wide, limits.tolist()))


def SettingsWith(**changes):  # noqa: N802 — reads like the dataclass it builds
    fields = {"bos_id": 2, "eos_id": EOS, "banned_ids": (0, 1, 2), "beam_size": 1, "length_penalty": 0.0}
    return SearchSettings(**{**fields, **changes})


def test_greedy_equals_the_transformers_own_greedy_generate():
    torch.manual_seed(0)
    net = build("model", "transformer_seq2seq_small", src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, dim=32,
                num_layers=2, num_decoder_layers=2, num_heads=2, mlp_hidden=64, dropout=0.0, max_positions=32).eval()
    src, lengths = _sources()
    mask = torch.arange(src.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    # No banned tokens and an end token the model never emits early: both run the full 10 steps.
    settings = SearchSettings(bos_id=2, eos_id=VOCAB + 5)
    ours = decode_ids(net, src, lengths, settings, 10)
    theirs = net.generate(src, bos_id=2, max_new_tokens=10, src_mask=mask)[:, 1:].tolist()
    assert ours == theirs


class _Uncached:
    """Reference step decoder: re-runs the whole decoder over each row's history (no KV cache)."""

    def __init__(self, net, src, lengths):
        self.model = net
        self.mask = torch.arange(src.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        self.memory = net.encode(src, self.mask)
        self.history = torch.zeros(src.shape[0], 0, dtype=torch.long)

    def step(self, tokens):
        self.history = torch.cat([self.history, tokens.unsqueeze(1)], dim=1)
        return self.model.decode(self.history, self.memory, self.mask)[:, -1]

    def select(self, index, within_source=False):
        self.history = self.history.index_select(0, index)
        self.memory, self.mask = self.memory.index_select(0, index), self.mask.index_select(0, index)


def test_cached_beam_reordering_matches_a_cache_free_search():
    torch.manual_seed(3)
    net = build("model", "transformer_seq2seq_small", src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, dim=32,
                num_layers=2, num_decoder_layers=2, num_heads=2, mlp_hidden=64, dropout=0.0, max_positions=32).eval()
    src, lengths = _sources()
    settings = SettingsWith(beam_size=3, length_penalty=0.6)
    with torch.no_grad():
        cached = beam_search(step_decoder(net, src, lengths, 9), 3, settings, 9)
        reference = beam_search(_Uncached(net, src, lengths), 3, settings, 9)
    assert cached == reference


class _Scripted:
    """Next-token probabilities from a table keyed by (step, previous token); tokens: 2 BOS, 3 EOS, 4 a, 5 b.

    Short hypothesis [EOS]: log 0.40 = -0.92. Long [a a a EOS]: log 0.35 + 3 log 0.95 = -1.20, but per token much
    better. Total log-probability (alpha 0) must prefer the short one, alpha 1 the long one.
    """

    def __init__(self):
        self.t = 0
        self.table = {
            0: {2: {3: 0.40, 4: 0.35, 5: 0.25}},
            1: {4: {4: 0.95, 3: 0.03, 5: 0.02}, 5: {3: 0.5, 5: 0.5}},
            2: {4: {4: 0.95, 3: 0.03, 5: 0.02}, 5: {3: 0.5, 5: 0.5}},
        }
        self.last = {4: {3: 0.95, 4: 0.03, 5: 0.02}, 5: {3: 0.5, 5: 0.5}}

    def step(self, tokens):
        rows = []
        for token in tokens.tolist():
            probs = self.table.get(self.t, self.last).get(token, {3: 1.0})
            row = torch.full((6,), 1e-9)
            for index, p in probs.items():
                row[index] = p
            rows.append(row.log())
        self.t += 1
        return torch.stack(rows)

    def select(self, index, within_source=False):
        pass


def test_length_penalty_changes_the_ranking_as_designed():
    short, long = math.log(0.40), math.log(0.35) + 3 * math.log(0.95)
    assert short > long  # by total log-probability the short output wins ...
    assert normalized_score(torch.tensor(long), torch.tensor(4), 1.0) > normalized_score(
        torch.tensor(short), torch.tensor(1), 1.0)  # ... per GNMT-normalised score the long one
    assert length_penalty(torch.tensor(7), 0.0) == 1.0
    assert math.isclose(float(length_penalty(torch.tensor(7), 0.6)), (12 / 6) ** 0.6, rel_tol=1e-6)

    def run(alpha):
        settings = SearchSettings(bos_id=2, eos_id=3, banned_ids=(0, 1, 2), beam_size=2, length_penalty=alpha)
        return beam_search(_Scripted(), 1, settings, 10)[0]

    assert run(0.0) == []  # [EOS] with the EOS stripped
    assert run(1.0) == [4, 4, 4]
    assert greedy_search(_Scripted(), 1, SearchSettings(bos_id=2, eos_id=3), 10)[0] == []


def test_search_settings_are_validated():
    with pytest.raises(ConfigError, match="beam size"):
        SearchSettings(bos_id=2, eos_id=3, beam_size=0)
    with pytest.raises(ConfigError, match="length penalty"):
        SearchSettings(bos_id=2, eos_id=3, length_penalty=-1)
