"""GPT-2 124M training throughput on one NVIDIA GPU: modelforge's Trainer vs a plain PyTorch loop, same model.

bf16 autocast, fused AdamW, torch.compile, flash attention through SDPA. Prints tokens/s, step time, peak memory
and MFU (model FLOPs utilisation: 6·N·T + attention FLOPs per token against the GPU's dense bf16 peak) for both.
A device without a listed peak (an unlisted GPU, or the CPU of --smoke) is measured instead: the best rate of a
square bf16 matrix product on it, so MFU is always printed along with where its peak came from.

    python benchmarks/gpu_gpt2.py                 # GPU: GPT-2 124M, 1024 context (< 5 minutes)
    python benchmarks/gpu_gpt2.py --smoke         # CPU smoke configuration (used by the test suite)
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F

from modelforge.core.config import TrainConfig
from modelforge.core.registry import build
from modelforge.data.tensors import TensorDataset
from modelforge.tasks.base import Splits, StepOutput, Task

# dense bf16 tensor-core peaks (FLOP/s) by device-name fragment
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


class NextTokenTask(Task):
    name = "gpt2_bench"

    def __init__(self, vocab: int):
        self.vocab, self.state_dict_, self.artifact_dir = vocab, {}, None

    def training_step(self, model, batch):
        (tokens,) = batch
        logits = model(tokens[:, :-1])
        return StepOutput(F.cross_entropy(logits.reshape(-1, self.vocab).float(), tokens[:, 1:].reshape(-1)))

    def evaluate(self, model, loader):
        return {}


def device_peak(device: torch.device, name: str) -> tuple[float, str]:
    """(dense bf16 FLOP/s, where it came from): the table's figure for a listed GPU, else a measured matmul rate."""
    listed = next((v for k, v in PEAKS.items() if k in name), None)
    if listed is not None:
        return listed, "listed"
    size = 8192 if device.type == "cuda" else 512
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best, f"measured bf16 {size}x{size} matmul"


def flops_per_token(model: torch.nn.Module, layers: int, dim: int, context: int) -> float:
    params = sum(p.numel() for p in model.parameters())
    return 6 * params + 12 * layers * dim * context


def plain_loop(model, data, steps, batch, device, compile_model):
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=device.type == "cuda")
    step_model = torch.compile(model) if compile_model else model
    times = []
    for i in range(steps):
        tokens = data[i * batch:(i + 1) * batch].to(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = step_model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def trainer_loop(model, data, steps, batch, device, compile_model, vocab):
    from modelforge.training.trainer import Trainer

    cfg = TrainConfig(max_steps=steps, batch_size=batch, optimizer="adamw", lr=3e-4, precision="bf16",
                      compile=compile_model, progress="off", log_every_steps=1)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(NextTokenTask(vocab), model, cfg, run_dir, device=device)
        if device.type == "cuda":  # the Trainer builds a plain AdamW; use the fused kernel as the plain loop does
            trainer.optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
        start = time.perf_counter()
        trainer.fit(Splits(train=TensorDataset(data[: steps * batch])))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny CPU configuration")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        shape = dict(vocab_size=256, max_positions=64, dim=64, num_layers=2, num_heads=2)
        steps, batch, compile_model = args.steps or 4, args.batch or 4, False
    else:
        shape = dict(vocab_size=50257, max_positions=1024, dim=768, num_layers=12, num_heads=12)
        steps, batch, compile_model = args.steps or 30, args.batch or 16, not args.no_compile
    context, vocab = shape["max_positions"], shape["vocab_size"]
    torch.manual_seed(0)
    data = torch.randint(0, vocab, ((steps + 1) * batch, context + 1))
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak, peak_source = device_peak(device, name)
    print(f"device: {name}  compile: {compile_model}  batch: {batch}  context: {context}  steps: {steps}  "
          f"bf16_peak_tflops: {peak / 1e12:.4g} ({peak_source})")
    warm = max(1, steps // 3)
    results = {}
    for label in ("plain", "modelforge"):
        model = build("model", "gpt", **shape, dropout=0.0).to(device)
        fpt = flops_per_token(model, shape["num_layers"], shape["dim"], context)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        if label == "plain":
            times = plain_loop(model, data, steps, batch, device, compile_model)
            step_time = sum(times[warm:]) / len(times[warm:])
        else:  # the Trainer's total includes compilation: time a warm-up run, then the measured one
            trainer_loop(model, data, warm, batch, device, compile_model, vocab)
            step_time = trainer_loop(model, data, steps, batch, device, compile_model, vocab) / steps
        tokens_per_s = batch * context / step_time
        mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        mfu = tokens_per_s * fpt / peak
        results[label] = tokens_per_s
        print(f"{label}_tokens_per_s: {tokens_per_s:.0f}  step_ms: {step_time * 1e3:.1f}  peak_mem_gib: {mem:.2f}  "
              f"mfu: {mfu:.3f}")
    ratio = results["modelforge"] / results["plain"]
    print(f"ratio_modelforge_over_plain: {ratio:.3f}")
    print(f"table: gpt2 train tokens/s ({name}) | {results['modelforge']:.0f} | {results['plain']:.0f} | {ratio:.3f}")


if __name__ == "__main__":
    main()
