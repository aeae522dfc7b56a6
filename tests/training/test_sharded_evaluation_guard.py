"""``Trainer.evaluate`` under a real 2-process DDP group (gloo, spawned processes with torchrun's environment): a task
that declares ``evaluation_gathers_ranks`` but whose evaluation gathers the ranks' rows other than exactly once is
refused on every rank in one line (its figures would be one rank's share, or rows counted twice), and one that gathers
once gets the whole split's figures on every rank from each rank's share of the batches; with ``train.compile`` the
shares run through the compiled plain module."""

from __future__ import annotations

import json
import os
import socket
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp
from torch import nn

from modelforge.core.config import TrainConfig
from modelforge.data.tensors import TensorDataset
from modelforge.tasks.base import StepOutput, Task
from modelforge.tasks.metrics import across_ranks

ROWS, BATCH = 10, 2  # 5 evaluation batches: 3 on rank 0, 2 on rank 1


class SumsInputs(Task):
    """Evaluates to the sum and count of the inputs it was given, gathering ``gathers`` times."""

    name = "sums_inputs_test"
    evaluation_gathers_ranks = True
    gathers = 1

    def training_step(self, model: nn.Module, batch: Any) -> StepOutput:
        return StepOutput(model(batch[0]).sum())

    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, Any]:
        rows = np.concatenate([x.numpy().ravel() for (x,) in loader] or [np.empty(0, np.float32)])
        for _ in range(self.gathers):
            (rows,) = across_ranks(rows)
        return {"sum": float(rows.sum()), "count": len(rows), "module": type(model).__name__}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, run_dir: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    torch.distributed.init_process_group("gloo", timeout=timedelta(seconds=30))
    from modelforge.training import distributed as dist_utils
    from modelforge.training.trainer import Trainer

    task = SumsInputs.__new__(SumsInputs)
    task.state_dict_, task.artifact_dir = {}, None
    cfg = TrainConfig(strategy="ddp", batch_size=BATCH, progress="off", num_workers=0)
    trainer = Trainer(task, nn.Linear(1, 1), cfg, run_dir, device="cpu")
    dataset = TensorDataset(torch.arange(ROWS, dtype=torch.float32).unsqueeze(1))
    compiling = cfg.model_copy(update={"compile": True, "compile_backend": "eager"})
    compiled = Trainer(task, nn.Linear(1, 1), compiling, run_dir, device="cpu")
    results: dict[str, Any] = {"compiled": compiled.evaluate(dataset)}
    for gathers in (1, 0, 2):
        task.gathers = gathers
        try:
            results[str(gathers)] = trainer.evaluate(dataset)
        except Exception as error:  # noqa: BLE001 — the test records what each rank raised
            results[str(gathers)] = f"{type(error).__name__}: {error}"
    with open(f"{run_dir}/rank{rank}.json", "w") as fh:
        json.dump(results, fh)
    dist_utils.teardown(trainer.env)


def test_a_declaring_task_must_gather_exactly_once(tmp_path):
    mp.start_processes(_rank, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    for rank in (0, 1):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        whole = {"val_sum": float(sum(range(ROWS))), "val_count": ROWS}
        assert results["1"] == {**whole, "val_module": "Linear"}
        assert results["compiled"] == {**whole, "val_module": "OptimizedModule"}
        for gathers in ("0", "2"):
            assert results[gathers] == ("TrainingError: task 'sums_inputs_test' declares evaluation_gathers_ranks, but "
                                        f"its evaluate gathered the ranks' rows {gathers} times instead of once "
                                        "(tasks.metrics.across_ranks)")
