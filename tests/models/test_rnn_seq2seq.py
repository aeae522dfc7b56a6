"""Recurrent models, GRU seq2seq with attention, word2vec and the ASR acoustic model.

The central property: a padded variable-length batch gives each sequence exactly what it gets alone, checked against
PyTorch's own packed ``nn.LSTM``/``nn.GRU``/``nn.RNN`` and against one-sequence runs.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from modelforge.core.errors import ConfigError
from modelforge.core.registry import build
from modelforge.models.asr import ASRConfig, ASRModel
from modelforge.models.embeddings import SkipGram, Word2VecConfig
from modelforge.models.rnn import CELLS, RecurrentEncoder, RNNConfig, SeedRNN, SeedRNNConfig, length_mask
from modelforge.models.seq2seq import Seq2SeqConfig, Seq2SeqGRU


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: a second intra-op thread only adds synchronisation, which costs seconds per test on
    a loaded 2-core machine. The previous setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


LENGTHS = torch.tensor([6, 3, 1, 5])


def padded_features(features: int = 5, seed: int = 0) -> torch.Tensor:
    x = torch.randn(len(LENGTHS), int(LENGTHS.max()), features, generator=torch.Generator().manual_seed(seed))
    return x * length_mask(LENGTHS, x.shape[1]).unsqueeze(-1)


def padded_ids(vocab: int, seed: int = 0) -> torch.Tensor:
    x = torch.randint(1, vocab, (len(LENGTHS), int(LENGTHS.max())), generator=torch.Generator().manual_seed(seed))
    return x.masked_fill(~length_mask(LENGTHS, x.shape[1]), 0)


def as_packed_pytorch(encoder: RecurrentEncoder) -> nn.RNNBase:
    """PyTorch's fused multi-layer module with our per-layer, per-direction weights copied in."""
    cfg = encoder.cfg
    reference = CELLS[cfg.cell](cfg.input_size, cfg.hidden_size, num_layers=cfg.num_layers, batch_first=True,
                                bidirectional=cfg.bidirectional)
    with torch.no_grad():
        for i, directions in enumerate(encoder.layers):
            for d, rnn in enumerate(directions):
                for name, value in rnn.named_parameters():  # e.g. weight_ih_l0
                    target = name.replace("_l0", f"_l{i}") + ("_reverse" if d else "")
                    getattr(reference, target).copy_(value)
    return reference


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_variable_length_batch_equals_pytorch_packed_and_single_runs(cell: str) -> None:
    torch.manual_seed(0)
    encoder = RecurrentEncoder(RNNConfig(cell, 5, 7, num_layers=2, bidirectional=True)).eval()
    x = padded_features()
    with torch.no_grad():
        outputs, hidden = encoder(x, LENGTHS)
        packed = pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
        ref_packed, ref_state = as_packed_pytorch(encoder)(packed)
        ref_outputs, _ = pad_packed_sequence(ref_packed, batch_first=True, total_length=x.shape[1])
        ref_hidden = ref_state[0] if cell == "lstm" else ref_state
        torch.testing.assert_close(outputs, ref_outputs, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(hidden, ref_hidden, rtol=1e-5, atol=1e-6)
        for b, length in enumerate(LENGTHS.tolist()):
            alone_out, alone_hidden = encoder(x[b : b + 1, :length])
            torch.testing.assert_close(outputs[b : b + 1, :length], alone_out, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(hidden[:, b : b + 1], alone_hidden, rtol=1e-5, atol=1e-6)
    assert outputs[1, 3:].abs().max() == 0  # padded steps are zero


def test_lengths_are_validated() -> None:
    encoder = RecurrentEncoder(RNNConfig("gru", 5, 4))
    with pytest.raises(ConfigError, match="lengths must be"):
        encoder(padded_features(), torch.tensor([6, 3, 0, 5]))


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_text_classifier_ignores_padding(pooling: str) -> None:
    torch.manual_seed(0)
    model = build("model", "rnn_text_classifier", vocab_size=30, embed_dim=8, hidden_size=6, num_layers=2,
                  pooling=pooling, num_classes=3).eval()
    ids = padded_ids(30)
    with torch.no_grad():
        logits = model(ids, LENGTHS)
        alone = torch.cat([model(ids[b : b + 1, :n]) for b, n in enumerate(LENGTHS.tolist())])
    assert logits.shape == (4, 3)
    torch.testing.assert_close(logits, alone, rtol=1e-5, atol=1e-6)


def test_seed_rnn_matches_the_tutorial_loop() -> None:
    torch.manual_seed(0)
    model = SeedRNN(SeedRNNConfig(vocab_size=12, hidden_size=9, num_classes=4)).eval()
    ids = padded_ids(12)
    with torch.no_grad():
        logits = model(ids, LENGTHS)
        for b, length in enumerate(LENGTHS.tolist()):
            # The tutorial: one letter tensor at a time, hidden starts at zeros, output from the last letter.
            hidden = torch.zeros(1, 9)
            for t in range(length):
                letter = torch.zeros(1, 12)
                letter[0, ids[b, t]] = 1
                combined = torch.cat([letter, hidden], dim=1)
                hidden, output = torch.tanh(model.i2h(combined)), model.i2o(combined)
            torch.testing.assert_close(logits[b : b + 1], output, rtol=1e-5, atol=1e-6)


def test_char_lm_state_continues_generation() -> None:
    torch.manual_seed(0)
    model = build("model", "char_rnn_lm", vocab_size=20, embed_dim=8, hidden_size=12, dropout=0.0).eval()
    ids = torch.randint(0, 20, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids)
        first, state = model.forward_with_state(ids[:, :5])
        rest, _ = model.forward_with_state(ids[:, 5:], state)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attention", ["bahdanau", "luong_dot", "luong_general"])
def test_seq2seq_step_decoding_reproduces_teacher_forcing(attention: str) -> None:
    torch.manual_seed(0)
    model = Seq2SeqGRU(Seq2SeqConfig(20, 15, embed_dim=8, hidden_size=10, num_layers=2, attention=attention,
                                     dropout=0.0)).eval()
    src = padded_ids(20)
    tgt = torch.randint(1, 15, (4, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(src, LENGTHS, tgt)
        memory, state = model.encode(src, LENGTHS)
        for t in range(5):
            step_logits, state, weights = model.step(tgt[:, t], state, memory)
            torch.testing.assert_close(step_logits, logits[:, t], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(weights.sum(-1), torch.ones(4))
            assert weights[1, 3:].abs().max() == 0  # padded source steps get no attention
        alone = model(src[1:2, :3], LENGTHS[1:2], tgt[1:2])
    assert logits.shape == (4, 5, 15)
    torch.testing.assert_close(logits[1:2], alone, rtol=1e-5, atol=1e-6)


def test_seq2seq_rejects_unknown_attention() -> None:
    with pytest.raises(ConfigError, match="valid: bahdanau, luong_dot, luong_general"):
        Seq2SeqConfig(attention="dot")


def test_word2vec_nearest_and_analogy_on_known_vectors() -> None:
    model = SkipGram(Word2VecConfig(vocab_size=6, dim=3))
    vectors = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0.9, 0.1, 0], [-1, 0, 0]])
    with torch.no_grad():
        model.in_vectors.weight.copy_(vectors)
    ids, sims = model.nearest(0, k=2)
    assert ids.tolist() == [[4, 3]]  # itself excluded; 4 is closest, then 3 (cos 0.707)
    torch.testing.assert_close(sims[0, 1], torch.tensor(2**-0.5))
    ids, _ = model.nearest(torch.tensor([[0.0, 0.0, 2.0]]), k=1)  # a vector query keeps every word
    assert ids.tolist() == [[2]]
    best, _ = model.analogy(0, 3, 2, k=1)  # x : x+y :: z : ?  → the word nearest y+z after excluding 0, 3, 2
    assert best.tolist() == [1]
    with pytest.raises(ConfigError, match="word ids must lie in 0..5"):
        model.nearest(6)


def test_word2vec_logits_layout() -> None:
    model = build("model", "cbow", vocab_size=30, dim=4)
    context = torch.randint(0, 30, (5, 4))
    logits = model(context, torch.arange(5), torch.randint(0, 30, (5, 3)))
    expected = (model.out_vectors(torch.arange(5)) * model.in_vectors(context).mean(1)).sum(-1)
    assert logits.shape == (5, 4)
    torch.testing.assert_close(logits[:, 0], expected)


@pytest.mark.parametrize("encoder", ["bigru", "transformer"])
def test_asr_output_lengths_and_padding(encoder: str) -> None:
    torch.manual_seed(0)
    model = ASRModel(ASRConfig(n_mels=8, vocab_size=6, channels=3, encoder=encoder, hidden_size=8, num_layers=2,
                               num_heads=2, dropout=0.0)).eval()
    lengths = torch.tensor([11, 6])
    features = torch.randn(2, 8, 11) * length_mask(lengths, 11).unsqueeze(1)
    with torch.no_grad():
        log_probs = model(features, lengths)
        alone = model(features[1:, :, :6], lengths[1:])
    out_lengths = model.output_lengths(lengths)
    assert out_lengths.tolist() == [6, 3]
    assert log_probs.shape == (2, 6, 6)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 6))
    torch.testing.assert_close(log_probs[1:, :3], alone, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="8 mels"):
        model(torch.randn(1, 80, 10))
