"""Sampling policy: filters, reproducibility with a seed, greedy equivalences, KV cache = no cache, streaming."""

import pytest
import torch

from modelforge.core.errors import ConfigError
from modelforge.core.registry import build
from modelforge.tasks.text.generation import SamplingConfig, TextStreamer, filter_logits, generate_ids, sample_next


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    model = build("model", "gpt", vocab_size=40, max_positions=16, dim=32, num_layers=2, num_heads=2, dropout=0.0)
    return model.eval()


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[1.0, 4.0, 2.0, 3.0, 0.0]])
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.81)).tolist() == [[True, True, True, False]]
    # the most likely token survives even a tiny p, in any position of the vocabulary
    shuffled = probs[:, [2, 0, 3, 1]].log()
    assert torch.isfinite(filter_logits(shuffled, top_p=0.01)).tolist() == [[False, True, False, False]]


def test_sampling_follows_the_filtered_distribution():
    logits = torch.tensor([[0.0, 0.0, 5.0, 5.0]]).expand(4000, 4)
    cfg = SamplingConfig(temperature=1.0, top_k=2)
    draws = sample_next(logits, cfg, torch.Generator().manual_seed(0)).flatten()
    assert set(draws.tolist()) == {2, 3}
    assert abs((draws == 2).float().mean().item() - 0.5) < 0.05


def test_same_seed_same_tokens_different_seed_different(gpt):
    cfg = SamplingConfig(max_new_tokens=30, temperature=1.0, top_p=0.95, seed=7)
    first = generate_ids(gpt, [1, 2, 3], cfg)
    torch.manual_seed(123)  # the global RNG plays no part
    assert generate_ids(gpt, [1, 2, 3], cfg) == first
    other = generate_ids(gpt, [1, 2, 3], SamplingConfig(max_new_tokens=30, temperature=1.0, top_p=0.95, seed=8))
    assert other != first and len(first) == len(other) == 30


def test_generation_leaves_the_global_rng_alone(gpt):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    generate_ids(gpt, [1], SamplingConfig(max_new_tokens=5, temperature=1.0, seed=1))
    assert torch.equal(torch.rand(3), expected)


def test_top_k_1_equals_greedy_and_the_models_own_greedy(gpt):
    prompt = [4, 5, 6]
    greedy = generate_ids(gpt, prompt, SamplingConfig(max_new_tokens=25, temperature=0.0))
    top1 = generate_ids(gpt, prompt, SamplingConfig(max_new_tokens=25, temperature=1.3, top_k=1, seed=3))
    assert top1 == greedy
    # 3 + 25 tokens overflow the 16-position window: both paths crop the same way
    reference = gpt.generate(torch.tensor([prompt]), 25, use_cache=False)[0, 3:].tolist()
    assert greedy == reference


def test_kv_cache_and_full_recompute_agree_when_sampling(gpt):
    class NoCache(torch.nn.Module):  # same weights, no cache methods: generation falls back to full forwards
        def __init__(self, inner):
            super().__init__()
            self.inner, self.cfg = inner, inner.cfg

        def forward(self, ids):
            return self.inner(ids)

    cfg = SamplingConfig(max_new_tokens=20, temperature=0.9, top_k=10, seed=11)
    assert generate_ids(NoCache(gpt), [7, 8], cfg) == generate_ids(gpt, [7, 8], cfg)


def test_streaming_callback_sees_every_token_in_order(gpt):
    seen = []
    new = generate_ids(gpt, [1], SamplingConfig(max_new_tokens=12, temperature=1.0, seed=0), on_token=seen.append)
    assert seen == new


def test_stop_token_ends_generation(gpt):
    greedy = generate_ids(gpt, [1, 2], SamplingConfig(max_new_tokens=10, temperature=0.0))
    stopped = generate_ids(gpt, [1, 2], SamplingConfig(max_new_tokens=10, temperature=0.0), stop_ids=[greedy[3]])
    assert stopped == greedy[: greedy.index(greedy[3])]


def test_text_streamer_holds_back_half_characters():
    pieces = []
    table = {1: "a", 2: "\ufffd", 3: "é"}

    def decode(ids):  # id 2 alone is half a character; followed by 3 it completes to "é"
        text = "".join(table[i] for i in ids)
        return text.replace("\ufffdé", "é")

    streamer = TextStreamer(decode, pieces.append)
    for token in (1, 2, 3, 1):
        streamer(token)
    assert pieces == ["a", "é", "a"]


@pytest.mark.parametrize("bad", [dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5), dict(max_new_tokens=-1)])
def test_bad_sampling_settings_are_config_errors(bad):
    with pytest.raises(ConfigError):
        SamplingConfig(**bad)


def test_recurrent_models_generate_from_their_state_like_a_full_recompute():
    torch.manual_seed(0)
    rnn = build("model", "char_rnn_lm", vocab_size=30, embed_dim=16, hidden_size=32, dropout=0.0).eval()
    cfg = SamplingConfig(max_new_tokens=15, temperature=0.7, seed=2)
    stateful = generate_ids(rnn, [1, 2, 3], cfg)

    class Stateless(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, ids):
            return self.inner(ids)

    assert generate_ids(Stateless(rnn), [1, 2, 3], cfg) == stateful


def test_banned_ids_are_never_generated(gpt):
    cfg = SamplingConfig(max_new_tokens=200, temperature=5.0, seed=0)  # hot: every id is likely somewhere
    assert {0, 1} & set(generate_ids(gpt, [3], cfg))
    assert not {0, 1} & set(generate_ids(gpt, [3], cfg, banned_ids=[0, 1]))
