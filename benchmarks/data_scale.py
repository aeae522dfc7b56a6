"""Training on data read from disk: memory and start-up that stay flat as an image folder grows 10x, and the
throughput of images decoded by DataLoader workers against the in-memory path.

1. Two generated folders of small RGB PNGs (N and 10×N images, 10 classes) train the ``image-classifier`` recipe for
   the same fixed number of steps with the same workers (min(4, CPUs − 1), at least 1), each in a fresh process.
   Reported per folder: peak resident memory of the training process (``ru_maxrss``; the workers' peak
   separately, as forked workers share the parent's pages),
   seconds from the start of loading the data (imports done) to the end of the first optimiser step, and the
   ratios 10×N / N: ``rss_ratio`` and ``startup_ratio``. The old path (every image decoded into memory,
   ``read_image_folder``) is measured alike for comparison (``rss_ratio_in_memory``, ``startup_ratio_in_memory``).
2. MNIST digits written as 28×28 grayscale PNGs train ``mnist-cnn`` read lazily with the default workers for the
   machine, against the same recipe on the built-in MNIST arrays held in memory: samples/s over the steps after
   the first few (the median of three alternated runs per path), ``throughput_ratio`` = lazy / in memory. On 1–2
   CPUs the default is no worker (the training process decodes between steps), so two more ratios show what a
   worker does there: ``throughput_ratio_one_worker`` (``train.num_workers=1``, two compute threads) and
   ``throughput_ratio_one_thread`` (one worker, ``OMP_NUM_THREADS=1`` on both sides, so that the worker has a
   core of its own).
3. If ``benchmarks/data_scale_text.py`` exists, its ``main(quick)`` figures are printed too.

    python benchmarks/data_scale.py [--quick] [--n N] [--steps K] [--workdir DIR] [--no-text]

``--quick``: N=600 (→ 6,000 images), 1,000 MNIST PNGs, 15 steps; under two minutes on two cores. The full run
(N=20,000 → 200,000 images, 20,000 MNIST PNGs, 200 steps) needs about 1.5 GB of disk and some tens of minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = 10
WARMUP_STEPS = 5  # steps left out of the throughput (workers starting, first batches)
REPEATS = 3  # throughput runs per path and setting; the median is reported


def write_folder(root: Path, count: int, size: int = 32) -> Path:
    """``count`` small PNGs in ``root/class_<k>/``: a brightness per class plus noise, so the task is learnable."""
    from PIL import Image

    rng = np.random.default_rng(count)
    for k in range(CLASSES):
        (root / f"class_{k}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        k = i % CLASSES
        pixels = np.clip(rng.normal(20 + 22 * k, 30, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"class_{k}" / f"{i:07d}.png", compress_level=1)
    return root


def write_mnist_folder(root: Path, count: int) -> Path:
    """The first ``count`` MNIST training digits as 28×28 grayscale PNGs in ``root/<digit>/``."""
    from PIL import Image

    from modelforge.data.builtin.mnist import load_mnist

    arrays = load_mnist()
    for digit in range(10):
        (root / str(digit)).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(arrays["train_images"][i]).save(root / str(int(arrays["train_labels"][i])) / f"{i:06d}.png")
    return root


# ---- measured in a fresh process --------------------------------------------------------------------------------
def _peaks() -> dict[str, float]:
    # ru_maxrss is in KiB on Linux; RUSAGE_CHILDREN: the largest of the finished DataLoader workers
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "workers_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def child_train(spec: dict) -> dict:
    """Build the task, its splits and the model, train ``steps`` steps; time the first step and the rest."""
    from modelforge.core.seed import seed_everything
    from modelforge.tasks import get_task
    from modelforge.tasks.recipes import load_recipe
    from modelforge.training.callbacks import Callback
    from modelforge.training.trainer import Trainer

    recipe = load_recipe(spec["recipe"], spec["overrides"])
    seed_everything(recipe.train.seed)
    task = get_task(recipe.task)(recipe)  # imports done: the clock measures reading the data, building, one step
    start = time.perf_counter()
    splits = task.datasets()
    ends: list[float] = []

    class Clock(Callback):
        def on_step_end(self, trainer, logs):  # noqa: ANN001, ANN201 — the Callback signature
            ends.append(time.perf_counter())

    trainer = Trainer(task, task.build_model(), recipe.train, Path(spec["run_dir"]), [Clock()], device="cpu")
    trainer.fit(splits)
    timed = ends[WARMUP_STEPS:]
    samples = (len(timed) - 1) * recipe.train.batch_size
    return {"images": len(splits.train), "first_step_s": ends[0] - start, "steps": len(ends),
            "samples_per_s": samples / (timed[-1] - timed[0]) if len(timed) > 1 else float("nan"), **_peaks()}


def child_decode(spec: dict) -> dict:
    """The in-memory path for comparison: every image decoded into one uint8 array (the time is what that path
    spends before its first step could start)."""
    from modelforge.data.formats.image_folder import read_image_folder

    start = time.perf_counter()
    images = read_image_folder(Path(spec["path"]), 3, 32)
    return {"images": len(images.labels), "first_step_s": time.perf_counter() - start, **_peaks()}


def measure(kind: str, spec: dict, env: dict | None = None) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(spec)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the comparisons --------------------------------------------------------------------------------------------
def scaling(work: Path, n: int, steps: int) -> dict:
    # the default for a large folder, at both sizes alike. Computed here rather than imported: this process must not
    # import torch, since a child's ru_maxrss starts from its parent's resident size at fork (Linux keeps it
    # across exec), which would put a floor of the parent's size under every measurement
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = max(1, min(4, cpus - 1))
    rows = {}
    for count in (n, 10 * n):
        folder = write_folder(work / f"folder_{count}", count)
        overrides = [f"data.path={folder}", "data.image_size=32", "data.val_size=0", "data.test_size=0",
                     f"train.max_steps={steps}", "train.batch_size=32", "train.early_stopping=null",
                     "train.progress=off", "train.min_steps=null", f"train.num_workers={workers}"]
        rows[count] = {"lazy": measure("train", {"recipe": "image-classifier", "overrides": overrides,
                                                 "run_dir": str(work / f"run_{count}")}),
                       "in_memory": measure("decode", {"path": str(folder)})}
    small, big = rows[n], rows[10 * n]
    return {"rows": rows,
            "rss_ratio": big["lazy"]["peak_rss_mb"] / small["lazy"]["peak_rss_mb"],
            "startup_ratio": big["lazy"]["first_step_s"] / small["lazy"]["first_step_s"],
            "rss_ratio_in_memory": big["in_memory"]["peak_rss_mb"] / small["in_memory"]["peak_rss_mb"],
            "startup_ratio_in_memory": big["in_memory"]["first_step_s"] / small["in_memory"]["first_step_s"]}


def throughput(work: Path, count: int, steps: int, env: dict | None = None, workers: int | None = None) -> dict:
    folder = work / "mnist_png"
    if not folder.exists():
        write_mnist_folder(folder, count)
    common = [f"train.max_steps={steps}", "data.val_size=0", "train.progress=off", "train.checkpoint_every_steps=null"]
    runs: dict[str, list[dict]] = {"lazy": [], "in_memory": []}
    for _ in range(REPEATS):  # alternated, so that a slow spell of a shared machine falls on both paths alike
        runs["lazy"].append(measure("train", {"recipe": "mnist-cnn", "run_dir": str(work / "run_lazy"), "overrides": [
            *common, "data.source=folder", f"data.path={folder}", "data.channels=1", "data.image_size=28",
            "data.test_size=0", *([] if workers is None else [f"train.num_workers={workers}"])]}, env))
        runs["in_memory"].append(measure("train", {"recipe": "mnist-cnn", "run_dir": str(work / "run_memory"),
                                                   "overrides": [*common, f"data.limit={count}"]}, env))
        for run in ("run_lazy", "run_memory"):  # the next measurement trains into the same names
            shutil.rmtree(work / run)
    lazy, memory = (median_run(runs[path]) for path in ("lazy", "in_memory"))
    return {"lazy": lazy, "in_memory": memory, "throughput_ratio": lazy["samples_per_s"] / memory["samples_per_s"]}


def median_run(runs: list[dict]) -> dict:
    """The run of median samples/s, with every run's figure beside it (``all_samples_per_s``)."""
    ordered = sorted(runs, key=lambda run: run["samples_per_s"])
    return {**ordered[len(ordered) // 2], "all_samples_per_s": [round(run["samples_per_s"]) for run in runs]}


def text_figures(quick: bool) -> dict | None:
    script = Path(__file__).with_name("data_scale_text.py")
    if not script.exists():
        return None
    sys.path.insert(0, str(script.parent))
    import data_scale_text

    return data_scale_text.main(quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=600, 1,000 MNIST PNGs, 15 steps (< 2 minutes)")
    parser.add_argument("--n", type=int, help="images in the smaller folder (the larger holds 10x)")
    parser.add_argument("--steps", type=int, help="optimiser steps per training run")
    parser.add_argument("--workdir", help="where the folders are written (default: a temporary folder)")
    parser.add_argument("--no-text", action="store_true", help="leave out the text corpus figures (a full run of "
                        "benchmarks/data_scale_text.py takes about 15 minutes on 2 cores)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, spec = args.child
        print(json.dumps((child_train if kind == "train" else child_decode)(json.loads(spec))))
        return
    n = args.n or (600 if args.quick else 20_000)  # both sizes above the 512 images the statistics decode
    steps = args.steps or (15 if args.quick else 200)
    mnist_count = 1_000 if args.quick else 20_000
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        scale = scaling(work, n, steps)
        speed = throughput(work, mnist_count, steps)
        # on a machine with few cores a decoding worker takes a core the in-memory path computes on; with one
        # compute thread on both sides the ratio isolates what reading from disk in a worker itself costs
        one_worker = throughput(work, mnist_count, steps, workers=1)
        one_thread = throughput(work, mnist_count, steps, {"OMP_NUM_THREADS": "1"}, workers=1)
    for count, row in scale["rows"].items():
        for path, r in row.items():
            print(f"{count:>8} images  {path:<9}  peak RSS {r['peak_rss_mb']:7.1f} MB "
                  f"(workers {r['workers_peak_rss_mb']:6.1f})  to first step {r['first_step_s']:6.2f} s")
    for path in ("lazy", "in_memory"):
        print(f"MNIST {mnist_count} PNGs  {path:<9}  {speed[path]['samples_per_s']:8.1f} samples/s  (median of "
              f"{speed[path]['all_samples_per_s']})")
    for key in ("rss_ratio", "startup_ratio", "rss_ratio_in_memory", "startup_ratio_in_memory"):
        print(f"{key}: {scale[key]:.2f}")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"throughput_ratio: {speed['throughput_ratio']:.2f}  (the default workers for {cpus} usable CPUs)")
    print(f"throughput_ratio_one_worker: {one_worker['throughput_ratio']:.2f}  (train.num_workers=1: "
          f"{one_worker['lazy']['samples_per_s']:.0f} vs {one_worker['in_memory']['samples_per_s']:.0f} samples/s)")
    print(f"throughput_ratio_one_thread: {one_thread['throughput_ratio']:.2f}  (one worker, OMP_NUM_THREADS=1 on "
          "both sides: "
          f"{one_thread['lazy']['samples_per_s']:.0f} vs {one_thread['in_memory']['samples_per_s']:.0f} samples/s)")
    text = None if args.no_text else text_figures(args.quick)
    if text is not None:
        for key, value in text.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
