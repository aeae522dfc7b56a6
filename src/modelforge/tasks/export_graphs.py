"""What a task hands the ONNX exporter when its network exports as several graphs instead of one.

An encoder–decoder cannot be one useful graph: its decoding loop (greedy or beam search, stopping at end-of-sequence)
runs outside the network. As Hugging Face Optimum does, it exports an ``encoder`` graph and a ``decoder`` graph
and the consumer runs the loop. ``Task.export_graphs(model)`` returns a ``GraphSet``: one ``OnnxGraph`` per file
(a wrapper module whose ``forward`` takes the inputs in order, example inputs to trace with, output names and
dynamic axes), metadata written into every file (what another runtime needs to run the loop), and a ``verify``
callback the exporter calls with the written files, which checks them against PyTorch with onnxruntime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from modelforge.core.errors import ArtifactError


@dataclass
class OnnxGraph:
    """One exported file: ``role`` names it (``model.<role>.onnx``) and is stored as ``modelforge.graph``."""

    role: str
    module: nn.Module
    inputs: dict[str, torch.Tensor]  # example inputs in ``module.forward``'s argument order; keys = ONNX names
    outputs: list[str]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)  # by input and output name


@dataclass
class Verification:
    max_abs_diff: float  # largest |onnxruntime − PyTorch| over the checked outputs
    notes: list[str] = field(default_factory=list)  # further checks passed, one line each (printed by the CLI)


@dataclass
class GraphSet:
    graphs: list[OnnxGraph]
    metadata: dict[str, str] = field(default_factory=dict)  # extra ONNX metadata for every file (JSON strings)
    # Called with {role: written file}; raises ArtifactError when onnxruntime disagrees with PyTorch.
    verify: Callable[[dict[str, Path]], Verification] | None = None


class EncodeGraph(nn.Module):
    """The ``encoder`` graph of a model with ``encode(inputs) -> memory`` (captioner, Whisper-style speech)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model.encode(inputs)


class DecodeGraph(nn.Module):
    """The ``decoder`` graph of a model with ``decode(tgt_ids, memory) -> logits`` (no KV cache: the whole prefix)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tgt_ids: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return self.model.decode(tgt_ids, memory)


def checked_difference(actual: np.ndarray, expected: np.ndarray, shapes: str, tolerance: float) -> float:
    """Largest |onnxruntime − PyTorch| of one check; ArtifactError when the shapes or the values disagree."""
    if actual.shape != expected.shape:
        raise ArtifactError(f"ONNX logits have shape {list(actual.shape)}, PyTorch's {list(expected.shape)} on "
                            f"{shapes}; the export is wrong")
    diff = float(np.abs(actual - expected).max())
    if not diff <= tolerance:
        raise ArtifactError(f"ONNX logits differ from PyTorch by {diff:.3g} (> {tolerance:g}) on {shapes}; "
                            "the export is wrong")
    return diff
