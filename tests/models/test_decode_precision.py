"""Decoding speed work keeps fp32 greedy output identical, and bf16/int8 copies hold fewer bytes but decode alike."""

import pytest
import torch

from modelforge.core.errors import ConfigError
from modelforge.core.registry import build
from modelforge.models.decode_precision import for_decoding, weight_bytes
from modelforge.tasks.sampling import SamplingConfig
from modelforge.tasks.text.generation import generate_ids


def _gpt(**kw):
    torch.manual_seed(0)
    shape = dict(vocab_size=97, max_positions=16, dim=64, num_layers=2, num_heads=4, dropout=0.0)
    return build("model", "gpt", **{**shape, **kw}).eval()


def _reference_greedy(model, ids: torch.Tensor, count: int) -> torch.Tensor:
    """Greedy decoding as it was written before the buffer/caching work: whole window forward, argmax, cat."""
    window = model.cfg.max_positions
    with torch.no_grad():
        for _ in range(count):
            logits = model(ids[:, -window:])[:, -1]
            ids = torch.cat([ids, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return ids


@pytest.mark.parametrize("kw", [{}, {"positions": "rotary", "norm": "rmsnorm", "mlp": "swiglu", "tie_weights": False}])
def test_fp32_greedy_is_identical_to_the_plain_reference_across_the_window(kw):
    model = _gpt(**kw)
    prompt = torch.tensor([[3, 14, 15, 92, 65]])
    expected = _reference_greedy(model, prompt, 30)  # 35 tokens: the 16-position window is refilled twice
    assert torch.equal(model.generate(prompt, 30), expected)
    assert torch.equal(model.generate(prompt, 30, use_cache=False), expected)
    new = generate_ids(model, prompt[0].tolist(), SamplingConfig(max_new_tokens=30, temperature=0))
    assert new == expected[0, 5:].tolist()


def test_fp32_returns_the_model_itself_and_copies_leave_it_untouched():
    model = _gpt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert for_decoding(model, "fp32") is model
    for dtype in ("bf16", "int8"):
        assert for_decoding(model, dtype) is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.lm_head is None and next(model.parameters()).dtype == torch.float32


def test_lower_precision_streams_fewer_bytes_and_decodes_nearly_alike():
    model = _gpt(vocab_size=500)
    fp32 = weight_bytes(model)
    # The tied head (the whole 500 × 64 table) counts once; the lookup a row.
    assert fp32 > 500 * 64 * 4
    bf16, int8 = for_decoding(model, "bf16"), for_decoding(model, "int8")
    assert weight_bytes(bf16) == pytest.approx(fp32 / 2, rel=0.01)
    assert weight_bytes(int8) < fp32 / 3
    assert isinstance(int8.lm_head, torch.ao.nn.quantized.dynamic.Linear)  # the tied head is quantized too
    tokens = torch.randint(0, 500, (4, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(tokens)
        for low in (bf16, int8):
            logits = low(tokens).float()
            assert (logits.argmax(-1) == reference.argmax(-1)).float().mean() > 0.9
            assert (logits - reference).abs().max() < 0.1 * reference.abs().max()
    for low in (bf16, int8):
        ids = generate_ids(low, [1, 2, 3], SamplingConfig(max_new_tokens=8, temperature=0))
        assert len(ids) == 8 and all(0 <= i < 500 for i in ids)


def test_unknown_decoding_dtype_is_refused():
    with pytest.raises(ConfigError, match="valid: fp32, bf16, int8"):
        for_decoding(_gpt(), "fp16")


def test_checkpoint_language_models_decode_in_bf16_and_int8_too():
    transformers = pytest.importorskip("transformers")
    from modelforge.models.hf_auto import HFCausalLM

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    model = HFCausalLM(transformers.LlamaForCausalLM(config).eval(), None)
    greedy = SamplingConfig(max_new_tokens=6, temperature=0)
    expected = generate_ids(model, [1, 2, 3], greedy)
    int8 = for_decoding(model, "int8")
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in int8.modules())
    for low in (for_decoding(model, "bf16"), int8):
        assert len(generate_ids(low, [1, 2, 3], greedy)) == len(expected) == 6
