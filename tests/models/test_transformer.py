"""Transformer blocks and models: gradients, attention paths, masking, KV-cache generation, config errors."""

from __future__ import annotations

import pytest
import torch

from modelforge.core.errors import ConfigError
from modelforge.core.registry import build
from modelforge.models.layers import MultiHeadAttention, RotaryEmbedding
from modelforge.models.transformer import (
    GPT,
    EncoderClassifier,
    Seq2SeqTransformerConfig,
    TransformerBlock,
    TransformerConfig,
    TransformerEncoder,
    TransformerSeq2Seq,
)


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: a second intra-op thread only adds synchronisation, which costs seconds per test on
    a loaded 2-core machine. The previous setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_cfg(**overrides) -> TransformerConfig:
    base = {"vocab_size": 50, "max_positions": 24, "dim": 16, "num_layers": 2, "num_heads": 2, "mlp_hidden": 32}
    return TransformerConfig(**{**base, **overrides})


def ids(batch: int, length: int, vocab: int = 50, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pre_norm", [True, False])
def test_gradcheck_attention_block_float64(pre_norm: bool) -> None:
    torch.manual_seed(0)
    block = TransformerBlock(tiny_cfg(dim=8, mlp_hidden=16, pre_norm=pre_norm), causal=True).double()
    x = torch.randn(2, 4, 8, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda inp: block(inp, key_padding_mask=mask)[0], (x,), eps=1e-6, atol=1e-5)


def test_gradcheck_cross_attention_float64() -> None:
    torch.manual_seed(0)
    block = TransformerBlock(tiny_cfg(dim=8, mlp_hidden=16), causal=True, cross_attention=True).double()
    x = torch.randn(1, 3, 8, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(1, 4, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, m: block(a, memory=m)[0], (x, memory), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_fused_attention_equals_explicit_weights(causal: bool) -> None:
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 4, causal=causal, rotary=RotaryEmbedding(4, 32)).eval()
    x = torch.randn(3, 6, 16)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4], dtype=torch.bool)
    fused, none = attn(x, key_padding_mask=mask)
    explicit, weights = attn(x, key_padding_mask=mask, need_weights=True)
    assert none is None
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-6)
    assert weights.shape == (3, 4, 6, 6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 6))
    assert weights[2, :, :, 2:].abs().max() == 0  # padded keys get no attention
    if causal:
        assert torch.triu(weights, diagonal=1).abs().max() == 0  # nothing attends to the future


def test_encoder_ignores_padding_and_maps_attention() -> None:
    torch.manual_seed(0)
    encoder = TransformerEncoder(tiny_cfg(pre_norm=False, embedding_norm=True, type_vocab_size=2)).eval()
    short = ids(1, 5)
    padded = torch.cat([short, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1] * 5 + [0] * 3])
    with torch.no_grad():
        alone = encoder(short)
        batched = encoder(padded, mask)
        maps = encoder.attention_maps(padded, mask)
    torch.testing.assert_close(batched[:, :5], alone, rtol=1e-5, atol=1e-5)
    assert len(maps) == 2 and maps[0].shape == (1, 2, 8, 8)
    assert maps[1][..., 5:].abs().max() == 0


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_encoder_classifier_pooling(pooling: str) -> None:
    torch.manual_seed(0)
    model = EncoderClassifier(tiny_cfg(), num_classes=3, pooling=pooling).eval()
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    with torch.no_grad():
        logits = model(ids(2, 7), mask)
        alone = model(ids(2, 7)[1:, :4])
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits[1:], alone, rtol=1e-5, atol=1e-5)


GPT_VARIANTS = {
    "gpt2_layout": {"activation": "gelu_tanh"},
    "llama_style": {"norm": "rmsnorm", "positions": "rotary", "mlp": "swiglu", "bias": False, "tie_weights": False},
    "sinusoidal": {"positions": "sinusoidal"},
}


@pytest.mark.parametrize("variant", sorted(GPT_VARIANTS))
def test_kv_cache_logits_equal_full_recompute(variant: str) -> None:
    torch.manual_seed(0)
    model = GPT(tiny_cfg(**GPT_VARIANTS[variant])).eval()
    tokens = ids(2, 10)
    with torch.no_grad():
        full = model(tokens)
        caches = model.make_caches(2)
        pieces = [model(tokens[:, :4], caches)] + [model(tokens[:, t : t + 1], caches) for t in range(4, 10)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", sorted(GPT_VARIANTS))
def test_kv_cache_generation_equals_full_recompute(variant: str) -> None:
    torch.manual_seed(0)
    model = GPT(tiny_cfg(**GPT_VARIANTS[variant])).eval()
    prompt = ids(2, 5)
    # 5 + 24 tokens run past the 24-position window, so the cache is refilled from the cropped context too.
    cached = model.generate(prompt, 24, use_cache=True)
    recomputed = model.generate(prompt, 24, use_cache=False)
    assert cached.shape == (2, 29)
    assert torch.equal(cached, recomputed)
    assert torch.equal(cached[:, :5], prompt)


def test_sampling_is_reproducible_with_a_generator() -> None:
    torch.manual_seed(0)
    model = GPT(tiny_cfg()).eval()
    prompt = ids(1, 3)
    first = model.generate(prompt, 8, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(3))
    second = model.generate(prompt, 8, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, second)


def test_tied_gpt_has_one_embedding_matrix() -> None:
    model = build("model", "gpt2", **{"vocab_size": 64, "max_positions": 32, "dim": 32, "num_layers": 2,
                                      "num_heads": 2})
    names = set(model.state_dict())
    assert "embeddings.tokens.weight" in names and not any(n.startswith("lm_head") for n in names)


def test_seq2seq_cached_greedy_equals_recompute() -> None:
    torch.manual_seed(0)
    cfg = Seq2SeqTransformerConfig(vocab_size=30, src_vocab_size=40, dim=16, num_layers=2, num_decoder_layers=2,
                                   num_heads=2, mlp_hidden=32, max_positions=32, positions="sinusoidal")
    model = TransformerSeq2Seq(cfg).eval()
    src = ids(2, 7, vocab=40)
    src_mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    cached = model.generate(src, bos_id=1, max_new_tokens=9, src_mask=src_mask)
    with torch.no_grad():
        memory = model.encode(src, src_mask)
        out = torch.ones(2, 1, dtype=torch.long)
        for _ in range(9):
            step = model.decode(out, memory, src_mask)[:, -1].argmax(-1, keepdim=True)
            out = torch.cat([out, step], dim=1)
    assert torch.equal(cached, out)


def test_config_errors_say_what_to_change() -> None:
    with pytest.raises(ConfigError, match="divisible by num_heads"):
        tiny_cfg(dim=10, num_heads=4)
    with pytest.raises(ConfigError, match="valid: learned, sinusoidal, rotary, none"):
        tiny_cfg(positions="alibi")
    model = GPT(tiny_cfg(max_positions=8))
    with pytest.raises(ConfigError, match="only 8 positions"):
        model(ids(1, 9))
