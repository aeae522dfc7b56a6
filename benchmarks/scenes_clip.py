"""scenes-clip: image–text retrieval on generated captioned scenes, and zero-shot MNIST from the same model.

Trains the `scenes-clip` recipe (CNN image tower + MiniLM-L6 text tower with LoRA) on generated scenes whose test
split names colour–kind pairs never drawn in training, prints recall@1/5 both ways on that test split, then
classifies MNIST test digits zero-shot — each digit scored against the prompts "a 0" … "a 9" (and "a white 0" …) —
though the model never saw a digit as a labelled class, only as a part of captioned scenes. Chance is 10 %.

Each MNIST digit is shown as the scenes show digits: its 28×28 glyph scaled to a third of the image side, pasted in
the middle of a plain dark-grey square (the scene backgrounds' grey), white on grey as MNIST is white on black.

    python benchmarks/scenes_clip.py              # the recipe as shipped: 3,000 training scenes, up to 8 epochs
    python benchmarks/scenes_clip.py --quick      # 600 training scenes, 2 epochs, 300 digits: minutes
    python benchmarks/scenes_clip.py --scenes 1500 --epochs 3 --digits 1000   # any size in between
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

import modelforge
from modelforge.data.builtin.mnist import load_mnist

CHANCE = 0.1
BACKGROUND = 50  # grey level in the middle of the scene backgrounds' range (25–75)


def digit_scene(glyph: np.ndarray, size: int) -> np.ndarray:
    """A 28×28 MNIST glyph as a scene would hold it: scaled to size/3, centred on plain grey, RGB uint8."""
    side = size // 3
    alpha = np.asarray(Image.fromarray(glyph).resize((side, side), Image.BILINEAR), dtype=np.float32) / 255
    canvas = np.full((size, size), BACKGROUND, dtype=np.float32)
    top = (size - side) // 2
    region = canvas[top : top + side, top : top + side]
    region[:] = region * (1 - alpha) + 245 * alpha
    return np.repeat(np.clip(np.rint(canvas), 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def zero_shot(predictor, images: np.ndarray, labels: np.ndarray, template: str, size: int) -> tuple[float, float]:
    """Accuracy, and the share of the most frequent prediction (1.0: one class for every digit)."""
    prompts = [template.format(d) for d in range(10)]
    predicted = []
    for start in range(0, len(images), 100):
        chunk = [digit_scene(g, size) for g in images[start : start + 100]]
        predicted += [prompts.index(r["label"]) for r in predictor.predict(chunk, labels=prompts)]
    predicted_array = np.asarray(predicted)
    top_share = np.bincount(predicted_array, minlength=10).max() / len(predicted_array)
    return float(np.mean(predicted_array == labels[: len(predicted)])), float(top_share)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="600 training scenes, 2 epochs, 300 digits")
    parser.add_argument("--digits", type=int, default=None, help="MNIST test digits to classify (default 2000)")
    parser.add_argument("--scenes", type=int, help="training scenes (val and test: a sixth each, at least 100)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the recipe's, or 2 with --quick)")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/runs/scenes-clip"), help="where the run goes")
    args = parser.parse_args()
    overrides = ["train.progress=off"]
    scenes, epochs = (args.scenes or 600, args.epochs or 2) if args.quick else (args.scenes, args.epochs)
    if scenes:
        held = max(100, scenes // 6)
        overrides += [f"data.scenes_train={scenes}", f"data.scenes_val={held}", f"data.scenes_test={held}"]
    if epochs:
        overrides += [f"train.epochs={epochs}", "train.warmup_steps=5"]
    digits = args.digits or (300 if args.quick else 2000)
    run = modelforge.train("scenes-clip", overrides=overrides, run_dir=args.runs)
    m = run.metrics
    print(f"train_seconds: {run.summary['train_seconds']:.0f}")
    print("table: split | image→text R@1 | R@5 | text→image R@1 | R@5")
    print(f"table: test (unseen colour–kind pairs, {run.summary['data']['test_size']} images) | "
          f"{100 * m['test_i2t_r@1']:.1f}% | {100 * m['test_i2t_r@5']:.1f}% | {100 * m['test_t2i_r@1']:.1f}% | "
          f"{100 * m['test_t2i_r@5']:.1f}%")
    predictor = modelforge.load(run.directory)
    size = predictor.task.state()["image_size"]
    mnist = load_mnist()
    images, labels = mnist["test_images"][:digits], mnist["test_labels"][:digits]
    print(f"table: zero-shot MNIST ({digits} test digits) | accuracy | chance | most frequent prediction's share")
    for template in ("a {}", "a white {}"):
        accuracy, top_share = zero_shot(predictor, images, labels, template, size)
        print(f"table: prompts \"{template.format('0')}\" … \"{template.format('9')}\" | {100 * accuracy:.1f}% | "
              f"{100 * CHANCE:.0f}% | {100 * top_share:.0f}%")


if __name__ == "__main__":
    main()
