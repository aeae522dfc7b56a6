"""Deletion curve on MNIST: how fast accuracy falls when the pixels an attribution ranks highest are removed, against
removing pixels at random. A faithful attribution points at the evidence the model uses, so its curve falls faster
(lower area under the curve). Target: integrated gradients below random.

Removing = setting a pixel to the baseline (black, the MNIST background). Two random controls: any pixel (most are
background already, so this is the weak control the issue names) and random *ink* pixels (non-zero ones first: the
strong control, which asks whether the attribution picks the right strokes, not just strokes).

    python benchmarks/deletion_curve.py [--run RUN] [--epochs 2] [--samples 1000] [--quick]

Trains mnist-cnn (the seed CNN) for ``--epochs`` unless ``--run`` names a trained image-classification run; writes
docs/images/deletion_curve.png and docs/images/explain_mnist_<method>.png.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from modelforge.explain import METHODS, explain_batch
from modelforge.explain.adapters import prepare
from modelforge.explain.deletion import DeletionCurve, deletion_curve, pixel_order
from modelforge.explain.render import figure_png, image_panel_png

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
FRACTIONS = [round(0.05 * i, 2) for i in range(11)]  # 0 … 50 %


def trained_run(args: argparse.Namespace, scratch: str) -> Path:
    import modelforge

    if args.run:
        return Path(args.run)  # e.g. from `modelforge train mnist-cnn train.epochs=2` (what this script would train)
    overrides = [f"train.epochs={args.epochs}", "train.progress=off", "train.checkpoint_every_steps=null"]
    if args.max_steps:
        overrides.append(f"train.max_steps={args.max_steps}")
    started = time.perf_counter()
    run = modelforge.train("mnist-cnn", overrides, run_dir=Path(scratch) / "mnist-cnn")
    print(f"trained mnist-cnn: {run.summary['steps']} steps, {run.summary['epochs']} epochs, "
          f"{time.perf_counter() - started:.0f} s, test accuracy {run.metrics.get('test_accuracy', float('nan')):.4f}")
    return run.directory


def attributions(task, model, batch: torch.Tensor, method: str, steps: int, chunk: int = 50) -> torch.Tensor:
    """(N, H, W) attributions for each image's predicted label, in chunks (Captum expands each by its steps)."""
    maps = []
    for start in range(0, len(batch), chunk):
        found = explain_batch(task, model, batch[start : start + chunk], method, steps=steps, attention=False)
        maps.extend(torch.from_numpy(item.heatmap.astype(np.float32)) for item in found)
    return torch.stack(maps)


def plot(curves: dict[str, DeletionCurve], samples: int, accuracy: float) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    styles = {"random": ("k", "--"), "random ink": ("grey", ":")}
    for name, curve in curves.items():
        colour, line = styles.get(name, (None, "-"))
        ax.plot([100 * f for f in curve.fractions], curve.accuracy, line, color=colour, marker="o", markersize=3,
                label=f"{name} (AUC {curve.area:.3f})")
    ax.set_xlabel("pixels removed (%), highest-attributed first")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Deletion curve: seed CNN on MNIST ({samples} test images, clean accuracy {accuracy:.3f})",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained image-classification run on MNIST (default: train mnist-cnn)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--samples", type=int, default=1000, help="MNIST test images to delete pixels from")
    parser.add_argument("--steps", type=int, default=64, help="integrated gradients steps")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--no-figures", action="store_true", help="do not write docs/images/*.png")
    parser.add_argument("--quick", action="store_true", help="300 training steps, 200 images, 2 methods")
    args = parser.parse_args()
    if args.quick:
        args.max_steps, args.samples, args.methods = args.max_steps or 300, 200, ["integrated_gradients", "saliency"]
    torch.manual_seed(0)
    from modelforge.data.builtin.mnist import load_mnist
    from modelforge.explain.predictor import ExplainingPredictor

    with tempfile.TemporaryDirectory() as scratch:
        predictor = ExplainingPredictor(trained_run(args, scratch))
    task, model = predictor.task, predictor.model.eval()
    arrays = load_mnist()
    pick = np.linspace(0, len(arrays["test_images"]) - 1, args.samples).astype(int)  # spread over the test set
    raw = arrays["test_images"][pick][:, None]
    labels = torch.from_numpy(arrays["test_labels"][pick].astype(np.int64))
    batch = task.preprocess(list(raw))
    baseline = prepare(task, model, batch[:1]).baseline.expand_as(batch)
    with torch.no_grad():
        clean = float((model(batch).argmax(-1) == labels).float().mean())
    print(f"machine: {platform.machine()} ({torch.get_num_threads()} torch thread), {args.samples} test images, "
          f"clean accuracy {clean:.4f}, baseline black, k = 0…50 %")

    curves: dict[str, DeletionCurve] = {}
    panels: dict[str, torch.Tensor] = {}
    for method in args.methods:
        started = time.perf_counter()
        maps = attributions(task, model, batch, method, args.steps)
        panels[method] = maps[:8]
        curves[method] = deletion_curve(model, batch, labels, pixel_order(maps), baseline, FRACTIONS)
        print(f"{method}: attributions {time.perf_counter() - started:.1f} s, AUC {curves[method].area:.4f}")
    curves["random"] = deletion_curve(model, batch, labels, pixel_order(batch[:, 0], random=True), baseline,
                                      FRACTIONS)
    ink = torch.from_numpy(raw[:, 0] > 0).float() + torch.rand(raw.shape[0], 28, 28,
                                                                 generator=torch.Generator().manual_seed(1))
    curves["random ink"] = deletion_curve(model, batch, labels, pixel_order(ink), baseline, FRACTIONS)

    names = list(curves)
    print("k%   " + "  ".join(f"{n:>20}" for n in names))
    for i, fraction in enumerate(FRACTIONS):
        print(f"{100 * fraction:>3.0f}  " + "  ".join(f"{curves[n].accuracy[i]:>20.4f}" for n in names))
    print("AUC  " + "  ".join(f"{curves[n].area:>20.4f}" for n in names))
    for method in args.methods:
        ours, weak, strong = curves[method].area, curves["random"].area, curves["random ink"].area
        print(f"table: deletion AUC {method} vs random pixels | {ours:.4f} | {weak:.4f} | {ours / weak:.3f}")
        print(f"table: deletion AUC {method} vs random ink pixels | {ours:.4f} | {strong:.4f} | {ours / strong:.3f}")
    ig = curves.get("integrated_gradients")
    if ig is not None:
        verdict = "PASS" if ig.area < curves["random"].area else "FAIL"
        print(f"integrated_gradients_faster_than_random: {verdict} (AUC {ig.area:.4f} vs {curves['random'].area:.4f})")

    if not args.no_figures:
        IMAGES.mkdir(parents=True, exist_ok=True)
        (IMAGES / "deletion_curve.png").write_bytes(plot(curves, args.samples, clean))
        with torch.no_grad():
            predicted = model(batch[:8]).argmax(-1).tolist()
        titles = [f"pred {p} (true {int(t)})" for p, t in zip(predicted, labels[:8])]
        for method, maps in panels.items():
            png = image_panel_png(list(raw[:8]), [m.numpy() for m in maps], titles)
            (IMAGES / f"explain_mnist_{method}.png").write_bytes(png)
        print(f"wrote {IMAGES / 'deletion_curve.png'} and {len(panels)} heat-map panels")


if __name__ == "__main__":
    main()
