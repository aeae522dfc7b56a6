"""Distributed training on CPU with gloo, launched through the real CLI (`--nproc`, which runs torchrun)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

BASE = ["digits-cnn", "data.limit=256", "train.batch_size=32", "train.max_steps=8", "train.epochs=5",
        "train.progress=off", "train.log_every_steps=1", "train.optimizer=sgd", "train.momentum=0.9", "train.lr=0.05",
        "train.keep_checkpoints=10"]
WORKER = Path(__file__).with_name("fsdp_worker.py")


def _train(cli, run_dir, *extra, nproc=None):
    args = ["train", *BASE, *extra, "--run-dir", str(run_dir)]
    if nproc:
        args += ["--nproc", str(nproc)]
    result = cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return load_file(str(run_dir / "model" / "model.safetensors"))


def _close(a, b, atol):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol), (name, (a[name] - b[name]).abs().max())


@pytest.fixture(scope="module")
def single_and_ddp(tmp_path_factory, cli):
    root = tmp_path_factory.mktemp("ddp")
    single = _train(cli, root / "single")
    ddp = _train(cli, root / "ddp", "train.strategy=ddp", "train.checkpoint_every_steps=4", nproc=2)
    return root, single, ddp


def test_ddp_two_processes_equal_one_process(single_and_ddp):
    root, single, ddp = single_and_ddp
    _close(single, ddp, atol=1e-5)
    lines = (root / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len([line for line in lines if '"event": "train"' in line]) == 8  # rank 0 alone writes the log


def test_ddp_evaluations_equal_one_process(single_and_ddp):
    """Each rank evaluates its share of the validation and test splits (144 and 359 rows: shares of 3 and 2, 6 and 6
    batches) and the gathered metrics are those of one process over the whole split."""
    root, _, _ = single_and_ddp
    single, ddp = (_evaluations(root / name) for name in ("single", "ddp"))
    assert [row["step"] for row in ddp] == [row["step"] for row in single] and {row["event"] for row in ddp} == {
        "eval", "test"}
    for one, two in zip(single, ddp, strict=True):
        accuracy = next(key for key in one if key.endswith("_accuracy"))
        assert two[accuracy] == one[accuracy], (one["step"], accuracy)
        for key in (k for k in one if k.endswith(("_loss", "_loss_se", "_macro_f1"))):
            assert two[key] == pytest.approx(one[key], rel=1e-3), (one["step"], key)
    results = [json.loads((root / name / "results.json").read_text())["metrics"] for name in ("single", "ddp")]
    assert results[1]["test_confusion_matrix"] == results[0]["test_confusion_matrix"]


def _evaluations(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if row["event"] in ("eval", "test")]


def test_ddp_resumed_halfway_equals_uninterrupted(cli, single_and_ddp, tmp_path):
    root, _, ddp = single_and_ddp
    for nproc, name in ((2, "resumed2"), (1, "resumed1")):  # the same world size, and a change of world size
        target = tmp_path / name / "checkpoints"
        target.mkdir(parents=True)
        shutil.copytree(root / "ddp" / "checkpoints" / "step-0000004", target / "step-0000004")
        args = ["train.strategy=ddp"] if nproc == 2 else []
        args_all = ["train", *BASE, *args, "--run-dir", str(tmp_path / name), "--resume"]
        if nproc == 2:
            args_all += ["--nproc", "2"]
        result = cli(*args_all)
        assert result.returncode == 0, result.stderr
        _close(ddp, load_file(str(tmp_path / name / "model" / "model.safetensors")), atol=1e-5)


def test_fsdp_gpt_checkpoint_loads_in_one_process(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
               str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sys.path.insert(0, str(WORKER.parent))
    import fsdp_worker

    model, inputs = fsdp_worker.build_model_and_inputs()
    checkpoint = sorted((tmp_path / "checkpoints").glob("step-*"))[-1]
    model.load_state_dict(load_file(str(checkpoint / "model.safetensors")))
    with torch.no_grad():
        single = model.eval()(inputs)
    sharded = load_file(str(tmp_path / "fsdp_outputs.safetensors"))["logits"]
    assert torch.allclose(single, sharded, atol=1e-5), (single - sharded).abs().max()
    assert fsdp_worker.trained_steps(tmp_path) == fsdp_worker.STEPS
