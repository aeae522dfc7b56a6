"""Lower-precision copies of a model for decoding: ``fp32`` (as trained), ``bf16`` weights, ``int8`` weights.

Batch-1 decoding reads every weight once per token, so its speed is bounded by bytes of weights ÷ memory bandwidth:
halving or quartering the bytes raises that ceiling. ``int8`` quantizes every ``nn.Linear`` (and a tied output head,
which otherwise is the embedding matrix used through ``F.linear``) to per-output-channel int8 weights with PyTorch's
dynamic quantization (fbgemm; activations are quantized per tensor on the fly). On the 2-core benchmark machine this
ran faster than the weight-only ``torch._weight_int8pack_mm`` kernel with bf16 activations (see
``benchmarks/gpt_vs_hf.py``, which prints both). Embedding tables, norms and the KV cache stay in fp32 under
``int8``; under ``bf16`` everything is bf16.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from modelforge.core.errors import ConfigError

DECODE_DTYPES = ("fp32", "bf16", "int8")


def for_decoding(model: nn.Module, dtype: str = "fp32") -> nn.Module:
    """A copy of ``model`` (in eval mode) whose weights are held in ``dtype``; ``fp32`` returns ``model`` itself."""
    if dtype not in DECODE_DTYPES:
        raise ConfigError(f"unknown decoding dtype {dtype!r}; valid: {', '.join(DECODE_DTYPES)}")
    if dtype == "fp32":
        return model
    converted = copy.deepcopy(model).eval()
    if dtype == "bf16":
        return converted.to(torch.bfloat16)
    if next(converted.parameters()).device.type != "cpu":
        raise ConfigError("int8 decoding runs on the CPU only; use --dtype bf16 on an accelerator")
    _untie_output_head(converted)
    with warnings.catch_warnings():
        # torch.ao's eager quantization warns that it moves to torchao; it is still the fastest int8 path here.
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            converted, {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, dtype=torch.qint8
        )


def _untie_output_head(model: nn.Module) -> None:
    """Give a GPT with a tied head its own ``lm_head`` Linear (same values), so quantization reaches the head too.

    The embedding table stays a float table: a lookup reads one row per token, the head reads all of it.
    """
    cfg = getattr(model, "cfg", None)
    if getattr(model, "lm_head", "absent") is None and hasattr(model, "embeddings") and cfg is not None:
        table = model.embeddings.tokens.weight
        head = nn.Linear(table.shape[1], table.shape[0], bias=False)
        head.weight = nn.Parameter(table.detach().clone())
        model.lm_head = head


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights a batch-1 decoding step reads: every parameter and buffer, plus packed int8 weights.

    Embedding tables count one row each (a lookup reads one row, not the table) unless they also serve as the
    output head (tied), which reads all of them.
    """
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            tied = getattr(model, "lm_head", "absent") is None and module is getattr(
                getattr(model, "embeddings", None), "tokens", None)
            rows = module.weight.shape[0] if tied else 1
            total += rows * module.weight.shape[1] * module.weight.element_size()
            continue
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            total += tensor.numel() * tensor.element_size()
        if isinstance(module, torch.ao.nn.quantized.dynamic.Linear):  # int8 weights live in packed params
            weight, bias = module.weight(), module.bias()
            total += weight.numel() * weight.element_size()
            if bias is not None:
                total += bias.numel() * bias.element_size()
    return total
