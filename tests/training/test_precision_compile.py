import json

import pytest
import torch

import modelforge
from modelforge.core.registry import build
from modelforge.training.trainer import apply_activation_checkpointing

TINY = ["data.limit=128", "train.batch_size=16", "train.max_steps=4", "train.log_every_steps=1", "train.progress=off",
        "model.name=mlp", "model.hidden=[32]"]


def _losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["event"] == "train"]


def test_compile_gives_the_same_loss_curve(tmp_path):
    modelforge.train("digits-cnn", TINY, run_dir=tmp_path / "eager")
    # aot_eager runs TorchDynamo capture + AOTAutograd (the graph machinery of torch.compile) without the
    # minute-long C++ code generation of the default inductor backend, which benchmarks/gpu_gpt2.py exercises
    modelforge.train("digits-cnn", TINY + ["train.compile=true", "train.compile_backend=aot_eager"],
                     run_dir=tmp_path / "compiled")
    assert _losses(tmp_path / "compiled") == pytest.approx(_losses(tmp_path / "eager"), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_tracks_fp32(tmp_path, precision):
    modelforge.train("digits-cnn", TINY, run_dir=tmp_path / "fp32")
    modelforge.train("digits-cnn", TINY + [f"train.precision={precision}"], run_dir=tmp_path / precision)
    low, full = _losses(tmp_path / precision), _losses(tmp_path / "fp32")
    assert low == pytest.approx(full, rel=0.05) and low != full


def test_activation_checkpointing_same_gradients():
    torch.manual_seed(0)
    model = build("model", "gpt", vocab_size=32, max_positions=8, dim=16, num_layers=2, num_heads=2).eval()
    tokens = torch.randint(0, 32, (2, 8))
    model(tokens).sum().backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    assert apply_activation_checkpointing(model) == 2
    model(tokens).sum().backward()
    for name, param in model.named_parameters():
        assert torch.allclose(param.grad, plain[name], atol=1e-6), name
