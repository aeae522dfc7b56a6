"""Transformers: one shared block (pre- or post-LN) and three models built from it.

- ``TransformerEncoder``: BERT layout (word + position + token-type embeddings, embedding LayerNorm, post-LN blocks,
  optional tanh pooler); returns hidden states. ``EncoderClassifier`` puts a mean/CLS/pooler head on it.
- ``GPT``: decoder-only, GPT-2 layout (pre-LN, final norm, output head tied to the token embedding), KV cache.
- ``TransformerSeq2Seq``: encoder–decoder with cross-attention, for translation and summarization; its decoder half
  (``cross_attention_decode``) is shared with the image captioner (``models/captioner.py``).

Parameter names are our own; ``models/hf.py`` maps them to and from Hugging Face checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.core.registry import register
from modelforge.models.layers import KVCache, MultiHeadAttention, RotaryEmbedding, make_mlp, make_norm, make_positions
from modelforge.models.layers.mlp_blocks import MLP_KINDS, ffn_activation
from modelforge.models.layers.norms import NORMS
from modelforge.models.layers.positions import POSITIONS


@dataclass
class TransformerConfig:
    vocab_size: int = 30522
    max_positions: int = 512
    dim: int = 256
    num_layers: int = 4
    num_heads: int = 4
    mlp_hidden: int | None = None  # None: 4 × dim
    dropout: float = 0.0  # on embeddings, attention outputs and feed-forward outputs
    attn_dropout: float = 0.0  # on attention probabilities
    pre_norm: bool = True  # False: post-LN (BERT, original Transformer)
    norm: str = "layernorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-5
    activation: str = "gelu"  # gelu (exact, BERT) | gelu_tanh (GPT-2) | relu | silu
    mlp: str = "mlp"  # mlp | swiglu
    positions: str = "learned"  # learned | sinusoidal | rotary | none
    bias: bool = True
    tie_weights: bool = True  # output head shares the token embedding matrix
    type_vocab_size: int = 0  # BERT segment embeddings; 0 = none
    embedding_norm: bool = False  # BERT normalises the summed embeddings
    scale_embeddings: bool = False  # multiply token embeddings by sqrt(dim) (Vaswani et al.)
    pooler: bool = False  # BERT's tanh(dense(h_CLS)); used by EncoderClassifier(pooling="pooler")

    def __post_init__(self) -> None:
        if self.mlp_hidden is None:
            self.mlp_hidden = 4 * self.dim
        for field, value, valid in (("norm", self.norm, NORMS), ("mlp", self.mlp, MLP_KINDS),
                                    ("positions", self.positions, POSITIONS)):
            if value not in valid:
                raise ConfigError(f"unknown transformer {field} {value!r}; valid: {', '.join(valid)}")
        ffn_activation(self.activation)
        if self.dim % self.num_heads:
            raise ConfigError(f"transformer dim {self.dim} is not divisible by num_heads={self.num_heads}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


@dataclass
class Seq2SeqTransformerConfig(TransformerConfig):
    """``vocab_size`` is the target vocabulary, ``num_layers`` the encoder depth."""

    src_vocab_size: int = 8000
    num_decoder_layers: int = 3
    share_embeddings: bool = False  # one joint source/target vocabulary and embedding table


class TransformerBlock(nn.Module):
    """Self-attention (+ cross-attention in a decoder) + feed-forward, each with a residual connection and a norm."""

    def __init__(self, cfg: TransformerConfig, *, causal: bool = False, cross_attention: bool = False,
                 rotary: RotaryEmbedding | None = None):
        super().__init__()
        self.pre_norm = cfg.pre_norm
        self.attn = MultiHeadAttention(cfg.dim, cfg.num_heads, bias=cfg.bias, dropout=cfg.attn_dropout,
                                       causal=causal, rotary=rotary)
        self.norm1 = make_norm(cfg.norm, cfg.dim, cfg.norm_eps, cfg.bias)
        if cross_attention:
            self.cross_attn = MultiHeadAttention(cfg.dim, cfg.num_heads, bias=cfg.bias, dropout=cfg.attn_dropout,
                                                 cross_attention=True)
            self.norm_cross = make_norm(cfg.norm, cfg.dim, cfg.norm_eps, cfg.bias)
        else:
            self.cross_attn = None
        self.mlp = make_mlp(cfg.mlp, cfg.dim, cfg.mlp_hidden, cfg.activation, cfg.dropout, cfg.bias)
        self.norm2 = make_norm(cfg.norm, cfg.dim, cfg.norm_eps, cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        # In eval mode dropout is the identity; skipping the call saves per-token work when decoding.
        return self.dropout(x) if self.training and self.dropout.p > 0 else x

    def _residual(self, x: torch.Tensor, norm: nn.Module, attn: MultiHeadAttention, need_weights: bool, **kwargs):
        if self.pre_norm:
            out, weights = attn(norm(x), need_weights=need_weights, **kwargs)
            return x + self._drop(out), weights
        out, weights = attn(x, need_weights=need_weights, **kwargs)
        return norm(x + self._drop(out)), weights

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        cross_cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns ``(x, self_attention_weights, cross_attention_weights)``; weights are None unless requested."""
        x, weights = self._residual(x, self.norm1, self.attn, need_weights, key_padding_mask=key_padding_mask,
                                    cache=cache)
        cross_weights = None
        if self.cross_attn is not None:
            x, cross_weights = self._residual(x, self.norm_cross, self.cross_attn, need_weights, memory=memory,
                                              key_padding_mask=memory_mask, cache=cross_cache)
        x = x + self.mlp(self.norm2(x)) if self.pre_norm else self.norm2(x + self.mlp(x))
        return x, weights, cross_weights


class Embeddings(nn.Module):
    """Token (+ absolute position) (+ token-type) embeddings, optional norm, dropout."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.positions = make_positions(cfg.positions, cfg.max_positions, cfg.dim)
        self.token_types = nn.Embedding(cfg.type_vocab_size, cfg.dim) if cfg.type_vocab_size else None
        self.norm = make_norm(cfg.norm, cfg.dim, cfg.norm_eps, cfg.bias) if cfg.embedding_norm else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.scale = math.sqrt(cfg.dim) if cfg.scale_embeddings else 1.0

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                offset: int = 0) -> torch.Tensor:
        x = self.tokens(input_ids)
        if self.scale != 1.0:
            x = x * self.scale
        if self.positions is not None:
            x = x + self.positions(input_ids.shape[1], offset)
        if self.token_types is not None:
            # Without segment ids every token is segment 0: add that row instead of gathering a tensor of zeros.
            x = x + (self.token_types.weight[0] if token_type_ids is None else self.token_types(token_type_ids))
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x) if self.training and self.dropout.p > 0 else x


def _rotary(cfg: TransformerConfig) -> RotaryEmbedding | None:
    return RotaryEmbedding(cfg.head_dim, cfg.max_positions) if cfg.positions == "rotary" else None


def init_weights(model: nn.Module, num_layers: int, std: float = 0.02) -> None:
    """GPT-2 initialisation: N(0, 0.02) weights, zero biases, residual projections scaled by 1/sqrt(2·layers)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
    residual_std = std / math.sqrt(2 * max(num_layers, 1))
    for name, param in model.named_parameters():
        if name.endswith(("attn.out.weight", "mlp.fc2.weight", "mlp.w2.weight")):
            nn.init.normal_(param, std=residual_std)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Average of the hidden states of real (unmasked) tokens: (batch, time, dim) → (batch, dim)."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


# ----------------------------------------------------------------------------------------------------- encoder


class TransformerEncoder(nn.Module):
    """Bidirectional encoder; ``forward(input_ids, attention_mask, token_type_ids)`` → (batch, time, dim)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        rotary = _rotary(cfg)
        self.blocks = nn.ModuleList(TransformerBlock(cfg, rotary=rotary) for _ in range(cfg.num_layers))
        # Post-LN blocks end in a norm already; pre-LN stacks need one after the last block.
        self.final_norm = make_norm(cfg.norm, cfg.dim, cfg.norm_eps, cfg.bias) if cfg.pre_norm else None
        self.pooler = nn.Linear(cfg.dim, cfg.dim) if cfg.pooler else None
        init_weights(self, cfg.num_layers)

    def _run(self, input_ids, attention_mask, token_type_ids, need_weights: bool):
        x = self.embeddings(input_ids, token_type_ids)
        all_weights = []
        for block in self.blocks:
            x, weights, _ = block(x, key_padding_mask=attention_mask, need_weights=need_weights)
            all_weights.append(weights)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, all_weights

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self._run(input_ids, attention_mask, token_type_ids, need_weights=False)[0]

    def attention_maps(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       token_type_ids: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Attention probabilities of every layer, each (batch, heads, time, time), for explanations."""
        return self._run(input_ids, attention_mask, token_type_ids, need_weights=True)[1]

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """BERT's pooled output ``tanh(dense(h_CLS))``; needs ``pooler=True``."""
        if self.pooler is None:
            raise ConfigError("this encoder has no pooler; build it with pooler=True or use mean pooling")
        return torch.tanh(self.pooler(hidden[:, 0]))


POOLINGS = ("mean", "cls", "pooler")


class EncoderClassifier(nn.Module):
    """Text classifier: encoder → mean-pool / CLS / BERT pooler → dropout → linear; returns logits."""

    def __init__(self, cfg: TransformerConfig, num_classes: int, pooling: str = "mean", dropout: float = 0.1):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
        self.pooling = pooling
        self.encoder = TransformerEncoder(replace(cfg, pooler=pooling == "pooler"))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cfg.dim, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask)
        if self.pooling == "mean":
            pooled = mean_pool(hidden, attention_mask)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            pooled = self.encoder.pool(hidden)
        return self.head(self.dropout(pooled))


# ----------------------------------------------------------------------------------------------------- GPT


def pick_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids (batch, 1) from last-position logits (batch, vocab): greedy at temperature 0, else sampled."""
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)


class GPT(nn.Module):
    """Decoder-only language model; ``forward(input_ids, caches=None)`` → logits (batch, time, vocab)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        rotary = _rotary(cfg)
        self.blocks = nn.ModuleList(TransformerBlock(cfg, causal=True, rotary=rotary) for _ in range(cfg.num_layers))
        self.final_norm = make_norm(cfg.norm, cfg.dim, cfg.norm_eps, cfg.bias)
        # Tied: logits use the embedding matrix directly (no second Parameter), so the state dict holds one copy
        # and safetensors never sees two names for one tensor.
        self.lm_head = None if cfg.tie_weights else nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        init_weights(self, cfg.num_layers)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.final_norm(hidden)
        if self.lm_head is None:
            return F.linear(hidden, self.embeddings.tokens.weight)
        return self.lm_head(hidden)

    def hidden_states(self, input_ids: torch.Tensor, caches: list[KVCache] | None = None) -> torch.Tensor:
        """Last block's output before the final norm; with ``caches`` the input continues the cached positions."""
        offset = caches[0].length if caches else 0
        x = self.embeddings(input_ids, offset=offset)
        for i, block in enumerate(self.blocks):
            x = block(x, cache=caches[i] if caches else None)[0]
        return x

    def forward(self, input_ids: torch.Tensor, caches: list[KVCache] | None = None) -> torch.Tensor:
        return self.head(self.hidden_states(input_ids, caches))

    def make_caches(self, batch: int, max_length: int | None = None) -> list[KVCache]:
        """One empty KV cache per block, in the dtype and device of the parameters."""
        param = self.embeddings.tokens.weight
        length = max_length or self.cfg.max_positions
        return [block.attn.make_cache(batch, length, param.dtype, param.device) for block in self.blocks]

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, *, use_cache: bool = True,
                 temperature: float = 0.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Append ``max_new_tokens`` tokens (greedy at temperature 0) to equal-length prompts; returns all ids.

        Past ``max_positions`` tokens, both modes condition on the last ``max_positions`` tokens (nanoGPT's
        cropping); the cached mode then refills its cache from that window, so both modes give the same tokens.
        """
        window = self.cfg.max_positions
        batch, start = input_ids.shape
        # One buffer for prompt + continuation: no per-token torch.cat (a copy of everything so far).
        ids = torch.empty(batch, start + max_new_tokens, dtype=input_ids.dtype, device=input_ids.device)
        ids[:, :start] = input_ids
        caches, fresh = None, input_ids
        for end in range(start, start + max_new_tokens):
            if not use_cache:
                hidden = self.hidden_states(ids[:, max(0, end - window) : end])
            elif caches is None or caches[0].length + fresh.shape[1] > window:
                caches = self.make_caches(batch, window)
                hidden = self.hidden_states(ids[:, max(0, end - window) : end], caches)
            else:
                hidden = self.hidden_states(fresh, caches)
            # Only the last position's logits are needed: skip the vocabulary projection for the others.
            fresh = pick_next(self.head(hidden[:, -1]), temperature, top_k, generator)
            ids[:, end : end + 1] = fresh
        return ids


# ----------------------------------------------------------------------------------------------------- seq2seq


def cross_attention_decode(model: nn.Module, tgt_ids: torch.Tensor, memory: torch.Tensor,
                           memory_mask: torch.Tensor | None = None,
                           caches: list[tuple[KVCache, KVCache]] | None = None) -> torch.Tensor:
    """The decoder half of an encoder–decoder: target embeddings → causal blocks attending over ``memory`` → norm →
    head. ``model`` holds ``tgt_embeddings``, ``decoder_blocks``, ``decoder_norm`` and ``lm_head`` (None: tied to the
    token embedding) — ``TransformerSeq2Seq`` and ``captioner.ImageCaptioner`` share it; with ``caches`` the ids
    continue the cached positions."""
    offset = caches[0][0].length if caches else 0
    x = model.tgt_embeddings(tgt_ids, offset=offset)
    for i, block in enumerate(model.decoder_blocks):
        cache, cross_cache = caches[i] if caches else (None, None)
        x = block(x, memory=memory, memory_mask=memory_mask, cache=cache, cross_cache=cross_cache)[0]
    if model.decoder_norm is not None:
        x = model.decoder_norm(x)
    if model.lm_head is None:
        return F.linear(x, model.tgt_embeddings.tokens.weight)
    return model.lm_head(x)


def cross_attention_caches(model: nn.Module, batch: int, max_length: int,
                           memory_length: int) -> list[tuple[KVCache, KVCache]]:
    """Empty (self-attention, cross-attention) KV caches per decoder block, for ``cross_attention_decode``."""
    param = model.tgt_embeddings.tokens.weight
    return [
        (block.attn.make_cache(batch, max_length, param.dtype, param.device),
         block.cross_attn.make_cache(batch, memory_length, param.dtype, param.device))
        for block in model.decoder_blocks
    ]


class TransformerSeq2Seq(nn.Module):
    """Encoder–decoder; ``forward(src_ids, tgt_ids, src_mask)`` → teacher-forced logits (batch, tgt_time, vocab)."""

    def __init__(self, cfg: Seq2SeqTransformerConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.share_embeddings and cfg.src_vocab_size != cfg.vocab_size:
            raise ConfigError(
                f"share_embeddings needs one vocabulary, got src_vocab_size={cfg.src_vocab_size} and "
                f"vocab_size={cfg.vocab_size}; make them equal or set share_embeddings=false"
            )
        self.tgt_embeddings = Embeddings(cfg)
        # Shared: no second module, so the state dict holds one table (see GPT for why).
        self.src_embeddings = None if cfg.share_embeddings else Embeddings(replace(cfg, vocab_size=cfg.src_vocab_size))
        self.encoder_blocks = nn.ModuleList(TransformerBlock(cfg, rotary=_rotary(cfg)) for _ in range(cfg.num_layers))
        self.decoder_blocks = nn.ModuleList(
            TransformerBlock(cfg, causal=True, cross_attention=True, rotary=_rotary(cfg))
            for _ in range(cfg.num_decoder_layers)
        )
        self.encoder_norm = make_norm(cfg.norm, cfg.dim, cfg.norm_eps, cfg.bias) if cfg.pre_norm else None
        self.decoder_norm = make_norm(cfg.norm, cfg.dim, cfg.norm_eps, cfg.bias) if cfg.pre_norm else None
        self.lm_head = None if cfg.tie_weights else nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        init_weights(self, cfg.num_layers + cfg.num_decoder_layers)

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder memory (batch, src_time, dim); ``src_mask`` is True/1 on real source tokens."""
        x = (self.src_embeddings or self.tgt_embeddings)(src_ids)
        for block in self.encoder_blocks:
            x = block(x, key_padding_mask=src_mask)[0]
        return self.encoder_norm(x) if self.encoder_norm is not None else x

    def decode(self, tgt_ids: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor | None = None,
               caches: list[tuple[KVCache, KVCache]] | None = None) -> torch.Tensor:
        """Logits for ``tgt_ids`` given the memory; with ``caches`` the ids continue the cached positions."""
        return cross_attention_decode(self, tgt_ids, memory, src_mask, caches)

    def forward(self, src_ids: torch.Tensor, tgt_ids: torch.Tensor,
                src_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(tgt_ids, self.encode(src_ids, src_mask), src_mask)

    def make_caches(self, batch: int, max_length: int, src_length: int) -> list[tuple[KVCache, KVCache]]:
        return cross_attention_caches(self, batch, max_length, src_length)

    @torch.no_grad()
    def generate(self, src_ids: torch.Tensor, bos_id: int, max_new_tokens: int,
                 src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy decoding with KV caches: (batch, 1 + max_new_tokens) ids starting with ``bos_id``.

        Stopping at end-of-sequence and beam search are decoding policy and belong to the task.
        """
        memory = self.encode(src_ids, src_mask)
        batch = src_ids.shape[0]
        caches = self.make_caches(batch, min(1 + max_new_tokens, self.cfg.max_positions), src_ids.shape[1])
        ids = torch.full((batch, 1), bos_id, dtype=torch.long, device=src_ids.device)
        fresh = ids
        for _ in range(max_new_tokens):
            fresh = self.decode(fresh, memory, src_mask, caches)[:, -1].argmax(dim=-1, keepdim=True)
            ids = torch.cat([ids, fresh], dim=1)
        return ids


# ----------------------------------------------------------------------------------------------------- variants


def _ids(batch: int, length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def _padded_mask(lengths: list[int], length: int) -> torch.Tensor:
    return (torch.arange(length).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).long()


def _encoder_example(vocab: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    return _ids(2, 10, vocab), _padded_mask([10, 7], 10)


def _bert(vocab_size, max_positions, dim, num_layers, num_heads, mlp_hidden, dropout, type_vocab_size=2):
    return TransformerConfig(
        vocab_size=vocab_size, max_positions=max_positions, dim=dim, num_layers=num_layers, num_heads=num_heads,
        mlp_hidden=mlp_hidden, dropout=dropout, attn_dropout=dropout, pre_norm=False, norm_eps=1e-12,
        activation="gelu", type_vocab_size=type_vocab_size, embedding_norm=True,
    )


_TINY_ENCODER = {"vocab_size": 64, "dim": 32, "num_layers": 2, "num_heads": 2, "mlp_hidden": 64, "dropout": 0.0}


@register("model", "bert_tiny", example=_encoder_example, tiny=_TINY_ENCODER)
def bert_tiny(vocab_size: int = 30522, max_positions: int = 512, dim: int = 128, num_layers: int = 2,
              num_heads: int = 2, mlp_hidden: int = 512, dropout: float = 0.1) -> TransformerEncoder:
    """BERT-tiny encoder (2 layers, 128 wide, 2 heads, post-LN); returns hidden states."""
    return TransformerEncoder(_bert(vocab_size, max_positions, dim, num_layers, num_heads, mlp_hidden, dropout))


@register("model", "minilm_l6", example=_encoder_example, tiny=_TINY_ENCODER)
def minilm_l6(vocab_size: int = 30522, max_positions: int = 512, dim: int = 384, num_layers: int = 6,
              num_heads: int = 12, mlp_hidden: int = 1536, dropout: float = 0.1) -> TransformerEncoder:
    """MiniLM-L6-H384 BERT encoder (6 layers, 384 wide, 12 heads) — all-MiniLM-L6-v2's shape; hidden states."""
    return TransformerEncoder(_bert(vocab_size, max_positions, dim, num_layers, num_heads, mlp_hidden, dropout))


@register("model", "bert_base", example=_encoder_example, tiny=_TINY_ENCODER)
def bert_base(vocab_size: int = 30522, max_positions: int = 512, dim: int = 768, num_layers: int = 12,
              num_heads: int = 12, mlp_hidden: int = 3072, dropout: float = 0.1) -> TransformerEncoder:
    """BERT-base encoder (12 layers, 768 wide, 12 heads, 110M parameters); returns hidden states."""
    return TransformerEncoder(_bert(vocab_size, max_positions, dim, num_layers, num_heads, mlp_hidden, dropout))


@register("model", "encoder_classifier", example=_encoder_example,
          tiny={**_TINY_ENCODER, "classifier_dropout": 0.0})
def encoder_classifier(vocab_size: int = 30522, num_classes: int = 2, pooling: str = "mean",
                       max_positions: int = 512, dim: int = 256, num_layers: int = 4, num_heads: int = 4,
                       mlp_hidden: int = 1024, dropout: float = 0.1, classifier_dropout: float = 0.1,
                       ) -> EncoderClassifier:
    """Text classifier: BERT-layout encoder + mean|cls|pooler pooling + linear; (input_ids, attention_mask)."""
    cfg = _bert(vocab_size, max_positions, dim, num_layers, num_heads, mlp_hidden, dropout)
    return EncoderClassifier(cfg, num_classes, pooling, classifier_dropout)


def _gpt_example(vocab: int = 64) -> tuple[torch.Tensor]:
    return (_ids(2, 16, vocab),)


_TINY_GPT = {"vocab_size": 64, "max_positions": 32, "dim": 32, "num_layers": 2, "num_heads": 2, "dropout": 0.0}


def _gpt2_layout(vocab_size, max_positions, dim, num_layers, num_heads, dropout, **extra) -> TransformerConfig:
    return TransformerConfig(vocab_size=vocab_size, max_positions=max_positions, dim=dim, num_layers=num_layers,
                             num_heads=num_heads, dropout=dropout, attn_dropout=dropout, activation="gelu_tanh",
                             **extra)


@register("model", "gpt", example=_gpt_example, tiny=_TINY_GPT)
def gpt(vocab_size: int = 50257, max_positions: int = 256, dim: int = 192, num_layers: int = 6, num_heads: int = 6,
        dropout: float = 0.1, mlp_hidden: int | None = None, positions: str = "learned", norm: str = "layernorm",
        mlp: str = "mlp", activation: str = "gelu_tanh", bias: bool = True, tie_weights: bool = True) -> GPT:
    """Configurable decoder-only GPT (positions learned|sinusoidal|rotary, norm, mlp|swiglu, bias, tying)."""
    return GPT(TransformerConfig(vocab_size=vocab_size, max_positions=max_positions, dim=dim, num_layers=num_layers,
                                 num_heads=num_heads, dropout=dropout, attn_dropout=dropout, mlp_hidden=mlp_hidden,
                                 positions=positions, norm=norm, mlp=mlp, activation=activation, bias=bias,
                                 tie_weights=tie_weights))


@register("model", "gpt_char_baby", example=_gpt_example, tiny=_TINY_GPT)
def gpt_char_baby(vocab_size: int = 65, max_positions: int = 256, dim: int = 384, num_layers: int = 6,
                  num_heads: int = 6, dropout: float = 0.2) -> GPT:
    """nanoGPT's "baby GPT" for character-level Shakespeare (6 layers, 6 heads, 384 wide, 256 context)."""
    return GPT(_gpt2_layout(vocab_size, max_positions, dim, num_layers, num_heads, dropout))


@register("model", "gpt_mini", example=_gpt_example, tiny=_TINY_GPT)
def gpt_mini(vocab_size: int = 50257, max_positions: int = 256, dim: int = 192, num_layers: int = 6,
             num_heads: int = 6, dropout: float = 0.1) -> GPT:
    """minGPT's gpt-mini (6 layers, 6 heads, 192 wide) in the GPT-2 layout."""
    return GPT(_gpt2_layout(vocab_size, max_positions, dim, num_layers, num_heads, dropout))


@register("model", "gpt2", example=_gpt_example, tiny=_TINY_GPT)
def gpt2(vocab_size: int = 50257, max_positions: int = 1024, dim: int = 768, num_layers: int = 12,
         num_heads: int = 12, dropout: float = 0.1) -> GPT:
    """GPT-2 small (124M: 12 layers, 12 heads, 768 wide, 1024 context); loads HF weights via models.hf."""
    return GPT(_gpt2_layout(vocab_size, max_positions, dim, num_layers, num_heads, dropout))


@register("model", "gpt_llama_style", example=_gpt_example, tiny={**_TINY_GPT, "mlp_hidden": 96})
def gpt_llama_style(vocab_size: int = 32000, max_positions: int = 256, dim: int = 288, num_layers: int = 6,
                    num_heads: int = 6, mlp_hidden: int = 768, dropout: float = 0.0) -> GPT:
    """LLaMA-style decoder: RMSNorm, rotary positions, SwiGLU, no biases, untied head (llama2.c 15M shape)."""
    return GPT(TransformerConfig(vocab_size=vocab_size, max_positions=max_positions, dim=dim, num_layers=num_layers,
                                 num_heads=num_heads, mlp_hidden=mlp_hidden, dropout=dropout, attn_dropout=dropout,
                                 norm="rmsnorm", positions="rotary", mlp="swiglu", bias=False, tie_weights=False))


def _seq2seq_example(src_vocab: int = 48, tgt_vocab: int = 40) -> tuple[torch.Tensor, ...]:
    return _ids(2, 9, src_vocab), _ids(2, 7, tgt_vocab, seed=1), _padded_mask([9, 6], 9)


_TINY_SEQ2SEQ = {"src_vocab_size": 48, "tgt_vocab_size": 40, "dim": 32, "num_layers": 2, "num_decoder_layers": 2,
                 "num_heads": 2, "mlp_hidden": 64, "dropout": 0.0}


@register("model", "transformer_seq2seq_small", example=_seq2seq_example, tiny=_TINY_SEQ2SEQ)
def transformer_seq2seq_small(src_vocab_size: int = 8000, tgt_vocab_size: int = 8000, dim: int = 256,
                              num_layers: int = 3, num_decoder_layers: int = 3, num_heads: int = 4,
                              mlp_hidden: int = 1024, dropout: float = 0.1, max_positions: int = 256,
                              share_embeddings: bool = False) -> TransformerSeq2Seq:
    """Small pre-LN encoder–decoder Transformer (3+3 layers, 256 wide, sinusoidal) for translation/summaries."""
    return TransformerSeq2Seq(Seq2SeqTransformerConfig(
        vocab_size=tgt_vocab_size, src_vocab_size=src_vocab_size, dim=dim, num_layers=num_layers,
        num_decoder_layers=num_decoder_layers, num_heads=num_heads, mlp_hidden=mlp_hidden, dropout=dropout,
        attn_dropout=dropout, max_positions=max_positions, positions="sinusoidal", scale_embeddings=True,
        activation="relu", share_embeddings=share_embeddings))


@register("model", "transformer_seq2seq_base", example=_seq2seq_example, tiny=_TINY_SEQ2SEQ)
def transformer_seq2seq_base(src_vocab_size: int = 37000, tgt_vocab_size: int = 37000, dim: int = 512,
                             num_layers: int = 6, num_decoder_layers: int = 6, num_heads: int = 8,
                             mlp_hidden: int = 2048, dropout: float = 0.1, max_positions: int = 512,
                             share_embeddings: bool = False) -> TransformerSeq2Seq:
    """The original Transformer-base (Vaswani et al. 2017: post-LN, 6+6 layers, 512 wide, 8 heads)."""
    return TransformerSeq2Seq(Seq2SeqTransformerConfig(
        vocab_size=tgt_vocab_size, src_vocab_size=src_vocab_size, dim=dim, num_layers=num_layers,
        num_decoder_layers=num_decoder_layers, num_heads=num_heads, mlp_hidden=mlp_hidden, dropout=dropout,
        attn_dropout=dropout, max_positions=max_positions, positions="sinusoidal", scale_embeddings=True,
        activation="relu", pre_norm=False, share_embeddings=share_embeddings))
