"""Training speed by precision, compilation and memory layout: the seed CNN (mnist-cnn's model on MNIST), the GPT
benchmark model (gpt_vs_hf's 6×384, vocab 50,257) and the MiniLM fine-tune (all-MiniLM-L6-v2 + a linear head).

For each variant (fp32/bf16 autocast × eager/torch.compile, × channels-last off/on for the CNN) the same initial
weights train on the same batches: the first step's extra time is reported as compile time, steady-state steps/s is
timed after warm-up, and the loss (CNN: also test accuracy) after the same steps shows the fp32/bf16 difference.
Keras 3 is the seed CNN's peer: seed_cnn_vs_keras.py trains the seed CNN through modelforge's Trainer and the seed's
Keras code (torch backend) on the same MNIST arrays in this run and prints both epoch times, test accuracies and the
ratio; without Keras installed it says so in one line and the rest still prints.

    python benchmarks/train_speed.py [--quick] [--steps 30] [--backend inductor|aot_eager]
                                     [--keras-samples 60000] [--keras-epochs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from modelforge.core.registry import build
from modelforge.training.memory_format import set_layout, to_channels_last

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_cnn_vs_keras import QUICK as KERAS_QUICK  # noqa: E402 — the companion benchmark beside this file
from seed_cnn_vs_keras import compare as seed_cnn_vs_keras  # noqa: E402

Batch = tuple[torch.Tensor, torch.Tensor]


def seed_cnn_case(batch: int, eval_rows: int) -> tuple[nn.Module, list[Batch], Callable, Batch]:
    from modelforge.data.builtin.mnist import load_mnist

    arrays = load_mnist()
    x = torch.from_numpy(arrays["train_images"][: batch * 8, None].copy()).float() / 255
    y = torch.from_numpy(arrays["train_labels"][: batch * 8].copy()).long()
    mean, std = x.mean(), x.std()
    test_x = (torch.from_numpy(arrays["test_images"][:eval_rows, None].copy()).float() / 255 - mean) / std
    test_y = torch.from_numpy(arrays["test_labels"][:eval_rows].copy()).long()
    batches = [((x[i:i + batch] - mean) / std, y[i:i + batch]) for i in range(0, len(x), batch)]
    return build("model", "seed_cnn"), batches, F.cross_entropy, (test_x, test_y)


def gpt_case(batch: int, context: int, layers: int, width: int) -> tuple[nn.Module, list[Batch], Callable, None]:
    vocab = 50257
    model = build("model", "gpt", vocab_size=vocab, max_positions=context, dim=width, num_layers=layers,
                  num_heads=max(1, width // 64), dropout=0.0)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        tokens = torch.randint(0, vocab, (batch, context + 1), generator=g)
        batches.append((tokens[:, :-1], tokens[:, 1:]))

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))

    return model, batches, loss_fn, None


class MiniLMClassifier(nn.Module):
    """all-MiniLM-L6-v2's encoder, mean-pooled, with a 2-way linear head (what sentiment-minilm fine-tunes)."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import AutoModel

        from modelforge.data.text_encoding import minilm_dir

        self.encoder = AutoModel.from_pretrained(minilm_dir())
        self.head = nn.Linear(self.encoder.config.hidden_size, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(input_ids=ids).last_hidden_state.mean(dim=1))


def minilm_case(batch: int, length: int) -> tuple[nn.Module, list[Batch], Callable, None]:
    torch.manual_seed(0)
    model = MiniLMClassifier()
    g = torch.Generator().manual_seed(0)
    vocab = model.encoder.config.vocab_size
    batches = [(torch.randint(1000, vocab, (batch, length), generator=g), torch.randint(0, 2, (batch,), generator=g))
               for _ in range(4)]
    return model, batches, F.cross_entropy, None


def run_variant(initial: nn.Module, batches: list[Batch], loss_fn: Callable, steps: int, precision: str,
                compiled: bool, channels_last: bool, backend: str) -> dict[str, float]:
    """Train a copy for 1 + warm-up + ``steps`` steps; returns compile seconds, steady steps/s and the final loss."""
    model = copy.deepcopy(initial).train()
    if channels_last:
        set_layout(model, True)
        batches = [to_channels_last(b) for b in batches]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = torch.compile(model, backend=backend) if compiled else model
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext

    def step(i: int) -> float:
        x, y = batches[i % len(batches)]
        with cast():
            loss = loss_fn(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    start = time.perf_counter()
    step(0)
    first = time.perf_counter() - start
    warm = 2
    for i in range(1, 1 + warm):
        step(i)
    start = time.perf_counter()
    for i in range(1 + warm, 1 + warm + steps):
        loss = step(i)
    steady = (time.perf_counter() - start) / steps
    if channels_last:
        set_layout(model, False)
    return {"compile_s": max(0.0, first - steady) if compiled else 0.0, "steps_per_s": 1 / steady, "loss": loss,
            "model": model}


def accuracy(model: nn.Module, test: Batch, precision: str) -> float:
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with torch.no_grad(), cast:
        return (model.eval()(test[0]).argmax(1) == test[1]).float().mean().item()


def measure(name: str, case: tuple, steps: int, backend: str, layouts: tuple[bool, ...]) -> None:
    initial, batches, loss_fn, test = case
    results = {}
    for precision, compiled, channels_last in itertools.product(("fp32", "bf16"), (False, True), layouts):
        torch.manual_seed(0)
        r = run_variant(initial, batches, loss_fn, steps, precision, compiled, channels_last, backend)
        key = (precision, compiled, channels_last)
        results[key] = r
        label = f"{precision} {'compiled' if compiled else 'eager'}{' channels_last' if channels_last else ''}"
        extra = f"  test_accuracy {accuracy(r['model'], test, precision):.4f}" if test is not None else ""
        print(f"{name} [{label}]: {r['steps_per_s']:.2f} steps/s  compile {r['compile_s']:.1f} s  "
              f"loss {r['loss']:.4f}{extra}", flush=True)
    base = results[("fp32", False, False)]
    for key, r in results.items():
        if key != ("fp32", False, False):
            label = f"{key[0]}/{'compiled' if key[1] else 'eager'}{'/channels_last' if key[2] else ''}"
            print(f"{name} ratio {label} over fp32/eager: {r['steps_per_s'] / base['steps_per_s']:.2f}x")
    for compiled, channels_last in itertools.product((False, True), layouts):
        diff = results[("bf16", compiled, channels_last)]["loss"] - results[("fp32", compiled, channels_last)]["loss"]
        print(f"{name} loss bf16 - fp32 ({'compiled' if compiled else 'eager'}"
              f"{', channels_last' if channels_last else ''}): {diff:+.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="steady-state steps timed per variant")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--quick", action="store_true",
                        help="3 steps, aot_eager, a 2×128 GPT at context 64, MiniLM at batch 4 × 32 tokens, "
                             "the Keras comparison on 1,024 images for 2 epochs")
    parser.add_argument("--keras-samples", type=int, default=60000, help="MNIST images for the Keras comparison")
    parser.add_argument("--keras-epochs", type=int, default=3, help="epochs of the Keras comparison (0 skips it)")
    args = parser.parse_args()
    gpt = dict(batch=8, context=256, layers=6, width=384)
    minilm = dict(batch=16, length=128)
    if args.quick:
        args.steps, args.backend = 3, "aot_eager"
        gpt, minilm = dict(batch=4, context=64, layers=2, width=128), dict(batch=4, length=32)
        args.keras_samples, args.keras_epochs = KERAS_QUICK["samples"], KERAS_QUICK["epochs"]
    print(f"machine: {platform.processor() or platform.machine()}, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}, torch threads {torch.get_num_threads()}, backend {args.backend}")
    start = time.perf_counter()
    measure("seed_cnn", seed_cnn_case(64, 1000 if args.quick else 10000), args.steps, args.backend, (False, True))
    if args.keras_epochs:
        seed_cnn_vs_keras(args.keras_samples, args.keras_epochs, test_rows=1000 if args.quick else 10000)
    measure("gpt", gpt_case(**gpt), args.steps, args.backend, (False,))
    measure("minilm", minilm_case(**minilm), args.steps, args.backend, (False,))
    print(f"total_s: {time.perf_counter() - start:.1f}")


if __name__ == "__main__":
    main()
