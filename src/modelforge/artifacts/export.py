"""Export a trained model to ONNX, verified against PyTorch with onnxruntime.

The exported graph is the network alone, as the task's ``forward`` calls it: inputs are what ``task.preprocess``
produces (for image classifiers, normalised float images), outputs the raw network outputs (logits). The task's
state (labels, normalisation …) is stored in the ONNX metadata as JSON under ``modelforge.task_state``, so another
runtime has everything needed to pre- and post-process. Tasks opt in through ``Task.example_inputs``.

A task whose network exports as several graphs says so through ``Task.export_graphs`` (``tasks/export_graphs.py``):
translation and summarization write ``model.encoder.onnx`` and ``model.decoder.onnx`` (with ``--output X.onnx``:
``X.encoder.onnx``, ``X.decoder.onnx``), each with the same metadata plus the task's (the decoding loop's contract),
checked by the task's own ``verify`` before either file is moved into place.

The TorchScript-based exporter (``dynamo=False``) is used: torch's newer ``torch.export`` path needs the
``onnxscript`` package, which modelforge does not depend on; the legacy path handles these feed-forward networks.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import sys
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from modelforge.artifacts.model_dir import LoadedArtifact, load_artifact
from modelforge.core.errors import ArtifactError, ConfigError, first_line

if TYPE_CHECKING:
    from modelforge.tasks.export_graphs import GraphSet

FORMATS = ("onnx",)
DEFAULT_OPSET = 17
OPSETS = range(9, 21)  # what the TorchScript exporter writes (9 = its base) and onnxruntime runs
TOLERANCE = 1e-4  # largest absolute difference from PyTorch's outputs accepted by the verification


@dataclass
class ExportedGraph:
    role: str  # "model" for a one-graph export, else the task's name for it ("encoder", "decoder")
    path: Path
    inputs: dict[str, list[int | str]]  # name → shape, dynamic axes by name
    outputs: list[str]


@dataclass
class ExportResult:
    """``path``/``inputs``/``outputs`` describe the first graph written (the encoder of an encoder–decoder);
    ``graphs`` lists every file, ``notes`` the further checks the verification passed."""

    path: Path
    opset: int
    inputs: dict[str, list[int | str]]
    outputs: list[str]
    max_abs_diff: float | None
    graphs: list[ExportedGraph] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [graph.path for graph in self.graphs] or [self.path]


def export(path: str | Path, format: str = "onnx", **options: Any) -> ExportResult:
    """Export the run (or model directory) at ``path``; only ``onnx`` for now."""
    if format != "onnx":
        raise ConfigError(f"unknown export format {format!r}; valid: {', '.join(FORMATS)}")
    return export_onnx(path, **options)


def default_output(model_dir: Path) -> Path:
    """``runs/<name>/model.onnx`` beside the model directory (the artifact directory itself stays as saved)."""
    return (model_dir.parent if model_dir.name == "model" else model_dir) / "model.onnx"


def export_onnx(
    path: str | Path, output: str | Path | None = None, opset: int = DEFAULT_OPSET, verify: bool = True
) -> ExportResult:
    """Write ``model.onnx`` with a dynamic batch axis; with ``verify`` check onnxruntime against PyTorch."""
    if opset not in OPSETS:
        raise ConfigError(f"ONNX opset {opset} is not supported; choose {OPSETS.start}…{OPSETS.stop - 1}")
    loaded = load_artifact(Path(path))
    target = Path(output) if output else default_output(loaded.directory)
    graph_set = loaded.task.export_graphs(loaded.model.eval())
    if graph_set is not None:
        return _export_graph_set(loaded, graph_set, target, opset, verify)
    examples = _example_inputs(loaded, batch_size=2)
    axes = loaded.task.export_dynamic_axes()
    with torch.no_grad():
        reference = loaded.model(*examples.values())
    outputs = ["output"] if isinstance(reference, torch.Tensor) else [f"output_{i}" for i in range(len(reference))]
    if isinstance(reference, dict):  # named heads (the detector's heatmap/size/offset) keep their names
        outputs = list(reference)
    output_axes = {name: axes.get("output", {0: "batch"}) for name in outputs}
    dynamic_axes = {**{k: v for k, v in axes.items() if k in examples}, **output_axes}

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        _torch_export(loaded.model, examples, tmp, outputs, dynamic_axes, opset)
        _add_metadata(tmp, loaded)
        diff = verify_onnx(tmp, loaded) if verify else None
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    shapes = _shapes(examples, dynamic_axes)
    return ExportResult(target, opset, shapes, outputs, diff, [ExportedGraph("model", target, shapes, outputs)])


def _shapes(examples: dict[str, torch.Tensor], dynamic_axes: dict[str, dict[int, str]]) -> dict[str, list[int | str]]:
    return {name: [dynamic_axes.get(name, {}).get(i, size) for i, size in enumerate(t.shape)]
            for name, t in examples.items()}


def graph_path(target: Path, role: str) -> Path:
    """``X.onnx`` → ``X.<role>.onnx``: the files of a several-graph export sit side by side."""
    stem = target.name[: -len(".onnx")] if target.name.endswith(".onnx") else target.name
    return target.with_name(f"{stem}.{role}.onnx")


def _export_graph_set(loaded: LoadedArtifact, graph_set: GraphSet, target: Path, opset: int,
                      verify: bool) -> ExportResult:
    """Write every graph of ``graph_set`` to a temporary sibling, verify them together, then move each in place."""
    targets = {graph.role: graph_path(target, graph.role) for graph in graph_set.graphs}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmps = {role: path.with_name(f".{path.name}.tmp-{os.getpid()}") for role, path in targets.items()}
    files = json.dumps({role: path.name for role, path in targets.items()})
    # the files are renamed into place one by one: a shared id lets a consumer refuse graphs from different exports
    export_id = uuid.uuid4().hex
    graphs = []
    try:
        for graph in graph_set.graphs:
            _torch_export(graph.module, graph.inputs, tmps[graph.role], graph.outputs, graph.dynamic_axes, opset)
            kept = _add_metadata(tmps[graph.role], loaded, {**graph_set.metadata, "modelforge.graph": graph.role,
                                                            "modelforge.graph_files": files,
                                                            "modelforge.export_id": export_id})
            # the exporter drops an input the graph never reads (a state the model overwrites before use)
            inputs = {name: t for name, t in graph.inputs.items() if name in kept}
            graphs.append(ExportedGraph(graph.role, targets[graph.role], _shapes(inputs, graph.dynamic_axes),
                                        graph.outputs))
        checked = graph_set.verify(tmps) if verify and graph_set.verify is not None else None
        for role, tmp in tmps.items():
            os.replace(tmp, targets[role])
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
    first = graphs[0]
    return ExportResult(first.path, opset, first.inputs, first.outputs,
                        checked.max_abs_diff if checked else None, graphs, checked.notes if checked else [])


def _takes_length(loaded: LoadedArtifact) -> bool:
    """Whether the task's ``example_inputs`` accepts a sequence ``length`` (text and speech tasks do)."""
    return "length" in inspect.signature(loaded.task.example_inputs).parameters


def _example_inputs(loaded: LoadedArtifact, batch_size: int, length: int | None = None) -> dict[str, torch.Tensor]:
    try:
        if length is not None and _takes_length(loaded):
            examples = loaded.task.example_inputs(batch_size, length=length)
        else:
            examples = loaded.task.example_inputs(batch_size)
    except NotImplementedError as exc:
        raise ArtifactError(f"{loaded.directory}: {exc}") from None
    if not examples or not all(isinstance(t, torch.Tensor) for t in examples.values()):
        raise ArtifactError(f"{loaded.directory}: task {loaded.recipe.task!r} gave no example input tensors")
    return examples


def _torch_export(model: torch.nn.Module, examples: dict[str, torch.Tensor], path: Path, outputs: list[str],
                  dynamic_axes: dict[str, dict[int, str]], opset: int) -> None:
    try:
        with warnings.catch_warnings(), _native_output_silenced():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notices, not actionable
            torch.onnx.export(
                model.eval(),
                tuple(examples.values()),
                str(path),
                dynamo=False,
                input_names=list(examples),
                output_names=outputs,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
            )
    except Exception as exc:  # the exporter raises many types (unsupported op, bad opset …); one line for users
        # the TorchScript exporter appends the whole graph's parameter list ("[Caused by …]"): not for users
        first = first_line(exc).split("[Caused by")[0].strip()
        first = first if len(first) <= 300 else first[:299] + "…"
        raise ArtifactError(f"ONNX export (opset {opset}) failed: {first}") from exc


@contextlib.contextmanager
def _native_output_silenced() -> Iterator[None]:
    """Send what C++ code writes to stdout/stderr (on failure the exporter dumps the whole traced graph there)
    to /dev/null; the one-line error says what failed."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _add_metadata(path: Path, loaded: LoadedArtifact, extra: dict[str, str] | None = None) -> list[str]:
    """Write the metadata into the ONNX file at ``path``; returns the graph's input names."""
    import onnx

    proto = onnx.load(str(path))
    meta = {
        "modelforge.recipe": loaded.recipe.name,
        "modelforge.task": loaded.recipe.task,
        "modelforge.model": loaded.recipe.model.name,
        "modelforge.task_state": json.dumps(loaded.task.state()),
        **(extra or {}),
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return [value.name for value in proto.graph.input]


VERIFY_LENGTHS = (None, 13)  # the traced sequence length, then another one (for tasks whose inputs have a length)


def verify_onnx(path: Path, loaded: LoadedArtifact, batch_size: int = 3) -> float:
    """Largest |onnxruntime − PyTorch| over a batch size other than the traced one (so the dynamic axis is used),
    and, for sequence inputs, also at another sequence length (so a time axis traced as a constant is caught)."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types
        raise ArtifactError(f"onnxruntime cannot load the exported model: {first_line(exc)}") from exc
    lengths = VERIFY_LENGTHS if _takes_length(loaded) else (None,)
    diff = 0.0
    for length in lengths:
        examples = _example_inputs(loaded, batch_size, length)
        with torch.no_grad():
            expected = loaded.model(*examples.values())
        expected_list = [expected] if isinstance(expected, torch.Tensor) else list(
            expected.values() if isinstance(expected, dict) else expected)
        shapes = ", ".join(f"{name}{list(t.shape)}" for name, t in examples.items())
        try:
            actual = session.run(None, {name: t.numpy() for name, t in examples.items()})
        except Exception as exc:  # the first line says which node failed
            raise ArtifactError(f"onnxruntime cannot run the exported model on {shapes}: {first_line(exc)}") from exc
        if any(a.shape != e.shape for a, e in zip(actual, expected_list)):
            raise ArtifactError(f"ONNX output shapes differ from PyTorch's on {shapes}; the export is wrong")
        diff = max(diff, *(float(np.abs(a - e.numpy()).max()) for a, e in zip(actual, expected_list)))
        if not diff <= TOLERANCE:
            raise ArtifactError(f"ONNX outputs differ from PyTorch by {diff:.3g} (> {TOLERANCE:g}) on {shapes}; "
                                "the export is wrong")
    return diff
