"""Trainer overhead: the same seed_cnn, MNIST tensors, batch size and Adam, timed as a hand-written PyTorch loop and
through modelforge's Trainer, interleaved in one process. Prints both epoch times and the ratio (target ≤ 1.03).

    python benchmarks/trainer_overhead.py [--samples 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import platform
import tempfile
import time

import torch
import torch.nn.functional as F

from modelforge.core.registry import build
from modelforge.data.builtin.mnist import load_mnist
from modelforge.data.tensors import TensorDataset
from modelforge.tasks import get_task
from modelforge.tasks.base import Splits
from modelforge.tasks.recipes import load_recipe
from modelforge.training.callbacks import Callback
from modelforge.training.trainer import Trainer


def hand_written_epoch(model, x, y, mean, std, batch_size, seed):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    model.train()
    running = 0.0
    for idx in order.split(batch_size):
        inputs = (x[idx].float() / 255 - mean) / std
        loss = F.cross_entropy(model(inputs), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running += loss.item()
    return running


class LoopClock(Callback):
    """Times the Trainer's loop from its first step to the end of its last optimiser step (the part that compares
    with a hand-written loop; set-up and the final checkpoint write are timed separately)."""

    def on_train_start(self, trainer):
        self.start = self.end = time.perf_counter()

    def on_step_end(self, trainer, logs):
        self.end = time.perf_counter()


def trainer_epoch(model, x, y, batch_size):
    recipe = load_recipe("mnist-cnn", [f"train.batch_size={batch_size}", "train.epochs=1", "train.progress=off",
                                       "train.schedule=constant", "train.checkpoint_every_steps=null",
                                       "train.log_every_steps=100", "data.shift=0"])
    task = get_task(recipe.task)(recipe)
    train_x = x.float() / 255
    task.state_dict_ = {"labels": [str(i) for i in range(10)], "channels": 1, "image_size": 28,
                        "mean": [train_x.mean().item()], "std": [train_x.std().item()]}
    clock = LoopClock()
    with tempfile.TemporaryDirectory() as run_dir:
        Trainer(task, model, recipe.train, run_dir, callbacks=[clock]).fit(Splits(train=TensorDataset(x, y)))
    return clock.end - clock.start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="3,000 samples, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.rounds = 3000, 2
    arrays = load_mnist()
    x = torch.from_numpy(arrays["train_images"][: args.samples, None].copy())
    y = torch.from_numpy(arrays["train_labels"][: args.samples].copy())
    mean, std = (x.float() / 255).mean(), (x.float() / 255).std()
    torch.manual_seed(0)
    initial = build("model", "seed_cnn")
    hand_times, trainer_times, trainer_totals = [], [], []
    for r in range(args.rounds):
        for kind in ("hand", "trainer") if r % 2 == 0 else ("trainer", "hand"):  # alternate to cancel drift
            model = copy.deepcopy(initial)
            start = time.perf_counter()
            if kind == "hand":
                hand_written_epoch(model, x, y, mean, std, args.batch_size, seed=r)
                hand_times.append(time.perf_counter() - start)
            else:
                trainer_times.append(trainer_epoch(model, x, y, args.batch_size))
                trainer_totals.append(time.perf_counter() - start)
    hand, ours = min(hand_times), min(trainer_times)
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print(f"samples_per_epoch: {args.samples}  batch_size: {args.batch_size}  rounds: {args.rounds}")
    print(f"hand_written_epoch_s: {hand:.3f}  (all: {', '.join(f'{t:.2f}' for t in hand_times)})")
    print(f"modelforge_trainer_epoch_s: {ours:.3f}  (all: {', '.join(f'{t:.2f}' for t in trainer_times)})")
    print(f"modelforge_including_setup_and_final_checkpoint_s: {min(trainer_totals):.3f}")
    print(f"ratio_trainer_over_hand: {ours / hand:.3f}  (target <= 1.03)")
    print(f"table: trainer epoch time (s) | {ours:.3f} | {hand:.3f} | {ours / hand:.3f}")


if __name__ == "__main__":
    main()
