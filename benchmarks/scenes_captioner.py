"""The scenes-captioner recipe against the nearest-neighbour caption baseline on unseen colour–kind pairings.

Trains ``scenes-captioner`` (CNN grid encoder + Transformer decoder) on the generated CLEVR-style scenes and scores
its test captions — every test scene names a colour–kind pair never drawn in training — with BLEU-4 (sacreBLEU) and
CIDEr (pycocoevalcap), beam search and greedy, beside the caption of the training image nearest in pixels (the
baseline ``modelforge train`` fits on the same split). Prints one `table:` line per metric: ours | baseline | ratio.

    python benchmarks/scenes_captioner.py            # the recipe as shipped: 3,000 training scenes (~15 CPU-minutes)
    python benchmarks/scenes_captioner.py --quick    # 600 training scenes, 4 epochs: a few minutes
    python benchmarks/scenes_captioner.py --decodings RUN   # a trained run's test split under several decodings
"""

from __future__ import annotations

import argparse
from pathlib import Path

import modelforge

DECODINGS = ((1, 0.0), (3, 0.0), (3, 0.6), (5, 1.0))  # (beam size, length penalty); beam 1 is greedy

QUICK = ["data.num_train=600", "data.num_val=60", "data.num_test=150", "data.val_limit=60", "train.epochs=4",
         "train.warmup_steps=10"]


def decodings(run: Path) -> None:
    """Decode the run's test split with each of DECODINGS: how many distinct captions, and their scores."""
    import torch

    predictor = modelforge.load(run)
    task, model = predictor.task, predictor.model
    test = task._load()["test"]
    images = torch.from_numpy(test.image_batch(range(len(test)), task.state()["image_size"]))
    with torch.no_grad():  # how much the grid the decoder attends to differs from one image to the next
        memory = model.encode(task.normalise(images))
    spread = float(memory.std(dim=0).mean() / memory.std())
    print(f"test scenes: {len(test)}; the encoder grid's std across images / its overall std: {spread:.3f}")
    for beam, penalty in DECODINGS:
        captions = task.generate(model, images, task.search_settings(beam, penalty))
        scores = task.caption_metrics(test.captions, captions)
        print(f"table: beam {beam}, length penalty {penalty} | {len(set(captions))} distinct captions | "
              f"BLEU-4 {scores['bleu4']:.1f} | CIDEr {scores['cider']:.3f} | {captions[0]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="600 training scenes, 150 test scenes, 4 epochs")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/runs/scenes-captioner"), help="where the run goes")
    parser.add_argument("--decodings", type=Path, metavar="RUN", help="score this trained run's test split under "
                                                                       "several beam sizes and length penalties")
    args = parser.parse_args()
    if args.decodings:
        decodings(args.decodings)
        return
    overrides = [*QUICK, "train.progress=off"] if args.quick else ["train.progress=off"]
    run = modelforge.train("scenes-captioner", overrides, run_dir=args.runs / ("quick" if args.quick else "full"))
    metrics, baseline, data = run.metrics, run.summary["baseline"], run.summary["data"]
    print(f"training scenes: {data['train_images']} ({data['train_captions']} captions), test scenes: "
          f"{data['test_images']} ({data['test_origin']}); train seconds: {run.summary['train_seconds']}")
    print(baseline["verdict"])
    for name, label in (("test_bleu4", "BLEU-4"), ("test_cider", "CIDEr")):
        ours, theirs = float(metrics[name]), float(baseline[name])
        greedy = float(metrics.get(f"{name}_greedy", float("nan")))
        ratio = f"{ours / theirs:.3f}" if theirs else "inf"
        print(f"table: scenes-captioner test {label} (unseen pairings; beam, greedy {greedy:.3f}) vs nearest-caption "
              f"| {ours:.3f} | {theirs:.3f} | {ratio}")


if __name__ == "__main__":
    main()
