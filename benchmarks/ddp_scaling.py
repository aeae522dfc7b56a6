"""Data-parallel scaling on this machine: tokens/s of a small GPT trained with 1 process vs N processes (DDP, gloo).

    python benchmarks/ddp_scaling.py [--nproc 2] [--steps 20]

Each configuration runs under torchrun in its own processes, one torch thread each; the global batch is the same,
so the efficiency is (tokens/s with N) / (N × tokens/s with 1). On a 2-core machine the two processes also share the
cores with the launcher and the OS: expect < 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = """
import sys, time, json, torch, torch.nn.functional as F
from pathlib import Path
sys.path.insert(0, {bench!r})
from gpu_gpt2 import NextTokenTask
from modelforge.core.config import TrainConfig
from modelforge.core.registry import build
from modelforge.data.tensors import TensorDataset
from modelforge.tasks.base import Splits
from modelforge.training.trainer import Trainer
steps, batch, ctx, vocab = {steps}, {batch}, 128, 512
torch.manual_seed(0)
data = torch.randint(0, vocab, (steps * batch, ctx + 1))
model = build("model", "gpt", vocab_size=vocab, max_positions=ctx, dim=128, num_layers=4, num_heads=4, dropout=0.0)
cfg = TrainConfig(max_steps=steps, batch_size=batch, optimizer="adamw", progress="off", strategy="{strategy}",
                  log_every_steps=1000)
trainer = Trainer(NextTokenTask(vocab), model, cfg, Path({run_dir!r}), device="cpu")
start = time.perf_counter()
trainer.fit(Splits(train=TensorDataset(data)))
elapsed = time.perf_counter() - start
if trainer.env.is_main:
    Path({out!r}).write_text(json.dumps({{"seconds": elapsed, "tokens": steps * batch * ctx}}))
from modelforge.training.distributed import teardown
teardown(trainer.env)
"""


def run(nproc: int, steps: int, batch: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        script, out = Path(tmp) / "worker.py", Path(tmp) / "out.json"
        strategy = "ddp" if nproc > 1 else "single"
        script.write_text(WORKER.format(bench=str(Path(__file__).parent), steps=steps, batch=batch,
                                        strategy=strategy, run_dir=str(Path(tmp) / "run"), out=str(out)))
        # one thread per process: N processes then use N cores, so the ratio measures scaling with cores rather
        # than thread oversubscription (two threads per process on shared cores thrash)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                        str(script)], check=True, env=env, capture_output=True)
        result = json.loads(out.read_text())
        return result["tokens"] / result["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="6 steps, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 6, 1
    started = time.time()
    # alternate and keep each side's best, to damp drift in the machine's other load
    ones, manys = [], []
    for _ in range(args.repeats):
        ones.append(run(1, args.steps, args.batch))
        manys.append(run(args.nproc, args.steps, args.batch))
    one, many = max(ones), max(manys)
    print(f"cores: {os.cpu_count()}  global_batch: {args.batch}  steps: {args.steps}")
    print(f"tokens_per_s_1proc: {one:.0f}")
    print(f"tokens_per_s_{args.nproc}proc: {many:.0f}")
    print(f"speedup: {many / one:.3f}  efficiency: {many / one / args.nproc:.3f}")
    print(json.dumps({"wall_s": round(time.time() - started, 1)}))
    print(f"table: ddp {args.nproc}-proc tokens/s | {many:.0f} | {one:.0f} | {many / one:.3f}")


if __name__ == "__main__":
    main()
