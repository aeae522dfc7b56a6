"""Run under torchrun by test_distributed.py: train a small GPT with FSDP2 on 2 CPU processes (gloo), checkpoint it,
and save the sharded model's logits on a fixed batch for comparison with a single-process load."""

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from modelforge.core.config import TrainConfig
from modelforge.core.registry import build
from modelforge.data.tensors import TensorDataset
from modelforge.tasks.base import Splits, StepOutput, Task

STEPS = 6
VOCAB, LENGTH = 48, 16


def build_model_and_inputs():
    torch.manual_seed(0)
    model = build("model", "gpt", vocab_size=VOCAB, max_positions=LENGTH, dim=32, num_layers=2, num_heads=2)
    inputs = torch.randint(0, VOCAB, (4, LENGTH), generator=torch.Generator().manual_seed(1))
    return model, inputs


class NextToken(Task):
    """Next-token prediction over fixed random sequences (enough to exercise FSDP)."""

    name = "next_token_test"

    def training_step(self, model, batch):
        (tokens,) = batch
        logits = model(tokens[:, :-1])
        return StepOutput(F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1)))

    def evaluate(self, model, loader):
        return {}

    def build_model(self):
        return build_model_and_inputs()[0]


def trained_steps(run_dir: Path) -> int:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return max(r["step"] for r in records)


def main(run_dir: Path) -> None:
    from modelforge.training import distributed as dist_utils
    from modelforge.training.trainer import Trainer

    data = torch.randint(0, VOCAB, (64, LENGTH + 1), generator=torch.Generator().manual_seed(2))
    task = NextToken.__new__(NextToken)
    task.state_dict_, task.artifact_dir = {}, None
    model, inputs = build_model_and_inputs()
    cfg = TrainConfig(strategy="fsdp", max_steps=STEPS, batch_size=8, optimizer="adamw", lr=1e-3, progress="off",
                      log_every_steps=1)
    trainer = Trainer(task, model, cfg, run_dir, device="cpu")
    trainer.fit(Splits(train=TensorDataset(data)))
    trainer.train_model.eval()
    with torch.no_grad():
        logits = trainer.train_model(inputs)
    if trainer.env.is_main:
        save_file({"logits": logits.contiguous()}, str(run_dir / "fsdp_outputs.safetensors"))
    dist_utils.teardown(trainer.env)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
