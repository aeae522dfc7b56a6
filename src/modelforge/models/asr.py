"""ASR acoustic model for CTC: conv front-end over log-mels, a BiGRU or Transformer encoder, per-frame log-probs.

Input: log-mel features (batch, n_mels, time), zero past each utterance's end, and their valid lengths. The
front-end's two 3×3 convolutions halve the frequency axis twice and the time axis once (stride-2 subsampling), so
the output is (batch, time', vocab) log-probabilities with time' = ``output_lengths(time)``. Token 0 is the CTC
blank by convention; the task's alphabet decides the rest. CTC loss and decoding belong to the task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.core.registry import register
from modelforge.models.layers import SinusoidalPositions
from modelforge.models.layers.masks import length_mask
from modelforge.models.rnn import RecurrentEncoder, RNNConfig
from modelforge.models.transformer import TransformerBlock, TransformerConfig

ENCODERS = ("bigru", "transformer")


@dataclass
class ASRConfig:
    n_mels: int = 80
    vocab_size: int = 29  # blank + space + a–z + apostrophe
    channels: int = 32
    encoder: str = "bigru"  # bigru | transformer
    hidden_size: int = 256  # per direction for the BiGRU, model width for the Transformer
    num_layers: int = 3
    num_heads: int = 4
    dropout: float = 0.1
    max_frames: int = 4096  # Transformer positions, after subsampling

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ConfigError(f"unknown ASR encoder {self.encoder!r}; valid: {', '.join(ENCODERS)}")


def _conv_out(length: torch.Tensor | int, stride: int) -> torch.Tensor | int:
    # kernel 3, padding 1: floor((L + 2 - 3) / stride) + 1
    return (length - 1) // stride + 1


class ConvFrontEnd(nn.Module):
    """Two 3×3 conv + GELU layers: strides (2, 2) then (2, 1) over (frequency, time); output (batch, time', feat)."""

    def __init__(self, n_mels: int, channels: int, out_features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=(2, 2), padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1)
        freq = _conv_out(_conv_out(n_mels, 2), 2)
        self.proj = nn.Linear(channels * freq, out_features)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = F.gelu(self.conv1(features.unsqueeze(1)))  # (batch, channels, freq', time')
        if lengths is not None:
            # Zero the frames past each input's end, so that the next convolution sees there what it would see at
            # the edge of that input alone (its zero padding), and a batch gives what each input gets alone.
            x = x * length_mask(_conv_out(lengths, 2).to(x.device), x.shape[-1]).view(x.shape[0], 1, 1, -1)
        x = F.gelu(self.conv2(x))
        return self.proj(x.permute(0, 3, 1, 2).flatten(2))


class ASRModel(nn.Module):
    """``forward(features (batch, n_mels, time), lengths=None)`` → CTC log-probs (batch, time', vocab)."""

    def __init__(self, cfg: ASRConfig):
        super().__init__()
        self.cfg = cfg
        self.frontend = ConvFrontEnd(cfg.n_mels, cfg.channels, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.encoder == "bigru":
            self.rnn = RecurrentEncoder(RNNConfig("gru", cfg.hidden_size, cfg.hidden_size, cfg.num_layers, True,
                                                  cfg.dropout))
            width = 2 * cfg.hidden_size
        else:
            block_cfg = TransformerConfig(dim=cfg.hidden_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                                          dropout=cfg.dropout, attn_dropout=cfg.dropout, positions="none",
                                          max_positions=cfg.max_frames)
            self.positions = SinusoidalPositions(cfg.max_frames, cfg.hidden_size)
            self.blocks = nn.ModuleList(TransformerBlock(block_cfg) for _ in range(cfg.num_layers))
            self.norm = nn.LayerNorm(cfg.hidden_size)
            width = cfg.hidden_size
        self.head = nn.Linear(width, cfg.vocab_size)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames for input lengths: the time stride of 2 gives ceil(length / 2)."""
        return _conv_out(lengths, 2)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if features.dim() != 3 or features.shape[1] != self.cfg.n_mels:
            raise ConfigError(
                f"ASR input must be (batch, {self.cfg.n_mels} mels, time), got {tuple(features.shape)}; "
                "check the feature extractor's n_mels"
            )
        x = self.dropout(self.frontend(features, lengths))
        out_lengths = None if lengths is None else self.output_lengths(lengths)
        if self.cfg.encoder == "bigru":
            x = self.rnn(x, out_lengths)[0]
        else:
            mask = None if out_lengths is None else length_mask(out_lengths.to(x.device), x.shape[1])
            x = x + self.positions(x.shape[1])
            for block in self.blocks:
                x = block(x, key_padding_mask=mask)[0]
            x = self.norm(x)
        return self.head(self.dropout(x)).log_softmax(dim=-1)


def _example() -> tuple[torch.Tensor, torch.Tensor]:
    features = torch.randn(2, 16, 24, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([24, 17])
    return features * length_mask(lengths, 24).unsqueeze(1), lengths


# The example's 16 mels (not 80) keep the registry sweep fast; the layout is the same.
_TINY = {"n_mels": 16, "channels": 4, "hidden_size": 16, "num_layers": 2, "dropout": 0.0}


@register("model", "asr_bigru", example=_example, tiny=_TINY)
def asr_bigru(n_mels: int = 80, vocab_size: int = 29, channels: int = 32, hidden_size: int = 256,
              num_layers: int = 3, dropout: float = 0.1) -> ASRModel:
    """CTC acoustic model: conv front-end (time stride 2) + 3-layer BiGRU over log-mels → log-probs."""
    return ASRModel(ASRConfig(n_mels, vocab_size, channels, "bigru", hidden_size, num_layers, dropout=dropout))


@register("model", "asr_transformer", example=_example, tiny={**_TINY, "num_heads": 2})
def asr_transformer(n_mels: int = 80, vocab_size: int = 29, channels: int = 32, hidden_size: int = 256,
                    num_layers: int = 6, num_heads: int = 4, dropout: float = 0.1) -> ASRModel:
    """CTC acoustic model: conv front-end (time stride 2) + pre-LN Transformer encoder over log-mels → log-probs."""
    return ASRModel(ASRConfig(n_mels, vocab_size, channels, "transformer", hidden_size, num_layers, num_heads,
                              dropout))
