"""LoRA against full fine-tuning of the installed all-MiniLM-L6-v2 checkpoint on Rotten Tomatoes (model.name=hf),
DP-SGD + LoRA at ε = 3, and int8 quantization of the fine-tuned classifier.

Prints one `table:` line per run — test accuracy, trainable / total parameters, seconds per epoch (training
examples / the logged samples per second), artifact size (model.safetensors) — and one for int8 (accuracy change,
predict speed-up on the test split, from `modelforge quantize`).

    python benchmarks/lora_vs_full.py                 # full size: 2 epochs each on all 8,530 training reviews
    python benchmarks/lora_vs_full.py --quick         # 400 reviews per split, 1 epoch, warm-up 2 steps: minutes
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import modelforge
from modelforge.data.text_encoding import minilm_dir

FULL = {"epochs": 2, "batch_size": 32, "eval_batch_size": 128, "optimizer": "adamw", "lr": 1e-4,
        "weight_decay": 0.01, "schedule": "linear", "warmup_steps": 60, "log_every_steps": 20, "progress": "off"}
RUNS = {
    "full fine-tuning": {"train": FULL},
    "LoRA r=8": {"train": {**FULL, "lr": 1e-3}, "adapter": {"r": 8, "alpha": 16, "save": "adapter"}},
    "DP + LoRA (ε=3)": {"train": {**FULL, "lr": 2e-3, "batch_size": 256, "warmup_steps": 0, "schedule": "constant"},
                        "adapter": {"r": 8, "alpha": 16, "save": "merged"},
                        "privacy": {"target_epsilon": 3.0, "max_grad_norm": 1.0}},
}


def recipe(name: str, sections: dict[str, Any], limit: int | None, epochs: int | None) -> dict[str, Any]:
    data: dict[str, Any] = {"source": "rotten_tomatoes", "max_length": 96}
    if limit:
        data["limit"] = limit
    train = dict(sections["train"])
    if epochs:  # a quick run: a few dozen steps, so the warm-up shrinks with it
        train.update(epochs=epochs, warmup_steps=min(train["warmup_steps"], 2))
    return {"name": name, "task": "text_classification", "data": data,
            "model": {"name": "hf", "checkpoint": str(minilm_dir())}, **sections, "train": train}


def seconds_per_epoch(run: Any) -> float:
    lines = (run.directory / "metrics.jsonl").read_text().splitlines()
    rates = [r["samples_per_s"] for r in map(json.loads, lines) if r.get("event") == "train" and "samples_per_s" in r]
    return run.summary["data"]["train_size"] / (sum(rates) / len(rates))


def measure(label: str, sections: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    slug = label.split()[0].lower().strip("()")
    run = modelforge.train(recipe(f"rt-{slug}", sections, args.limit, args.epochs), run_dir=args.runs / slug)
    privacy = run.summary.get("privacy") or {}
    return {"label": label, "run": run, "accuracy": float(run.metrics["test_accuracy"]),
            "trainable": run.summary["trainable_parameters"], "total": run.summary["parameters"],
            "s_per_epoch": seconds_per_epoch(run), "epsilon": privacy.get("epsilon"),
            "bytes": (run.model_dir / "model.safetensors").stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400 reviews per split, 1 epoch")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/runs/lora-vs-full"), help="where the runs go")
    parser.add_argument("--only", nargs="*", choices=list(RUNS), help="run only these")
    args = parser.parse_args()
    args.limit, args.epochs = (400, 1) if args.quick else (None, None)
    results = [measure(label, RUNS[label], args) for label in (args.only or RUNS)]
    print("table: run | test accuracy | trainable / total parameters | s/epoch | model.safetensors MB | ε")
    for r in results:
        eps = f"{r['epsilon']:.2f}" if r["epsilon"] is not None else "–"
        share = 100 * r["trainable"] / r["total"]
        print(f"table: {r['label']} | {100 * r['accuracy']:.1f}% | {r['trainable']:,} / {r['total']:,} "
              f"({share:.2f}%) | {r['s_per_epoch']:.1f} | {r['bytes'] / 1e6:.2f} | {eps}")
    best = max((r for r in results if r["epsilon"] is None), key=lambda r: r["accuracy"], default=None)
    if best is not None:
        found = modelforge.api.quantize(best["run"].directory, "torch")["torch"]
        print("table: int8 (torch dynamic, Linear) | accuracy fp32 → int8 | change (points) | predict speed-up")
        print(f"table: {best['label']} | {100 * found['fp32']['metrics']['accuracy']:.1f}% → "
              f"{100 * found['int8']['metrics']['accuracy']:.1f}% | {100 * found['change']:+.2f} | "
              f"{found['speedup']:.2f}x ({found['fp32']['seconds']:.2f} s → {found['int8']['seconds']:.2f} s, "
              f"{found['threads']} threads, {found['examples']} test reviews)")


if __name__ == "__main__":
    main()
