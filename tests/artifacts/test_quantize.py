"""modelforge quantize (artifacts/quantize.py): int8 Linear layers measured on the run's test split, used by load
and serve; the onnxruntime int8 graph beside the export."""

import json

import pytest
import torch
from fastapi.testclient import TestClient
from hf_checkpoints import labelled_texts

import modelforge
from modelforge.core.errors import ArtifactError
from modelforge.serve.app import create_app
from modelforge.serve.inputs import ServeSettings

MODEL = {"name": "encoder_classifier", "dim": 32, "num_layers": 2, "num_heads": 2, "mlp_hidden": 64,
         "max_positions": 64}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quantize")
    recipe = {"name": "int8", "task": "text_classification",
              "data": {"source": "file", "path": str(labelled_texts(tmp / "texts.csv", copies=10)),
                       "test_fraction": 0.3},
              "model": MODEL, "train": {"max_steps": 8, "batch_size": 8, "progress": "off", "lr": 0.003}}
    return modelforge.train(recipe, run_dir=tmp / "run")


def test_unquantized_run_is_refused_by_quantized_load(run):
    with pytest.raises(ArtifactError, match="modelforge quantize"):
        modelforge.load(run.directory, quantized=True)


def test_cli_quantizes_measures_and_load_and_serve_use_it(cli, run):
    result = cli("quantize", str(run.directory), "--backend", "both")
    assert result.returncode == 0, result.stderr
    assert "torch int8" in result.stdout and "onnx int8" in result.stdout
    report = json.loads((run.model_dir / "quantization.json").read_text())
    measured = report["torch"]
    assert measured["split"] == "test" and measured["metric"] == "accuracy" and measured["examples"] > 0
    assert measured["int8"]["metrics"]["accuracy"] - measured["fp32"]["metrics"]["accuracy"] == \
        pytest.approx(measured["change"], abs=1e-6)
    assert measured["speedup"] > 0 and report["onnx"]["bytes"] < report["onnx"]["fp32_bytes"]
    assert (run.directory / "model.int8.onnx").is_file()

    plain = modelforge.load(run.directory)
    int8 = modelforge.load(run.directory, quantized=True)
    linears = [m for m in int8.model.modules() if type(m).__name__ == "Linear"]
    assert linears and all("quantized" in type(m).__module__ for m in linears)
    batch = plain.task.preprocess(["a good film 1", "a dull and silly movie 2"])
    with torch.inference_mode():
        a, b = plain.task.forward(plain.model, batch), int8.task.forward(int8.model, batch)
    assert not torch.equal(a, b) and (a - b).abs().max() < 0.1  # int8 rounding: close, not identical

    with TestClient(create_app([f"int8={run.directory}"], ServeSettings(quantized=True))) as client:
        answer = client.post("/models/int8/predict", json={"inputs": ["a good film"]})
        assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["probability"] == pytest.approx(
        int8.predict(["a good film"])[0]["probability"], abs=1e-6)
