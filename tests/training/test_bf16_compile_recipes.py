"""bf16 autocast and torch.compile together, end to end through the recipes issue 20 measures: the seed CNN
(mnist-cnn) and a GPT language model (shakespeare-char with the gpt model); the MiniLM fine-tune is measured by
benchmarks/train_speed.py, not here (its compiled step costs over a minute of CPU).
Each trains a few steps under bf16 + compile (the ``aot_eager`` backend: TorchDynamo capture and AOTAutograd
without inductor's C++ code generation, which takes minutes per graph on a small CPU). Only the training split is
used: evaluating thousands of held-out rows in bf16 is slow on CPUs without native bf16 and tests nothing new."""

import json
import math
import warnings

import pytest

from modelforge.core.seed import seed_everything
from modelforge.tasks import get_task
from modelforge.tasks.base import Splits
from modelforge.tasks.recipes import load_recipe
from modelforge.training.trainer import Trainer

COMMON = ["train.max_steps=2", "train.batch_size=8", "train.log_every_steps=1", "train.progress=off",
          "train.precision=bf16", "train.compile=true", "train.compile_backend=aot_eager"]
RECIPES = {
    "mnist-cnn": ["data.limit=64"],
    "shakespeare-char": ["model.name=gpt", "model.dim=32", "model.num_layers=1", "model.num_heads=2",
                         "data.block_size=32", "data.eval_windows=8"],
}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_bf16_compiled_training_runs_end_to_end(recipe, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_recipe(recipe, COMMON + RECIPES[recipe])
        seed_everything(0)
        task = get_task(config.task)(config)
        train = task.datasets().train
        summary = Trainer(task, task.build_model(), task.recipe.train, tmp_path).fit(Splits(train=train))
    assert not [w for w in caught if "train.compile" in str(w.message)]  # compiled, not the eager fallback
    assert summary["steps"] == 2
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["event"] == "train"]
    assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses)
