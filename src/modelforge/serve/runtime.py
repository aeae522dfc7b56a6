"""Which runtime runs a served model's batched forward pass: onnxruntime where it can, else PyTorch.

For a small network the framework's per-call overhead is most of a forward pass: on the MNIST CNN an onnxruntime
session answers a batch of 8 several times faster than ``torch.inference_mode`` (see docs/RESULTS.md). The server
uses the run's ONNX export (``modelforge export RUN`` writes ``RUN/model.onnx``) when all of these hold, and PyTorch
otherwise:

- the task's forward is the plain ``model(batch)`` (``Task.forward`` not overridden), its preprocessed batch is one
  tensor, and the graph has one input and one output, so the session computes exactly what the network does;
- no per-call options and no int8 model are asked for;
- the session's outputs match PyTorch's on the task's example inputs (a stale or foreign export falls back).

Pre- and post-processing stay the task's own: only ``model(batch)`` changes hands.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from modelforge.artifacts.export import default_output
from modelforge.tasks.base import Task

log = logging.getLogger("modelforge.serve")
RUNTIMES = ("auto", "torch", "onnx")
MATCH_TOLERANCE = 1e-3  # largest absolute difference of outputs accepted between the session and PyTorch


class OnnxForward:
    """``task.preprocess → onnxruntime session → task.postprocess`` for a batch of validated inputs."""

    def __init__(self, task: Task, path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.task, self.path = task, path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def outputs(self, batch: torch.Tensor) -> torch.Tensor:
        array = batch.detach().cpu().float().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])

    def __call__(self, items: list[Any]) -> list[Any]:
        with torch.inference_mode():
            return self.task.postprocess(self.outputs(self.task.preprocess(items)))


def _plain_forward(task: Task) -> bool:
    return type(task).forward is Task.forward


def onnx_forward(predictor: Any, options: dict[str, Any], quantized: bool) -> OnnxForward | None:
    """An onnxruntime forward for this predictor when the conditions in the module docstring hold, else None (the
    reason is logged)."""
    path = default_output(Path(predictor.directory))  # where ``modelforge export`` writes it
    if not path.is_file() or options or quantized or not _plain_forward(predictor.task):
        return None
    try:
        runner = OnnxForward(predictor.task, path)
        if len(runner.session.get_inputs()) != 1 or len(runner.session.get_outputs()) != 1:
            log.info("%s: the ONNX graph is not one input and one output; serving with PyTorch", path)
            return None
        example = predictor.task.example_inputs(2)
        if len(example) != 1:
            return None
        batch = next(iter(example.values()))
        with torch.inference_mode():
            expected = predictor.task.forward(predictor.model, batch)
        got = runner.outputs(batch)
        if got.shape != expected.shape or float((got - expected).abs().max()) > MATCH_TOLERANCE:
            log.warning("%s does not match the PyTorch model (re-run `modelforge export`); serving with PyTorch", path)
            return None
    except Exception as exc:  # onnxruntime missing, an unreadable graph, an example the graph refuses: use PyTorch
        log.warning("%s cannot serve this model (%s: %s); serving with PyTorch", path, type(exc).__name__, exc)
        return None
    return runner


def batch_runner(predictor: Any, options: dict[str, Any], runtime: str = "auto",
                 quantized: bool = False) -> tuple[Callable[[list[Any]], list[Any]], str]:
    """The function the batcher calls with a batch of validated inputs, and the runtime's name ("onnx"/"torch")."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime != "torch":
        runner = onnx_forward(predictor, options, quantized)
        if runner is not None:
            return runner, "onnx"
        if runtime == "onnx":
            from modelforge.core.errors import ArtifactError

            raise ArtifactError(f"{predictor.directory}: cannot serve with onnxruntime (no usable model.onnx: run "
                                "`modelforge export RUN`; the server log says why)")

    def run(items: list[Any]) -> list[Any]:
        return predictor.predict(items, **options)

    return run, "torch"
