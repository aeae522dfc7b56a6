"""Hugging Face interop: BERT and GPT-2 checkpoint directories ↔ our ``TransformerEncoder`` and ``GPT``.

A checkpoint directory holds ``config.json`` and ``model.safetensors`` (or a sharded ``model.safetensors.index.json``,
or ``pytorch_model.bin`` read with ``torch.load(weights_only=True)`` — never unpickled code). Saving writes
``config.json`` + ``model.safetensors`` that ``transformers`` loads with ``from_pretrained``.

Weight maps are explicit tables of (our name, HF name); an HF key that the table does not know, or a parameter of
ours that the checkpoint lacks, is an ``ArtifactError`` naming the keys. GPT-2 stores its linear layers as
``Conv1D`` with the weight as (in, out), i.e. transposed relative to ``nn.Linear``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from modelforge.core.errors import ArtifactError, ConfigError
from modelforge.models.transformer import GPT, TransformerConfig, TransformerEncoder

# HF keys that are not weights of the architecture: buffers older checkpoints saved, and pre-training heads.
_IGNORED_SUFFIXES = ("embeddings.position_ids", ".attn.bias", ".attn.masked_bias")
_IGNORED_PREFIXES = ("cls.",)  # BertForPreTraining's MLM/NSP heads: not part of the encoder


def read_hf_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of an HF checkpoint directory (single or sharded safetensors, or pytorch_model.bin)."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return load_file(path / "model.safetensors")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(path / shard))
        return state
    if (path / "pytorch_model.bin").is_file():
        # weights_only: tensors and plain containers only; a pickle that wants to run code is refused.
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise ArtifactError(
        f"no weights in {path}: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )


def read_hf_config(path: str | Path, model_type: str) -> dict:
    file = Path(path) / "config.json"
    if not file.is_file():
        raise ArtifactError(f"{file} is missing; a Hugging Face checkpoint directory needs its config.json")
    config = json.loads(file.read_text())
    if config.get("model_type") != model_type:
        raise ArtifactError(
            f"{file} describes a {config.get('model_type')!r} model, not {model_type!r}; use the matching loader"
        )
    return config


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Task-head checkpoints (BertForX, GPT2LMHeadModel) nest the base model under ``prefix``; drop it."""
    if any(k.startswith(prefix) for k in state):
        return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
    return state


def _load_mapped(model: torch.nn.Module, state: dict[str, torch.Tensor], mapping: Iterable[tuple[str, str, bool]],
                 source: Path, extra_ok: Iterable[str] = ()) -> None:
    """Copy ``state[hf]`` (transposed where flagged) into each ``model`` parameter ``ours``; check both key sets."""
    ours = model.state_dict()
    mapping = list(mapping)
    missing = [hf for _, hf, _ in mapping if hf not in state]
    if missing:
        raise ArtifactError(f"{source}: checkpoint lacks {len(missing)} weights the model needs, e.g. {missing[:4]}")
    used = {hf for _, hf, _ in mapping} | set(extra_ok)
    unknown = [k for k in state if k not in used and not k.endswith(_IGNORED_SUFFIXES)
               and not k.startswith(_IGNORED_PREFIXES)]
    if unknown:
        raise ArtifactError(
            f"{source}: {len(unknown)} checkpoint weights have no place in the model, e.g. {unknown[:4]}; "
            "is the config.json from the same checkpoint?"
        )
    new_state = {}
    for name, hf, transpose in mapping:
        tensor = state[hf].t() if transpose else state[hf]
        if tensor.shape != ours[name].shape:
            raise ArtifactError(
                f"{source}: {hf} has shape {tuple(tensor.shape)} but {name} needs {tuple(ours[name].shape)}"
            )
        new_state[name] = tensor.to(ours[name].dtype)
    model.load_state_dict(new_state, strict=True)


# ----------------------------------------------------------------------------------------------------- BERT


def bert_config(hf: dict) -> TransformerConfig:
    """Our encoder config for an HF ``BertConfig`` dict; unsupported variants are a ConfigError."""
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(f"BERT position_embedding_type {hf['position_embedding_type']!r} is not supported; "
                          "only 'absolute'")
    act = hf.get("hidden_act", "gelu")
    activations = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
    if act not in activations:
        raise ConfigError(f"BERT hidden_act {act!r} is not supported; valid: {', '.join(activations)}")
    return TransformerConfig(
        vocab_size=hf["vocab_size"], max_positions=hf.get("max_position_embeddings", 512), dim=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
        mlp_hidden=hf.get("intermediate_size", 4 * hf["hidden_size"]), dropout=hf.get("hidden_dropout_prob", 0.1),
        attn_dropout=hf.get("attention_probs_dropout_prob", 0.1), pre_norm=False,
        norm_eps=hf.get("layer_norm_eps", 1e-12), activation=activations[act],
        type_vocab_size=hf.get("type_vocab_size", 2), embedding_norm=True, positions="learned",
    )


def _bert_map(cfg: TransformerConfig, pooler: bool) -> list[tuple[str, str, bool]]:
    """(ours, HF, transpose) for every tensor; q/k/v are fused in ours and handled separately."""
    pairs = [("embeddings.tokens.weight", "embeddings.word_embeddings.weight"),
             ("embeddings.positions.weight", "embeddings.position_embeddings.weight"),
             ("embeddings.token_types.weight", "embeddings.token_type_embeddings.weight"),
             ("embeddings.norm.weight", "embeddings.LayerNorm.weight"),
             ("embeddings.norm.bias", "embeddings.LayerNorm.bias")]
    for i in range(cfg.num_layers):
        ours, hf = f"blocks.{i}.", f"encoder.layer.{i}."
        for suffix in ("weight", "bias"):
            pairs += [(f"{ours}attn.out.{suffix}", f"{hf}attention.output.dense.{suffix}"),
                      (f"{ours}norm1.{suffix}", f"{hf}attention.output.LayerNorm.{suffix}"),
                      (f"{ours}mlp.fc1.{suffix}", f"{hf}intermediate.dense.{suffix}"),
                      (f"{ours}mlp.fc2.{suffix}", f"{hf}output.dense.{suffix}"),
                      (f"{ours}norm2.{suffix}", f"{hf}output.LayerNorm.{suffix}")]
    if pooler:
        pairs += [("pooler.weight", "pooler.dense.weight"), ("pooler.bias", "pooler.dense.bias")]
    return [(ours, hf, False) for ours, hf in pairs]


def _qkv_names(i: int) -> list[str]:
    return [f"encoder.layer.{i}.attention.self.{part}" for part in ("query", "key", "value")]


def load_hf_bert(path: str | Path) -> TransformerEncoder:
    """Our BERT-layout encoder with the weights of an HF BERT checkpoint directory (pooler kept if present)."""
    path = Path(path)
    cfg = bert_config(read_hf_config(path, "bert"))
    state = _strip_prefix(read_hf_state_dict(path), "bert.")
    cfg.pooler = "pooler.dense.weight" in state
    model = TransformerEncoder(cfg)
    # Fuse HF's separate query/key/value projections into our single qkv projection.
    fused = dict(state)
    qkv_keys = []
    for i in range(cfg.num_layers):
        names = _qkv_names(i)
        for suffix in ("weight", "bias"):
            keys = [f"{n}.{suffix}" for n in names]
            missing = [k for k in keys if k not in state]
            if missing:
                raise ArtifactError(f"{path}: checkpoint lacks {missing[0]}")
            fused[f"blocks.{i}.attn.qkv.{suffix}"] = torch.cat([state[k] for k in keys])
            qkv_keys += keys
    mapping = _bert_map(cfg, cfg.pooler) + [
        (f"blocks.{i}.attn.qkv.{s}", f"blocks.{i}.attn.qkv.{s}", False) for i in range(cfg.num_layers)
        for s in ("weight", "bias")
    ]
    _load_mapped(model, fused, mapping, path, extra_ok=qkv_keys)
    return model


def save_hf_bert(model: TransformerEncoder, path: str | Path) -> Path:
    """Write ``model`` as an HF ``BertModel`` directory (config.json + model.safetensors); returns ``path``."""
    cfg = model.cfg
    if cfg.pre_norm or not cfg.embedding_norm or cfg.positions != "learned" or cfg.norm != "layernorm" \
            or cfg.mlp != "mlp" or not cfg.bias or not cfg.type_vocab_size or cfg.activation == "silu":
        raise ConfigError("only BERT-layout encoders (post-LN, learned positions, token types, GELU/ReLU, biases) "
                          "save as BERT")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    ours = model.state_dict()
    state = {hf: ours[name] for name, hf, _ in _bert_map(cfg, model.pooler is not None)}
    for i in range(cfg.num_layers):
        for suffix in ("weight", "bias"):
            for name, part in zip(_qkv_names(i), ours[f"blocks.{i}.attn.qkv.{suffix}"].chunk(3), strict=True):
                state[f"{name}.{suffix}"] = part
    save_file({k: v.detach().contiguous() for k, v in state.items()}, path / "model.safetensors",
              metadata={"format": "pt"})
    act = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}[cfg.activation]
    config = {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim, "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.mlp_hidden, "hidden_act": act, "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attn_dropout, "max_position_embeddings": cfg.max_positions,
        "type_vocab_size": cfg.type_vocab_size, "layer_norm_eps": cfg.norm_eps,
        "position_embedding_type": "absolute", "pad_token_id": 0,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return path


# ----------------------------------------------------------------------------------------------------- GPT-2

_GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}


def gpt2_config(hf: dict) -> TransformerConfig:
    """Our GPT config for an HF ``GPT2Config`` dict; unsupported variants are a ConfigError."""
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
        if hf.get(flag):
            raise ConfigError(f"GPT-2 option {flag}=true is not supported; only the standard GPT-2 layout loads")
    if not hf.get("scale_attn_weights", True):
        raise ConfigError("GPT-2 option scale_attn_weights=false is not supported")
    act = hf.get("activation_function", "gelu_new")
    if act not in _GPT2_ACTIVATIONS:
        raise ConfigError(f"GPT-2 activation_function {act!r} is not supported; valid: {', '.join(_GPT2_ACTIVATIONS)}")
    dim = hf.get("n_embd", 768)
    return TransformerConfig(
        vocab_size=hf.get("vocab_size", 50257), max_positions=hf.get("n_positions", 1024), dim=dim,
        num_layers=hf.get("n_layer", 12), num_heads=hf.get("n_head", 12), mlp_hidden=hf.get("n_inner") or 4 * dim,
        dropout=hf.get("resid_pdrop", 0.1), attn_dropout=hf.get("attn_pdrop", 0.1),
        norm_eps=hf.get("layer_norm_epsilon", 1e-5), activation=_GPT2_ACTIVATIONS[act],
        tie_weights=hf.get("tie_word_embeddings", True),
    )


def _gpt2_map(cfg: TransformerConfig) -> list[tuple[str, str, bool]]:
    mapping = [("embeddings.tokens.weight", "wte.weight", False), ("embeddings.positions.weight", "wpe.weight", False),
               ("final_norm.weight", "ln_f.weight", False), ("final_norm.bias", "ln_f.bias", False)]
    for i in range(cfg.num_layers):
        ours, hf = f"blocks.{i}.", f"h.{i}."
        for a, b in (("norm1", "ln_1"), ("norm2", "ln_2")):
            mapping += [(f"{ours}{a}.weight", f"{hf}{b}.weight", False), (f"{ours}{a}.bias", f"{hf}{b}.bias", False)]
        for a, b in (("attn.qkv", "attn.c_attn"), ("attn.out", "attn.c_proj"), ("mlp.fc1", "mlp.c_fc"),
                     ("mlp.fc2", "mlp.c_proj")):
            # Conv1D keeps (in, out): transpose into nn.Linear's (out, in).
            mapping += [(f"{ours}{a}.weight", f"{hf}{b}.weight", True), (f"{ours}{a}.bias", f"{hf}{b}.bias", False)]
    if not cfg.tie_weights:
        mapping.append(("lm_head.weight", "lm_head.weight", False))
    return mapping


def load_hf_gpt2(path: str | Path) -> GPT:
    """Our GPT with the weights of an HF GPT-2 checkpoint directory (``GPT2Model`` or ``GPT2LMHeadModel``)."""
    path = Path(path)
    cfg = gpt2_config(read_hf_config(path, "gpt2"))
    state = read_hf_state_dict(path)
    head = state.pop("lm_head.weight", None)
    state = _strip_prefix(state, "transformer.")
    if head is not None:
        if cfg.tie_weights and "wte.weight" in state and not torch.equal(head, state["wte.weight"]):
            raise ArtifactError(f"{path}: lm_head.weight differs from wte.weight but config.json says the weights "
                                "are tied; set tie_word_embeddings=false in config.json")
        if not cfg.tie_weights:
            state["lm_head.weight"] = head
    model = GPT(cfg)
    _load_mapped(model, state, _gpt2_map(cfg), path)
    return model


def save_hf_gpt2(model: GPT, path: str | Path) -> Path:
    """Write ``model`` as an HF ``GPT2LMHeadModel`` directory (config.json + model.safetensors); returns ``path``."""
    cfg = model.cfg
    if not cfg.pre_norm or cfg.positions != "learned" or cfg.norm != "layernorm" or cfg.mlp != "mlp" \
            or not cfg.bias or cfg.type_vocab_size or cfg.embedding_norm or cfg.scale_embeddings \
            or cfg.activation == "silu":
        raise ConfigError("only GPT-2-layout models (pre-LN, learned positions, LayerNorm, GELU/ReLU MLP, biases) "
                          "save as GPT-2")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    ours = model.state_dict()
    state = {}
    for name, hf, transpose in _gpt2_map(cfg):
        tensor = ours[name].t() if transpose else ours[name]
        state[hf if hf == "lm_head.weight" else f"transformer.{hf}"] = tensor.detach().contiguous()
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    act = {v: k for k, v in _GPT2_ACTIVATIONS.items() if k != "gelu_pytorch_tanh"}[cfg.activation]
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": cfg.vocab_size,
        "n_positions": cfg.max_positions, "n_embd": cfg.dim, "n_layer": cfg.num_layers, "n_head": cfg.num_heads,
        "n_inner": cfg.mlp_hidden, "activation_function": act, "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.attn_dropout, "layer_norm_epsilon": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_weights, "scale_attn_weights": True,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return path
