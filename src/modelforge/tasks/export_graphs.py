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

import torch
from torch import nn


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
