"""Recurrent networks: Elman RNN, LSTM and GRU stacks over padded variable-length batches, and models on top.

- ``RecurrentEncoder``: ``nn.RNN``/``nn.LSTM``/``nn.GRU`` layers (uni/bidirectional, multi-layer) over padded
  variable-length batches: with ``lengths`` every sequence gets exactly the result it would get alone.
- ``RecurrentSequenceModel``: features (batch, time, in) → per-step outputs (batch, time, out).
- ``RNNTextClassifier``: embedding → recurrent encoder → last/mean/max pooling → linear.
- ``RNNLanguageModel``: embedding → unidirectional recurrent stack → next-token logits (char-rnn).
- ``SeedRNN``: the seed's character RNN classifier (``i2h``/``i2o`` over concat(input, hidden)).

All of them trace with torch.export, ``lengths`` included.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.core.registry import register
from modelforge.models.layers.masks import length_mask

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@dataclass
class RNNConfig:
    cell: str = "lstm"  # rnn (Elman, tanh) | lstm | gru
    input_size: int = 32
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0  # between stacked layers (none after the last one, as in nn.LSTM)

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ConfigError(f"unknown recurrent cell {self.cell!r}; valid: {', '.join(CELLS)}")

    @property
    def output_size(self) -> int:
        return self.hidden_size * (2 if self.bidirectional else 1)


def _check_lengths(lengths: torch.Tensor, max_length: int) -> None:
    if lengths.dim() != 1 or lengths.numel() == 0 or int(lengths.min()) < 1 or int(lengths.max()) > max_length:
        raise ConfigError(
            f"lengths must be a 1-D tensor of values in 1..{max_length} (the padded time dimension), got "
            f"{lengths.tolist()}; drop empty sequences before batching"
        )


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse each row's first ``lengths[b]`` steps of (batch, time, features), leaving padding in place.

    Its own inverse. It lets the backward direction of a bidirectional RNN start at each sequence's real last
    step, so padding never enters the recurrence of real steps.
    """
    if lengths is None:
        return x.flip(1)
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    last = lengths.to(x.device).unsqueeze(1) - 1
    index = torch.where(steps <= last, last - steps, steps)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[2]))


class RecurrentEncoder(nn.Module):
    """``forward(x, lengths=None)`` → ``(outputs, hidden)`` over a padded batch (batch, time, features).

    ``outputs`` (batch, time, hidden × directions) are zero at padded steps; ``hidden`` (layers × directions, batch,
    hidden) holds every layer's state after each sequence's last real step (forward direction) and first step
    (backward direction), in ``nn.RNN``'s layout; ``final(hidden)`` picks the top layer's.

    Each layer and direction is its own one-layer ``nn.RNN``/``nn.LSTM``/``nn.GRU``. Instead of packing the batch
    (``pack_padded_sequence``, which torch.export cannot trace), the backward direction reads each sequence reversed
    within its length and the final states are gathered at each sequence's last real step: the result equals running
    every sequence alone, and the model still exports for serving.
    """

    def __init__(self, cfg: RNNConfig):
        super().__init__()
        self.cfg = cfg
        directions = 2 if cfg.bidirectional else 1
        self.layers = nn.ModuleList(
            nn.ModuleList(CELLS[cfg.cell](cfg.input_size if i == 0 else cfg.output_size, cfg.hidden_size,
                                          batch_first=True) for _ in range(directions))
            for i in range(cfg.num_layers)
        )
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if lengths is not None and not torch.compiler.is_exporting():
            _check_lengths(lengths, x.shape[1])
        mask = last = None
        if lengths is not None:
            lengths = lengths.to(x.device)
            mask = length_mask(lengths, x.shape[1]).unsqueeze(-1)
            last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, self.cfg.hidden_size)
        finals = []
        for i, directions in enumerate(self.layers):
            if i:
                x = self.dropout(x)
            outputs = []
            for d, rnn in enumerate(directions):
                out = rnn(x if d == 0 else reverse_within_lengths(x, lengths))[0]
                # Read the final state at the last real step: later (padded) steps would have moved it on.
                finals.append(out[:, -1] if last is None else out.gather(1, last).squeeze(1))
                outputs.append(out if d == 0 else reverse_within_lengths(out, lengths))
            x = torch.cat(outputs, dim=-1)
            if mask is not None:
                x = x * mask
        return x, torch.stack(finals)

    def final(self, hidden: torch.Tensor) -> torch.Tensor:
        """Top layer's final state(s) (batch, hidden × directions), forward then backward, from ``forward``'s."""
        directions = 2 if self.cfg.bidirectional else 1
        return torch.cat(list(hidden[-directions:]), dim=-1)


# ----------------------------------------------------------------------------------------------------- models


class RecurrentSequenceModel(nn.Module):
    """Features (batch, time, in) (+ lengths) → per-step outputs (batch, time, out), e.g. sequence labelling."""

    def __init__(self, cfg: RNNConfig, output_size: int):
        super().__init__()
        self.encoder = RecurrentEncoder(cfg)
        self.head = nn.Linear(cfg.output_size, output_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.encoder(x, lengths)[0])


POOLINGS = ("last", "mean", "max")


class RNNTextClassifier(nn.Module):
    """Token ids (batch, time) (+ lengths) → class logits; pooling over time: last state, mean or max."""

    def __init__(self, vocab_size: int, embed_dim: int, cfg: RNNConfig, num_classes: int, pooling: str = "last",
                 dropout: float = 0.0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
        if cfg.input_size != embed_dim:
            raise ConfigError(f"the recurrent input size {cfg.input_size} must equal embed_dim {embed_dim}")
        self.pooling = pooling
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.encoder = RecurrentEncoder(cfg)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cfg.output_size, num_classes)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        outputs, hidden = self.encoder(self.dropout(self.embedding(input_ids)), lengths)
        if self.pooling == "last":
            pooled = self.encoder.final(hidden)
        else:
            mask = torch.ones_like(input_ids, dtype=torch.bool) if lengths is None else length_mask(
                lengths.to(input_ids.device), input_ids.shape[1])
            mask = mask.unsqueeze(-1)
            if self.pooling == "mean":
                pooled = (outputs * mask).sum(1) / mask.sum(1).clamp(min=1)
            else:
                pooled = outputs.masked_fill(~mask, float("-inf")).amax(dim=1)
        return self.head(self.dropout(pooled))


class RNNLanguageModel(nn.Module):
    """Character/word language model (Karpathy's char-rnn): ids (batch, time) → next-token logits."""

    def __init__(self, vocab_size: int, embed_dim: int, cfg: RNNConfig, dropout: float = 0.0):
        super().__init__()
        if cfg.bidirectional:
            raise ConfigError("a language model reads left to right: set bidirectional=false")
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.rnn = CELLS[cfg.cell](embed_dim, cfg.hidden_size, num_layers=cfg.num_layers, batch_first=True,
                                   dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cfg.hidden_size, vocab_size)

    def forward_with_state(self, input_ids: torch.Tensor, state=None):
        """Logits and the recurrent state after the last step, to continue generation one token at a time."""
        outputs, state = self.rnn(self.dropout(self.embedding(input_ids)), state)
        return self.head(self.dropout(outputs)), state

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.forward_with_state(input_ids)[0]


@dataclass
class SeedRNNConfig:
    vocab_size: int = 57  # the tutorial's letters: ascii_letters + " .,;'"
    hidden_size: int = 128
    num_classes: int = 18  # the tutorial's 18 languages of surnames


class SeedRNN(nn.Module):
    """The seed's char-RNN name classifier (the PyTorch tutorial's ``RNN`` class), corrected.

    As in the tutorial, ``i2h`` and ``i2o`` read concat(one-hot letter, hidden) and the logits come from ``i2o`` at
    the last letter. Corrections: the hidden update goes through tanh (the tutorial's is linear, so its state can
    grow without bound over long names), the output is logits rather than log-softmax (the loss applies it), and
    whole batches of padded names run at once, with ``lengths`` selecting each name's last letter.
    """

    def __init__(self, cfg: SeedRNNConfig):
        super().__init__()
        self.cfg = cfg
        self.i2h = nn.Linear(cfg.vocab_size + cfg.hidden_size, cfg.hidden_size)
        self.i2o = nn.Linear(cfg.vocab_size + cfg.hidden_size, cfg.num_classes)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        batch, steps = input_ids.shape
        vocab = torch.arange(self.cfg.vocab_size, device=input_ids.device)
        one_hot = (input_ids.unsqueeze(-1) == vocab).to(self.i2h.weight.dtype)
        hidden = one_hot.new_zeros(batch, self.cfg.hidden_size)
        logits = one_hot.new_zeros(batch, self.cfg.num_classes)
        for t in range(steps):
            combined = torch.cat([one_hot[:, t], hidden], dim=1)
            new_hidden, new_logits = torch.tanh(self.i2h(combined)), self.i2o(combined)
            if lengths is None:
                hidden, logits = new_hidden, new_logits
            else:  # padded steps leave a finished name's state and logits untouched
                active = (lengths > t).unsqueeze(1)
                hidden = torch.where(active, new_hidden, hidden)
                logits = torch.where(active, new_logits, logits)
        return logits


# ----------------------------------------------------------------------------------------------------- variants


def _lengths_example_ids(vocab: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, vocab, (3, 8), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([8, 5, 2])
    return ids.masked_fill(~length_mask(lengths, 8), 0), lengths


def _features_example() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(3, 8, 16, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([8, 5, 2])
    return x * length_mask(lengths, 8).unsqueeze(-1), lengths


_TINY_SEQUENCE = {"hidden_size": 16}


def _sequence_model(cell, input_size, hidden_size, output_size, num_layers, bidirectional, dropout):
    return RecurrentSequenceModel(RNNConfig(cell, input_size, hidden_size, num_layers, bidirectional, dropout),
                                  output_size)


@register("model", "elman_rnn", example=_features_example, tiny=_TINY_SEQUENCE)
def elman_rnn(input_size: int = 16, hidden_size: int = 64, output_size: int = 8, num_layers: int = 2,
              bidirectional: bool = True, dropout: float = 0.0) -> RecurrentSequenceModel:
    """Elman (tanh) RNN over features (batch, time, in) + lengths → per-step outputs (batch, time, out)."""
    return _sequence_model("rnn", input_size, hidden_size, output_size, num_layers, bidirectional, dropout)


@register("model", "lstm", example=_features_example, tiny=_TINY_SEQUENCE)
def lstm(input_size: int = 16, hidden_size: int = 64, output_size: int = 8, num_layers: int = 2,
         bidirectional: bool = True, dropout: float = 0.0) -> RecurrentSequenceModel:
    """LSTM over features (batch, time, in) + lengths → per-step outputs (batch, time, out)."""
    return _sequence_model("lstm", input_size, hidden_size, output_size, num_layers, bidirectional, dropout)


@register("model", "gru", example=_features_example, tiny=_TINY_SEQUENCE)
def gru(input_size: int = 16, hidden_size: int = 64, output_size: int = 8, num_layers: int = 2,
        bidirectional: bool = True, dropout: float = 0.0) -> RecurrentSequenceModel:
    """GRU over features (batch, time, in) + lengths → per-step outputs (batch, time, out)."""
    return _sequence_model("gru", input_size, hidden_size, output_size, num_layers, bidirectional, dropout)


@register("model", "rnn_text_classifier", example=_lengths_example_ids,
          tiny={"vocab_size": 50, "embed_dim": 16, "hidden_size": 16, "dropout": 0.0})
def rnn_text_classifier(vocab_size: int = 20000, num_classes: int = 2, cell: str = "lstm", embed_dim: int = 128,
                        hidden_size: int = 128, num_layers: int = 1, bidirectional: bool = True,
                        pooling: str = "last", dropout: float = 0.3) -> RNNTextClassifier:
    """Text classifier: embedding → (Bi)RNN/LSTM/GRU → last|mean|max pooling → linear; (input_ids, lengths)."""
    cfg = RNNConfig(cell, embed_dim, hidden_size, num_layers, bidirectional, dropout)
    return RNNTextClassifier(vocab_size, embed_dim, cfg, num_classes, pooling, dropout)


@register("model", "char_rnn_lm", example=lambda: (_lengths_example_ids(65)[0],),
          tiny={"embed_dim": 16, "hidden_size": 32, "dropout": 0.0})
def char_rnn_lm(vocab_size: int = 65, cell: str = "lstm", embed_dim: int = 64, hidden_size: int = 512,
                num_layers: int = 2, dropout: float = 0.2) -> RNNLanguageModel:
    """Character-level language model (char-rnn: 2-layer LSTM, 512 wide); ids → next-token logits."""
    return RNNLanguageModel(vocab_size, embed_dim, RNNConfig(cell, embed_dim, hidden_size, num_layers, False, dropout),
                            dropout)


@register("model", "seed_rnn", example=lambda: _lengths_example_ids(57))
def seed_rnn(vocab_size: int = 57, hidden_size: int = 128, num_classes: int = 18) -> SeedRNN:
    """The seed's char-RNN name classifier (i2h/i2o over concat(letter, hidden), hidden 128); returns logits."""
    return SeedRNN(SeedRNNConfig(vocab_size, hidden_size, num_classes))
