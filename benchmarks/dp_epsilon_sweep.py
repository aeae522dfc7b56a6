"""Privacy/utility trade-off: the `sentiment-dp` recipe trained at ε ∈ {1, 3, 8, ∞} (∞ = privacy off), same model,
optimiser and epochs. Prints one `table:` line per ε (test accuracy, ε actually spent, noise multiplier, wall time)
and draws docs/images/dp_accuracy_vs_epsilon.png.

    python benchmarks/dp_epsilon_sweep.py [--epsilons 1 3 8 inf] [--runs /tmp/runs/dp-sweep] [--set train.epochs=5]
"""

from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path

import modelforge
from modelforge.core.atomic import atomic_write_bytes

REPO = Path(__file__).resolve().parents[1]
FIGURE = REPO / "docs" / "images" / "dp_accuracy_vs_epsilon.png"


def train_at(epsilon: float, runs: Path, extra: list[str]) -> dict[str, float]:
    name = "inf" if math.isinf(epsilon) else f"{epsilon:g}"
    overrides = ["train.progress=off", *extra]
    overrides.append("privacy=null" if math.isinf(epsilon) else f"privacy.target_epsilon={epsilon}")
    started = time.perf_counter()
    run = modelforge.train("sentiment-dp", overrides, run_dir=runs / f"eps-{name}")
    privacy = run.summary.get("privacy") or {}
    return {
        "target": epsilon,
        "accuracy": float(run.metrics["test_accuracy"]),
        "spent": float(privacy.get("epsilon", math.inf)),
        "noise": float(privacy.get("noise_multiplier", 0.0)),
        "seconds": time.perf_counter() - started,
    }


def plot(results: list[dict[str, float]], delta: float) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    private = [r for r in results if not math.isinf(r["target"])]
    ax.plot([r["spent"] for r in private], [100 * r["accuracy"] for r in private], "o-", label="DP-SGD (Opacus)")
    for r in private:
        ax.annotate(f"{100 * r['accuracy']:.1f}%", (r["spent"], 100 * r["accuracy"]), textcoords="offset points",
                    xytext=(4, -12), fontsize=8)
    for r in results:
        if math.isinf(r["target"]):
            ax.axhline(100 * r["accuracy"], color="k", linestyle="--",
                       label=f"no privacy (ε = ∞): {100 * r['accuracy']:.1f}%")
    ax.axhline(50, color="grey", linestyle=":", label="chance (50%)")
    ax.set_xscale("log")
    ax.set_xticks([1, 2, 3, 5, 8], labels=["1", "2", "3", "5", "8"])
    ax.minorticks_off()
    ax.set_xlabel(f"ε spent (δ = {delta:g}, RDP accountant)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("sentiment-dp on Rotten Tomatoes: accuracy vs privacy budget", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 3.0, 8.0, math.inf])
    parser.add_argument("--runs", type=Path, default=Path("/tmp/runs/dp-sweep"), help="where the runs go")
    parser.add_argument("--set", nargs="*", default=[], help="extra recipe overrides, e.g. train.epochs=5")
    parser.add_argument("--figure", type=Path, default=FIGURE)
    args = parser.parse_args()
    results = [train_at(eps, args.runs, args.set) for eps in args.epsilons]
    print("table: target ε | test accuracy | ε spent | noise multiplier | wall s")
    for r in results:
        target = "∞" if math.isinf(r["target"]) else f"{r['target']:g}"
        spent = "∞" if math.isinf(r["spent"]) else f"{r['spent']:.3f}"
        print(f"table: sentiment-dp ε={target} | {r['accuracy']:.4f} | {spent} | {r['noise']:.3f} | {r['seconds']:.0f}")
    atomic_write_bytes(args.figure, plot(results, 1e-5))
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
