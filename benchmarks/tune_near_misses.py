"""`modelforge tune` on the three recipes whose hand-tuned figures miss their target by a little: sentiment-lstm
(77.0 % vs 78 %), sentiment-transformer (76.2 % vs 78 %) and sentiment-minilm (84.8 % vs 85 %). Each gets a fixed
search space and a fixed wall-clock budget (default 3,600 s, with 2 worker processes of one torch thread each on a
2-core machine: ≤ 1 CPU-hour per core); the best trial's `best.yaml` is then trained again from scratch and its
test accuracy is the figure. Prints one `table:` line per recipe (tuned, hand-tuned, ratio), the top rows of the
trial table as Markdown, and copies the parameter-importance plot to docs/images/tune-<recipe>-importance.png.

    python benchmarks/tune_near_misses.py [--recipes sentiment-lstm ...] [--budget 3600] [--jobs 2]
                                          [--runs /tmp/modelforge-tune] [--quick]

`--quick` proves the pipeline in minutes (a few images' worth of data, 2 trials per recipe, a short budget) and
writes nothing under docs/.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import modelforge

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "docs" / "images"

# hand-tuned test accuracy recorded in docs/RESULTS.md, and the goal of issue 19
BASELINE = {"sentiment-lstm": (0.770, 0.78), "sentiment-transformer": (0.762, 0.78), "sentiment-minilm": (0.848, 0.85)}

SPACES = {
    "sentiment-lstm": [
        "train.lr=log_uniform:3e-4:5e-3",
        "model.hidden_size=choice:64,128,192",
        "model.embed_dim=choice:100,200,300",
        "model.dropout=uniform:0.2:0.6",
        "model.pooling=choice:max,mean",
        "train.weight_decay=choice:0,1e-5,1e-4",
        "data.tokenizer.min_frequency=choice:1,2",
    ],
    "sentiment-transformer": [
        "train.lr=log_uniform:1e-4:2e-3",
        "model.dim=choice:64,128,192",
        "model.num_layers=int:1:4",
        "model.dropout=uniform:0.05:0.4",
        "model.classifier_dropout=uniform:0.0:0.5",
        "train.weight_decay=log_uniform:1e-3:0.2",
        "train.warmup_steps=choice:0,200,500",
        "train.batch_size=choice:32,64",
    ],
    "sentiment-minilm": [  # a trial is ~25 CPU-minutes: the budget buys a handful, so the space is small
        "train.lr=log_uniform:3e-5:3e-4",
        "train.warmup_steps=choice:0,60,200",
        "train.weight_decay=choice:0,0.01,0.1",
        "model.classifier_dropout=uniform:0.0:0.3",
    ],
}
# evaluations inside an epoch (~360 steps), so the median pruner can stop a poor trial before its first epoch ends
EXTRA = ["train.eval_every_steps=100"]
QUICK = {"sentiment-lstm": ["data.limit=256", "train.epochs=1", "train.eval_every_steps=4"],
         "sentiment-transformer": ["data.limit=256", "train.epochs=1", "train.eval_every_steps=4"],
         "sentiment-minilm": ["data.limit=48", "train.epochs=1", "train.max_steps=2", "train.eval_every_steps=1",
                              "train.checkpoint_every_steps=null"]}


def tune_one(name: str, args: argparse.Namespace) -> dict:
    overrides = ["train.progress=off", *(QUICK[name] if args.quick else EXTRA)]
    study_dir = args.runs / f"{name}-tune"
    started = time.perf_counter()
    summary = modelforge.tune(name, overrides, trials=2 if args.quick else args.max_trials, jobs=args.jobs,
                              space=SPACES[name], study_dir=study_dir, timeout=args.budget)
    search_seconds = time.perf_counter() - started
    print(summary.table(limit=None))
    from modelforge.tasks.recipes import load_recipe

    seed = load_recipe(str(summary.best_yaml)).train.seed  # best.yaml keeps the recipe's train.seed
    run = modelforge.train(str(summary.best_yaml), ["train.progress=off"], run_dir=args.runs / f"{name}-best")
    return {"name": name, "summary": summary, "search_seconds": search_seconds, "seed": seed,
            "test_accuracy": float(run.metrics["test_accuracy"]), "retrain_seconds": run.summary["train_seconds"]}


def top_rows_markdown(summary, count: int = 5) -> str:
    """The best `count` finished trials as a Markdown table (value, searched keys, time)."""
    metric = summary.metric
    done = [r for r in summary.rows if r["state"] == "complete"]
    done.sort(key=lambda r: r[metric], reverse=summary.direction == "maximize")
    keys = [c for c in summary.columns if c in summary.best_values]
    lines = [f"| trial | {metric} | {' | '.join(keys)} | s |", "|" + " --- |" * (len(keys) + 3)]
    for row in done[:count]:
        cells = [_cell(row.get(k)) for k in keys]
        lines.append(f"| {row['trial']} | {100 * row[metric]:.1f} % | {' | '.join(cells)} | {row['seconds']} |")
    return "\n".join(lines)


def _cell(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(SPACES), choices=list(SPACES))
    parser.add_argument("--budget", type=float, default=3600.0, help="seconds per recipe after which no trial starts")
    parser.add_argument("--max-trials", type=int, default=60, help="trials per recipe at most (the budget ends first)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one per core)")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/modelforge-tune"))
    parser.add_argument("--quick", action="store_true", help="tiny data, 2 trials each: proves the pipeline only")
    args = parser.parse_args()
    if args.quick:
        args.budget = min(args.budget, 120.0)
        args.runs = args.runs / "quick"
    for name in args.recipes:
        result = tune_one(name, args)
        summary, (hand, goal) = result["summary"], BASELINE[name]
        tuned = result["test_accuracy"]
        print(f"{name}: search {result['search_seconds']:.0f} s ({summary.states}), best trial "
              f"{summary.best_trial} ({summary.metric} {summary.best_value:.4f}); best.yaml retrained with seed "
              f"{result['seed']} in {result['retrain_seconds']:.0f} s: test accuracy {100 * tuned:.1f} % "
              f"(goal {100 * goal:.0f} %: {'met' if tuned >= goal else 'missed'})")
        print(top_rows_markdown(summary))
        importance = summary.study_dir / "plots" / "parameter_importance.png"
        if not args.quick and importance.exists():
            IMAGES.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(importance, IMAGES / f"tune-{name}-importance.png")
        label = f"tune {name} test accuracy{' (quick)' if args.quick else ''}"
        print(f"table: {label} | {100 * tuned:.1f} | {100 * hand:.1f} | {tuned / hand:.3f}")


if __name__ == "__main__":
    main()
