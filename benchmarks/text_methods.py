"""Which method for a small text table? The text-classifier recipe's split, four ways, on the tables of
``user_tables.py``:

- ``tfidf``: TF-IDF (words 1-2 grams) + logistic regression — the run's own baseline
- ``frozen``: the pretrained MiniLM-L6 encoder left as it is, its mean-pooled (L2-normalised) sentence embedding
  + logistic regression
- ``stack``: the frozen embedding and the TF-IDF features side by side + logistic regression
- ``finetune`` (``--finetune``): the recipe itself, ``modelforge train text-classifier data.path=TRAIN
  data.test_path=TEST`` (full fine-tuning of the encoder and its linear head)

Every logistic regression fits on the recipe's training split with its ``C`` picked on the recipe's validation
split (as the run's baseline does); all score the same test split. Prints test accuracy and CPU seconds per method.

    python benchmarks/text_methods.py [--quick] [--tables rotten-tomatoes debates] [--finetune] [--workdir DIR]

``--quick`` (what ``modelforge bench --quick`` passes): the Rotten Tomatoes table only, without fine-tuning.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import user_tables  # noqa: E402 — the same tables, written the same way

SIZES = user_tables.TEXT_SIZES  # the same rows as the benchmark, so --finetune's figure is its table's


def _splits(train_csv: Path, test_csv: Path):
    from modelforge.tasks import get_task
    from modelforge.tasks.recipes import load_recipe

    recipe = load_recipe("text-classifier", [f"data.path={train_csv}", f"data.test_path={test_csv}"])
    task = get_task(recipe.task)(recipe)
    return task, task.datasets()


def _embeddings(task, dataset) -> np.ndarray:
    """Mean-pooled, L2-normalised MiniLM embeddings (as sentence-transformers' all-MiniLM-L6-v2 makes them)."""
    import torch

    from modelforge.models.layers.masks import length_mask
    from modelforge.models.transformer import mean_pool

    model = task.build_model().eval()
    rows = []
    with torch.no_grad():
        for start in range(0, len(dataset), 64):
            batch, size = dataset.get_batch(range(start, min(start + 64, len(dataset))))[:2]
            longest = int(size.max())
            mask = length_mask(size, longest)
            pooled = mean_pool(model.encoder(batch[:, :longest], mask), mask)
            rows.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(rows)


def _tfidf(task) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(task.baseline_texts["train"])
    return {k: vectorizer.transform(v) for k, v in task.baseline_texts.items()}


def _scored(features: dict, labels: dict) -> tuple[float, float]:
    """(test accuracy, C) of a logistic regression with C picked on the validation split."""
    from modelforge.tasks.baselines import GRID, _fit

    def accuracy(model, split):
        return float((model.predict(features[split]) == labels[split]).mean())

    scores = {c: accuracy(_fit(features["train"], labels["train"], c), "val") for c in GRID}
    best = max(scores, key=lambda c: (scores[c], -abs(np.log10(c))))
    return accuracy(_fit(features["train"], labels["train"], best), "test"), best


def compare(name: str, workdir: Path, finetune: bool) -> list[str]:
    from scipy.sparse import csr_matrix, hstack

    parts = user_tables.text_tables(name, SIZES[name])
    train_csv = user_tables._write_csv(workdir / f"{name}-train.csv", ("text", "label"), parts["train"])
    test_csv = user_tables._write_csv(workdir / f"{name}-test.csv", ("text", "label"), parts["test"])
    task, splits = _splits(train_csv, test_csv)
    datasets = {"train": splits.train, "val": splits.val, "test": splits.test}
    labels = {k: v.targets.numpy() for k, v in datasets.items()}
    sizes = "/".join(str(len(labels[k])) for k in ("train", "val", "test"))
    lines = []
    started = time.process_time()
    tfidf = _tfidf(task)
    accuracy, c = _scored(tfidf, labels)
    lines.append(f"| {name} | {sizes} | tfidf | {100 * accuracy:.1f} % | C={c} | {time.process_time() - started:.0f} |")
    started = time.process_time()
    frozen = {k: _embeddings(task, v) for k, v in datasets.items()}
    embed_seconds = time.process_time() - started
    accuracy, c = _scored(frozen, labels)
    lines.append(f"| {name} | {sizes} | frozen | {100 * accuracy:.1f} % | C={c} | "
                 f"{time.process_time() - started:.0f} |")
    started = time.process_time()
    stacked = {k: hstack([tfidf[k], csr_matrix(frozen[k])]).tocsr() for k in datasets}
    accuracy, c = _scored(stacked, labels)
    lines.append(f"| {name} | {sizes} | stack | {100 * accuracy:.1f} % | C={c} | "
                 f"{embed_seconds + time.process_time() - started:.0f} |")
    if finetune:
        results = user_tables.train(["text-classifier", f"data.path={train_csv}", f"data.test_path={test_csv}"],
                                    workdir)
        lines.append(f"| {name} | {sizes} | finetune | {100 * results['metrics']['test_accuracy']:.1f} % | recipe | "
                     f"{results['cpu_seconds']:.0f} |")
    for line in lines:
        print(line, flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="*", default=["rotten-tomatoes", "debates"], choices=sorted(SIZES))
    parser.add_argument("--finetune", action="store_true", help="also run the recipe (full fine-tuning; minutes)")
    parser.add_argument("--quick", action="store_true", help="only the Rotten Tomatoes table, no fine-tuning")
    parser.add_argument("--workdir", type=Path, help="where the tables go (default: a temporary folder)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="text-methods-"))
    workdir.mkdir(parents=True, exist_ok=True)
    lines = ["| table | train/val/test rows | method | test accuracy | setting | CPU seconds |",
             "|---|---|---|---|---|---|"]
    for name in ["rotten-tomatoes"] if args.quick else args.tables:
        lines += compare(name, workdir, args.finetune and not args.quick)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
