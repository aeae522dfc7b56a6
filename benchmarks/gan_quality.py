"""DCGAN sample quality judged by a trained MNIST classifier: the share of generated digits the judge classifies
with confidence ≥ 0.9 (are they recognisable?) and the entropy of the judge's predicted-class histogram (are all ten
digits produced, in balance? log2(10) ≈ 3.32 bits at most). Targets: ≥ 90 % confident, all 10 classes present.

The peer column is the same judge on as many real MNIST test digits: the ceiling a perfect generator would reach.

    python benchmarks/gan_quality.py [--run RUN] [--judge RUN] [--samples 1000] [--seed 0] [--grid FILE.png] [--quick]

Trains what is not given: the judge as `mnist-cnn` for 2 epochs, the GAN as `mnist-dcgan` (both much shorter with
--quick). Writes a 64-sample grid to --grid (default docs/images/dcgan_samples.png; "" to skip).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from modelforge.tasks.vision.image_generation import image_grid, judge_probabilities, judge_scores, png_bytes

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
TARGET_CONFIDENT, TARGET_CLASSES = 0.9, 10


def trained(recipe: str, run: str | None, overrides: list[str], scratch: str) -> Path:
    import modelforge

    if run:
        return Path(run)
    started = time.perf_counter()
    result = modelforge.train(recipe, [*overrides, "train.progress=off"], run_dir=Path(scratch) / recipe)
    print(f"trained {recipe}: {result.summary['steps']} steps, {time.perf_counter() - started:.0f} s")
    return result.directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained image_generation run (default: train mnist-dcgan)")
    parser.add_argument("--judge", help="a trained mnist-cnn run (default: train one for 2 epochs)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", default=str(IMAGES / "dcgan_samples.png"), help='PNG of 64 samples ("": none)')
    parser.add_argument("--quick", action="store_true", help="short training runs (a smoke test, not the figure)")
    args = parser.parse_args()

    import modelforge
    from modelforge.data.builtin.mnist import load_mnist

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        quick = ["train.max_steps=150"] if args.quick else []
        judge_dir = trained("mnist-cnn", args.judge, ["train.epochs=2", *quick], scratch)
        gan_dir = trained("mnist-dcgan", args.run, quick, scratch)
        judge, gan = modelforge.load(judge_dir), modelforge.load(gan_dir)
        fakes = gan.task.generate(gan.model, args.samples, args.seed)
        ours = judge_scores(fakes, judge)
        real = torch.from_numpy(load_mnist()["test_images"][: args.samples, None]).float() / 127.5 - 1
        peer = judge_scores(real, judge)
        histogram = np.bincount(judge_probabilities(fakes, judge).argmax(-1).numpy(), minlength=10)
        raw = None
        average = getattr(gan.model, "generator_ema", None)
        if average is not None:  # the same latents through the trained generator: what the averaging adds
            gan.model.generator_ema = None
            raw = judge_scores(gan.task.generate(gan.model, args.samples, args.seed), judge)
            gan.model.generator_ema = average

    print(f"gan run: {gan_dir}  judge: {judge_dir}  samples: {args.samples}  seed: {args.seed}")
    for key in ours:
        print(f"{key}: {ours[key]:.4f}  (real test digits: {peer[key]:.4f})")
    if raw is not None:
        print("without the weight average: " + ", ".join(f"{key}: {value:.4f}" for key, value in raw.items()))
    print(f"judged class histogram 0-9: {histogram.tolist()}")
    met = ours["judge_confident"] >= TARGET_CONFIDENT and ours["judge_classes_present"] >= TARGET_CLASSES
    print(f"target (≥ {TARGET_CONFIDENT:.0%} confident, all {TARGET_CLASSES} classes): {'met' if met else 'missed'}")
    print(f"table: dcgan judge-confident share | {ours['judge_confident']:.3f} | {peer['judge_confident']:.3f} (real)"
          f" | {ours['judge_confident'] / peer['judge_confident']:.2f}")
    print(f"table: dcgan class entropy (bits) | {ours['judge_class_entropy']:.3f} | "
          f"{peer['judge_class_entropy']:.3f} (real) | {ours['judge_class_entropy'] / peer['judge_class_entropy']:.2f}")
    if args.grid:
        grid = Path(args.grid)
        grid.parent.mkdir(parents=True, exist_ok=True)
        from modelforge.core.atomic import atomic_write_bytes

        atomic_write_bytes(grid, png_bytes(image_grid(fakes[:64], columns=8)))
        print(f"wrote {grid}")


if __name__ == "__main__":
    main()
