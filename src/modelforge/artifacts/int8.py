"""Int8 dynamic quantization of Linear layers, as ``modelforge quantize`` measured it and ``load(quantized=True)``
applies it (``artifacts/quantize.py`` is the measuring command; this is what loading needs)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from modelforge.core.errors import ArtifactError, ConfigError

QUANTIZATION_FILE = "quantization.json"


def quantize_linear(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with int8 dynamic-quantized ``nn.Linear`` layers (a new module; the fp32 one is untouched)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao's deprecation notice (its successor, torchao, is not a dependency)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        quantized = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=False)
    if not any("quantized" in type(m).__module__ for m in quantized.modules()):
        raise ConfigError("the model has no nn.Linear layer to quantize")
    return quantized.eval()


def read_settings(model_dir: Path) -> dict[str, Any]:
    file = Path(model_dir) / QUANTIZATION_FILE
    if not file.is_file():
        raise ArtifactError(f"{file} is missing: run `modelforge quantize {Path(model_dir).parent}` first")
    try:
        settings = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{file} is corrupt ({exc})") from None
    if not isinstance(settings.get("torch"), dict):
        raise ArtifactError(f"{file} holds no torch quantization; run `modelforge quantize RUN --backend torch`")
    return settings
