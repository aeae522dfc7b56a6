"""train.channels_last: CNNs train in NHWC with the same losses as NCHW, and what the run leaves behind (checkpoint,
resume, artifact, ONNX export) is the same as an ordinary run's."""

import json
import shutil

import pytest
import torch
from torch import nn

import modelforge
from modelforge.artifacts.export import TOLERANCE, export_onnx
from modelforge.artifacts.model_dir import load_artifact
from modelforge.training.memory_format import to_channels_last, use_channels_last

TINY = ["data.limit=96", "train.batch_size=16", "train.max_steps=3", "train.log_every_steps=1", "train.progress=off",
        "train.checkpoint_every_steps=2"]
QUICK = {"report": False, "baseline": False}


def _losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["event"] == "train"]


def test_channels_last_is_opt_in_and_only_for_conv2d_models():
    cnn, mlp = nn.Sequential(nn.Conv2d(1, 4, 3)), nn.Sequential(nn.Linear(4, 2))
    assert not use_channels_last(cnn, None) and not use_channels_last(mlp, None)
    assert use_channels_last(cnn, True) and not use_channels_last(cnn, False) and not use_channels_last(mlp, True)


def test_only_4d_batch_tensors_change_layout():
    image, labels = torch.zeros(2, 3, 5, 5), torch.zeros(2, dtype=torch.long)
    x, y = to_channels_last((image, labels))
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    assert y is labels and to_channels_last({"image": image})["image"].is_contiguous(memory_format=torch.channels_last)


def test_channels_last_run_matches_nchw_and_its_checkpoint_artifact_and_onnx_export_work(tmp_path):
    nchw = modelforge.train("digits-cnn", TINY + ["train.channels_last=false"], run_dir=tmp_path / "nchw", **QUICK)
    nhwc = modelforge.train("digits-cnn", TINY + ["train.channels_last=true"], run_dir=tmp_path / "nhwc", **QUICK)
    assert _losses(tmp_path / "nhwc") == pytest.approx(_losses(tmp_path / "nchw"), rel=1e-4, abs=1e-5)
    assert nhwc.metrics["test_accuracy"] == pytest.approx(nchw.metrics["test_accuracy"], abs=0.02)

    # the saved model is in the ordinary layout and loads; its ONNX export matches PyTorch
    loaded = load_artifact(tmp_path / "nhwc")
    assert all(p.is_contiguous() for p in loaded.model.parameters())
    result = export_onnx(tmp_path / "nhwc")
    assert result.max_abs_diff is not None and result.max_abs_diff <= TOLERANCE

    # resume from the step-2 checkpoint written in channels-last: the last step repeats exactly
    checkpoints = sorted((tmp_path / "nhwc" / "checkpoints").iterdir())
    for later in checkpoints[1:]:
        shutil.rmtree(later)
    resumed = modelforge.train("digits-cnn", TINY + ["train.channels_last=true"], run_dir=tmp_path / "nhwc",
                               resume=True, **QUICK)
    assert resumed.summary["steps"] == 3
    assert _losses(tmp_path / "nhwc")[-1] == pytest.approx(_losses(tmp_path / "nchw")[-1], rel=1e-4, abs=1e-5)
