"""GRU encoder–decoder with attention (Bahdanau additive; Luong dot/general) for translation-style tasks.

``forward(src_ids, src_lengths, tgt_ids)`` is teacher-forced and returns logits (batch, tgt_time, tgt_vocab).
Decoding policy (greedy, beam, length penalties) belongs to the task; it drives the model through ``encode`` and
``step``, which return plain tensors so that beams can be reordered with ``index_select``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.core.registry import register
from modelforge.models.layers.masks import length_mask
from modelforge.models.rnn import RecurrentEncoder, RNNConfig

ATTENTIONS = ("bahdanau", "luong_dot", "luong_general")


@dataclass
class Seq2SeqConfig:
    src_vocab_size: int = 8000
    tgt_vocab_size: int = 8000
    embed_dim: int = 256
    hidden_size: int = 256
    num_layers: int = 1
    attention: str = "bahdanau"  # bahdanau | luong_dot | luong_general
    bidirectional_encoder: bool = True
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"unknown attention {self.attention!r}; valid: {', '.join(ATTENTIONS)}")


class AdditiveAttention(nn.Module):
    """Bahdanau et al. (2015): score(q, k) = vᵀ tanh(W_q q + W_k k)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.query = nn.Linear(hidden, hidden, bias=False)
        self.key = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, 1, bias=False)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return self.key(keys)

    def scores(self, query: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
        return self.v(torch.tanh(self.query(query).unsqueeze(1) + projected)).squeeze(-1)


class MultiplicativeAttention(nn.Module):
    """Luong et al. (2015): score(q, k) = q·k ("dot") or q·W k ("general")."""

    def __init__(self, hidden: int, general: bool):
        super().__init__()
        self.weight = nn.Linear(hidden, hidden, bias=False) if general else None

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return keys if self.weight is None else self.weight(keys)

    def scores(self, query: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
        return (projected @ query.unsqueeze(-1)).squeeze(-1)


def attend(attention: nn.Module, query: torch.Tensor, projected: torch.Tensor, values: torch.Tensor,
           mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Context (batch, hidden) and weights (batch, src_time); padded source steps get zero weight."""
    weights = attention.scores(query, projected).masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return (weights.unsqueeze(1) @ values).squeeze(1), weights


class GRUEncoder(nn.Module):
    """Embedding → (bi)GRU; bidirectional outputs and final states are projected to the decoder's width."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.embedding = nn.Embedding(cfg.src_vocab_size, cfg.embed_dim)
        rnn_cfg = RNNConfig("gru", cfg.embed_dim, cfg.hidden_size, cfg.num_layers, cfg.bidirectional_encoder,
                            cfg.dropout)
        self.rnn = RecurrentEncoder(rnn_cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.num_layers = cfg.num_layers
        self.bidirectional = cfg.bidirectional_encoder
        if self.bidirectional:
            self.output_proj = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size)
            self.bridge = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size)

    def forward(self, src_ids: torch.Tensor, src_lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs (batch, src_time, hidden) and the decoder's initial state (layers, batch, hidden)."""
        outputs, state = self.rnn(self.dropout(self.embedding(src_ids)), src_lengths)
        if self.bidirectional:
            # (layers·2, batch, hidden) → (layers, batch, 2·hidden): each layer's forward and backward final state.
            state = state.view(self.num_layers, 2, *state.shape[1:]).transpose(1, 2).flatten(2)
            state = torch.tanh(self.bridge(state))
            outputs = self.output_proj(outputs)
        return outputs, state


class AttentionGRUDecoder(nn.Module):
    """One decoding step at a time; the GRU input is [embedding; feed] where feed is:

    - Bahdanau: the context computed from the previous hidden state (attention before the GRU);
    - Luong: the previous attentional vector (input feeding; attention after the GRU).
    Both then predict from tanh(W_c [h; context]).
    """

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.luong = cfg.attention != "bahdanau"
        hidden = cfg.hidden_size
        self.embedding = nn.Embedding(cfg.tgt_vocab_size, cfg.embed_dim)
        self.attention = (AdditiveAttention(hidden) if not self.luong
                          else MultiplicativeAttention(hidden, general=cfg.attention == "luong_general"))
        self.rnn = nn.GRU(cfg.embed_dim + hidden, hidden, num_layers=cfg.num_layers, batch_first=True,
                          dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        self.combine = nn.Linear(2 * hidden, hidden)
        self.out = nn.Linear(hidden, cfg.tgt_vocab_size)
        self.dropout = nn.Dropout(cfg.dropout)

    def step(self, tokens: torch.Tensor, hidden: torch.Tensor, feed: torch.Tensor, keys: torch.Tensor,
             values: torch.Tensor, mask: torch.Tensor):
        embedded = self.dropout(self.embedding(tokens))
        if not self.luong:
            feed, weights = attend(self.attention, hidden[-1], keys, values, mask)
        output, hidden = self.rnn(torch.cat([embedded, feed], dim=-1).unsqueeze(1), hidden)
        output = output.squeeze(1)
        if self.luong:
            context, weights = attend(self.attention, output, keys, values, mask)
        else:
            context = feed
        attentional = torch.tanh(self.combine(torch.cat([output, context], dim=-1)))
        next_feed = attentional if self.luong else feed
        return self.out(self.dropout(attentional)), hidden, next_feed, weights


class Seq2SeqGRU(nn.Module):
    """GRU encoder–decoder with attention; teacher-forced ``forward`` → logits (batch, tgt_time, tgt_vocab)."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = GRUEncoder(cfg)
        self.decoder = AttentionGRUDecoder(cfg)

    def encode(self, src_ids: torch.Tensor, src_lengths: torch.Tensor | None = None):
        """Returns ``memory`` = (projected keys, values, source mask) and the initial ``state`` = (hidden, feed)."""
        values, hidden = self.encoder(src_ids, src_lengths)
        mask = (torch.ones(src_ids.shape, dtype=torch.bool, device=src_ids.device) if src_lengths is None
                else length_mask(src_lengths.to(src_ids.device), src_ids.shape[1]))
        memory = (self.decoder.attention.project_keys(values), values, mask)
        feed = values.new_zeros(values.shape[0], self.cfg.hidden_size)
        return memory, (hidden, feed)

    def step(self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], memory: tuple):
        """One decoder step for tokens (batch,): ``(logits (batch, vocab), new_state, attention (batch, src))``.

        ``state`` is (hidden (layers, batch, hidden), feed (batch, hidden)); for beam search reorder both along
        their batch dimension, and the memory tensors likewise.
        """
        hidden, feed = state
        logits, hidden, feed, weights = self.decoder.step(tokens, hidden, feed, *memory)
        return logits, (hidden, feed), weights

    def forward(self, src_ids: torch.Tensor, src_lengths: torch.Tensor | None, tgt_ids: torch.Tensor) -> torch.Tensor:
        memory, state = self.encode(src_ids, src_lengths)
        logits = []
        for t in range(tgt_ids.shape[1]):
            step_logits, state, _ = self.step(tgt_ids[:, t], state, memory)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)


def _example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([7, 4])
    src = torch.randint(1, 40, (2, 7), generator=generator).masked_fill(~length_mask(lengths, 7), 0)
    return src, lengths, torch.randint(1, 30, (2, 6), generator=generator)


_TINY = {"src_vocab_size": 40, "tgt_vocab_size": 30, "embed_dim": 16, "hidden_size": 32, "dropout": 0.0}


def _build(attention, src_vocab_size, tgt_vocab_size, embed_dim, hidden_size, num_layers, bidirectional_encoder,
           dropout) -> Seq2SeqGRU:
    return Seq2SeqGRU(Seq2SeqConfig(src_vocab_size, tgt_vocab_size, embed_dim, hidden_size, num_layers, attention,
                                    bidirectional_encoder, dropout))


@register("model", "seq2seq_gru_bahdanau", example=_example, tiny=_TINY)
def seq2seq_gru_bahdanau(src_vocab_size: int = 8000, tgt_vocab_size: int = 8000, embed_dim: int = 256,
                         hidden_size: int = 256, num_layers: int = 1, bidirectional_encoder: bool = True,
                         dropout: float = 0.1) -> Seq2SeqGRU:
    """BiGRU encoder + GRU decoder with Bahdanau (additive) attention; (src, src_lengths, tgt_in) → logits."""
    return _build("bahdanau", src_vocab_size, tgt_vocab_size, embed_dim, hidden_size, num_layers,
                  bidirectional_encoder, dropout)


@register("model", "seq2seq_gru_luong", example=_example, tiny=_TINY)
def seq2seq_gru_luong(src_vocab_size: int = 8000, tgt_vocab_size: int = 8000, embed_dim: int = 256,
                      hidden_size: int = 256, num_layers: int = 1, bidirectional_encoder: bool = True,
                      dropout: float = 0.1, score: str = "general") -> Seq2SeqGRU:
    """BiGRU encoder + GRU decoder with Luong attention (score dot|general, input feeding); → logits."""
    if score not in ("dot", "general"):
        raise ConfigError(f"unknown Luong score {score!r}; valid: dot, general")
    return _build(f"luong_{score}", src_vocab_size, tgt_vocab_size, embed_dim, hidden_size, num_layers,
                  bidirectional_encoder, dropout)
