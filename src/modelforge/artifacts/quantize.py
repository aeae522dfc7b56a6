"""``modelforge quantize RUN``: int8 dynamic quantization of a trained model's Linear layers, measured.

Two back ends:

- ``torch``: ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` (int8 weights, activations quantized
  per batch at run time). Dynamic quantization is a deterministic function of the fp32 weights, so the artifact
  keeps only ``quantization.json`` (what to quantize, and the measurements) next to its fp32 ``model.safetensors``:
  ``load(RUN, quantized=True)`` and ``serve --quantized`` quantize the loaded model the same way. Nothing packed or
  pickled is written.
- ``onnx``: ``onnxruntime.quantization.quantize_dynamic`` on the run's exported ONNX graph, written beside it as
  ``model.int8.onnx`` (exported first when missing); its largest logit change against the fp32 graph and its speed
  under onnxruntime are measured on the task's example inputs. Only one-graph exports: a run exported as encoder +
  decoder graphs (translation, summarization, Whisper) is refused with a one-line error (``--backend torch`` works).

The torch measurement runs the run's own evaluation (``task.evaluate``) on its test split (the validation split when
there is none) with the fp32 and the int8 model, and times the same forward passes (best of ``repeats``, one thread
count for both), so ``accuracy_change`` and ``speedup`` compare like with like on this machine.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

from modelforge.artifacts.int8 import QUANTIZATION_FILE, quantize_linear
from modelforge.core.atomic import atomic_write_json
from modelforge.core.errors import ArtifactError, ConfigError

BACKENDS = ("torch", "onnx", "both")


def _held_out(task: Any, limit: int | None) -> tuple[str, Any]:
    splits = task.datasets()
    for name in ("test", "val"):
        dataset = getattr(splits, name)
        if dataset is not None:
            if limit and len(dataset) > limit:
                from torch.utils.data import Subset

                dataset = Subset(dataset, range(limit))
            return name, dataset
    raise ArtifactError("the run's recipe has no test or validation split to measure the quantized model on")


def _measure(task: Any, model: torch.nn.Module, dataset: Any, batch_size: int, repeats: int) -> dict[str, Any]:
    """The task's metrics on ``dataset`` and the best wall time over ``repeats`` full passes."""
    from modelforge.training.batches import eval_loader

    best = float("inf")
    metrics: dict[str, Any] = {}
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            metrics = task.evaluate(model, eval_loader(dataset, batch_size, task.collate))
            best = min(best, time.perf_counter() - start)
    floats = {k: round(float(v), 6) for k, v in metrics.items() if isinstance(v, (int, float))}
    return {"metrics": floats, "seconds": round(best, 4)}


def _main_metric(metrics: dict[str, float]) -> str:
    for name in ("accuracy", "loss", "perplexity"):
        if name in metrics:
            return name
    return next(iter(metrics))


def measure_torch(loaded: Any, limit: int | None = None, batch_size: int = 64, repeats: int = 3) -> dict[str, Any]:
    split, dataset = _held_out(loaded.task, limit)
    fp32 = _measure(loaded.task, loaded.model, dataset, batch_size, repeats)
    int8 = _measure(loaded.task, quantize_linear(loaded.model), dataset, batch_size, repeats)
    metric = _main_metric(fp32["metrics"])
    return {
        "layers": ["Linear"], "dtype": "qint8", "split": split, "examples": len(dataset), "metric": metric,
        "fp32": fp32, "int8": int8,
        "change": round(int8["metrics"][metric] - fp32["metrics"][metric], 6),
        "speedup": round(fp32["seconds"] / max(int8["seconds"], 1e-9), 3),
        "threads": torch.get_num_threads(),
    }


def _ort_seconds(path: Path, feeds: dict[str, Any], repeats: int) -> tuple[float, list[Any]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, feeds)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        best = min(best, time.perf_counter() - start)
    return best, outputs


def quantize_onnx(run: Path, loaded: Any, repeats: int = 20) -> dict[str, Any]:
    """``model.int8.onnx`` beside the run's ``model.onnx`` (exported if missing), with its logit change and speed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from modelforge.artifacts.export import default_output, export

    source = default_output(loaded.directory)
    if not source.is_file():
        source = export(loaded.directory).path
    target = source.with_name(source.stem + ".int8.onnx")
    tmp = target.with_name(f".{target.name}.tmp")
    quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8)
    tmp.replace(target)
    examples = loaded.task.example_inputs(batch_size=8)
    feeds = {name: tensor.numpy() for name, tensor in examples.items()}
    fp32_s, fp32_out = _ort_seconds(source, feeds, repeats)
    int8_s, int8_out = _ort_seconds(target, feeds, repeats)
    diff = max(float(abs(a - b).max()) for a, b in zip(fp32_out, int8_out))
    return {"file": target.name, "fp32_seconds": round(fp32_s, 6), "int8_seconds": round(int8_s, 6),
            "speedup": round(fp32_s / max(int8_s, 1e-9), 3), "max_abs_logit_change": round(diff, 6),
            "bytes": target.stat().st_size, "fp32_bytes": source.stat().st_size}


def quantize_run(run: str | Path, backend: str = "torch", limit: int | None = None,
                 batch_size: int = 64, repeats: int = 3) -> dict[str, Any]:
    """Quantize a run's model, measure it, and write ``RUN/model/quantization.json``; returns what it wrote."""
    from modelforge.artifacts.model_dir import load_artifact

    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r} is not known; valid: {', '.join(BACKENDS)}")
    loaded = load_artifact(Path(run))
    if backend in ("onnx", "both") and loaded.task.export_graphs(loaded.model.eval()) is not None:
        raise ConfigError(f"--backend {backend}: {loaded.directory} exports as several ONNX graphs (encoder + "
                          "decoder), which the onnx back end does not quantize; use --backend torch")
    report: dict[str, Any] = {"date": date.today().isoformat()}
    if backend in ("torch", "both"):
        report["torch"] = measure_torch(loaded, limit, batch_size, repeats)
    if backend in ("onnx", "both"):
        report["onnx"] = quantize_onnx(Path(run), loaded)
    atomic_write_json(loaded.directory / QUANTIZATION_FILE, report)
    return report
