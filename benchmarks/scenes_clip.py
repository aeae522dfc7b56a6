"""scenes-clip: image–text retrieval on generated captioned scenes, and zero-shot MNIST from the same model.

Trains the `scenes-clip` recipe (CNN image tower + MiniLM-L6 text tower with LoRA) on generated scenes whose test
split names colour–kind pairs never drawn in training, prints recall@1/5 both ways on that test split, then
classifies MNIST test digits zero-shot — each digit scored against the prompts "a 0" … "a 9" (and "a white 0" …) —
though the model never saw a digit as a labelled class, only as a part of captioned scenes. Chance is 10 %.

Each MNIST digit is drawn exactly as the scenes' lone objects are (``lone_glyph_scene``): cropped to its ink, scaled
to the scenes' object size range, white, at a random place on a scene background. ``--run DIR`` scores a run trained
before (its test recall from its results.json) instead of training one.

    python benchmarks/scenes_clip.py              # the recipe as shipped: 3,000 training scenes, up to 8 epochs
    python benchmarks/scenes_clip.py --quick      # 600 training scenes, 2 epochs, 300 digits: minutes
    python benchmarks/scenes_clip.py --scenes 1500 --epochs 3 --digits 1000   # any size in between
    python benchmarks/scenes_clip.py --run /tmp/runs/scenes-clip --digits 1000  # score a trained run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import modelforge
from modelforge.data.builtin.caption_scenes import CaptionSceneParams, lone_glyph_scene
from modelforge.data.builtin.mnist import load_mnist

CHANCE = 0.1
DIGITS = [str(d) for d in range(10)]
# (row name, templates): one template is plain label prompts; several are a prompt ensemble
PROMPTINGS = (("prompts \"a 0\" … \"a 9\"", ["a {}"]), ("prompts \"a white 0\" … \"a white 9\"", ["a white {}"]),
              ("ensemble of \"a {}\" and \"a white {}\"", ["a {}", "a white {}"]))


def digit_scenes(glyphs: np.ndarray, size: int, seed: int = 0) -> list[np.ndarray]:
    """Each MNIST glyph drawn as a lone white object of a generated scene (uint8 RGB, size × size)."""
    rng = np.random.default_rng(seed)
    params = CaptionSceneParams(image_size=size)
    return [lone_glyph_scene(rng, glyph, params) for glyph in glyphs]


def zero_shot(predictor, scenes: list[np.ndarray], labels: np.ndarray, templates: list[str]) -> tuple[float, float]:
    """Accuracy, and the share of the most frequent prediction (1.0: one class for every digit)."""
    predicted = []
    for start in range(0, len(scenes), 100):
        results = predictor.predict(scenes[start : start + 100], labels=DIGITS, templates=templates)
        predicted += [DIGITS.index(r["label"]) for r in results]
    predicted_array = np.asarray(predicted)
    top_share = np.bincount(predicted_array, minlength=10).max() / len(predicted_array)
    return float(np.mean(predicted_array == labels[: len(predicted)])), float(top_share)


def _train(args: argparse.Namespace) -> tuple[Path, dict, dict]:
    """Train the recipe at the asked size: (run folder, test metrics, data summary)."""
    overrides = ["train.progress=off"]
    scenes, epochs = (args.scenes or 600, args.epochs or 2) if args.quick else (args.scenes, args.epochs)
    if scenes:
        held = max(100, scenes // 6)
        overrides += [f"data.scenes_train={scenes}", f"data.scenes_val={held}", f"data.scenes_test={held}"]
    if epochs:
        overrides += [f"train.epochs={epochs}", "train.warmup_steps=5"]
    if args.single_share is not None:
        overrides.append(f"data.scenes_single_share={args.single_share}")
    run = modelforge.train("scenes-clip", overrides=overrides, run_dir=args.runs)
    print(f"train_seconds: {run.summary['train_seconds']:.0f}")
    return run.directory, run.metrics, run.summary["data"]


def _trained(run: Path) -> tuple[Path, dict, dict]:
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    return run, results["metrics"], results["summary"]["data"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="600 training scenes, 2 epochs, 300 digits")
    parser.add_argument("--digits", type=int, default=None, help="MNIST test digits to classify (default 2000)")
    parser.add_argument("--scenes", type=int, help="training scenes (val and test: a sixth each, at least 100)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the recipe's, or 2 with --quick)")
    parser.add_argument("--single-share", type=float, help="data.scenes_single_share (default: the recipe's)")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/runs/scenes-clip"), help="where the run goes")
    parser.add_argument("--run", type=Path, help="score this trained run instead of training one")
    args = parser.parse_args()
    directory, m, data = _trained(args.run) if args.run else _train(args)
    print("table: split | image→text R@1 | R@5 | text→image R@1 | R@5")
    print(f"table: test (unseen colour–kind pairs, {data['test_size']} images) | "
          f"{100 * m['test_i2t_r@1']:.1f}% | {100 * m['test_i2t_r@5']:.1f}% | {100 * m['test_t2i_r@1']:.1f}% | "
          f"{100 * m['test_t2i_r@5']:.1f}%")
    predictor = modelforge.load(directory)
    digits = args.digits or (300 if args.quick else 2000)
    mnist = load_mnist()
    scenes = digit_scenes(mnist["test_images"][:digits], predictor.task.state()["image_size"])
    labels = mnist["test_labels"][:digits]
    print(f"table: zero-shot MNIST ({digits} test digits) | accuracy | chance | most frequent prediction's share")
    for name, templates in PROMPTINGS:
        accuracy, top_share = zero_shot(predictor, scenes, labels, templates)
        print(f"table: {name} | {100 * accuracy:.1f}% | {100 * CHANCE:.0f}% | {100 * top_share:.0f}%")


if __name__ == "__main__":
    main()
