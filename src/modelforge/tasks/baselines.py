"""A classical scikit-learn baseline beside every classification run, on the model's own train/val/test split.

A task declares ``baseline = "text" | "pixels" | "audio"``; this module turns the split's inputs into features —
TF-IDF of the raw texts (``Task.baseline_texts``), the pixels, or MFCC means and standard deviations of the
utterances — fits a logistic regression on the training split (its ``C`` picked on the validation split when there
is one) and scores the test split. The run then says in words whether the network beat it: a model that loses to
TF-IDF + logistic regression is not worth deploying, however good its own figures look.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelforge.tasks.metrics import classification_metrics

METHODS = {
    "text": "TF-IDF (words 1-2 grams) + logistic regression",
    "pixels": "logistic regression on pixels",
    "audio": "logistic regression on MFCC means",
}
GRID = (0.01, 0.1, 1.0, 10.0, 100.0)  # C values tried on the validation split
MAX_TRAIN = 20_000  # rows the baseline fits on at most (an evenly spaced subset): seconds, not minutes


def _labels(dataset: Any) -> np.ndarray:
    if hasattr(dataset, "tensors"):
        return dataset.tensors[-1].numpy()
    return np.asarray([int(t) for t in dataset.targets])


def _pixels(dataset: Any) -> np.ndarray:
    images = dataset.tensors[0] if hasattr(dataset, "tensors") else dataset.pixels(range(len(dataset)))
    return images.reshape(len(images), -1).float().numpy() / 255.0


def _mfcc_means(dataset: Any, features: Any) -> np.ndarray:
    """Per utterance: the mean and standard deviation over time of 20 MFCCs (DCT of the task's log-mel frames)."""
    import torch
    from scipy.fft import dct

    from modelforge.data.audio import extract_features

    rows = []
    for start in range(0, len(dataset), 64):
        waves, lengths = dataset.get_batch(list(range(start, min(start + 64, len(dataset)))))[:2]
        with torch.no_grad():
            feats, frames = extract_features(waves, features, lengths)
        for item, count in zip(feats.numpy(), frames.tolist()):
            cepstra = dct(item[: max(count, 1)], type=2, norm="ortho", axis=1)[:, :20]
            rows.append(np.concatenate([cepstra.mean(0), cepstra.std(0)]))
    return np.stack(rows)


def _features(kind: str, task: Any, splits: dict[str, Any]) -> dict[str, Any]:
    if kind == "text":
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = {name: task.baseline_texts[name] for name in splits}
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
        vectorizer.fit(texts["train"])
        return {name: vectorizer.transform(values) for name, values in texts.items()}
    from sklearn.preprocessing import StandardScaler

    if kind == "pixels":
        raw = {name: _pixels(dataset) for name, dataset in splits.items()}
    else:
        raw = {name: _mfcc_means(dataset, task.data_cfg.features) for name, dataset in splits.items()}
    scaler = StandardScaler().fit(raw["train"])
    return {name: scaler.transform(values) for name, values in raw.items()}


def _fit(x: Any, y: np.ndarray, c: float) -> Any:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a few hundred iterations are plenty for a baseline
        return LogisticRegression(C=c, max_iter=300).fit(x, y)


def _at_most(dataset: Any, rows: int) -> Any:
    if hasattr(dataset, "tensors") or not hasattr(dataset, "subset") or len(dataset) <= rows:
        return dataset
    return dataset.subset(np.linspace(0, len(dataset) - 1, rows).round().astype(int))


def run_baseline(task: Any, splits: Any) -> dict[str, Any] | None:
    """The baseline's test metrics (``test_accuracy``, ``test_macro_f1``) and how it was made; None when the task
    declares no baseline or the run has no test split."""
    kind = getattr(task, "baseline", None)
    if kind is None or splits.test is None:
        return None
    parts = {"train": splits.train, "test": splits.test, **({"val": splits.val} if splits.val is not None else {})}
    # a split read from disk (``subset``) is decoded for the baseline at most MAX_TRAIN evenly spaced rows at a time
    parts = {name: _at_most(dataset, MAX_TRAIN) for name, dataset in parts.items()}
    labels = {name: _labels(dataset) for name, dataset in parts.items()}
    if len(set(labels["train"].tolist())) < 2:
        return None
    features = _features(kind, task, parts)
    subset = np.linspace(0, len(labels["train"]) - 1, min(MAX_TRAIN, len(labels["train"]))).round().astype(int)
    x_train, y_train = features["train"][subset], labels["train"][subset]
    best_c = 1.0
    if "val" in parts:
        scores = {c: float((_fit(x_train, y_train, c).predict(features["val"]) == labels["val"]).mean()) for c in GRID}
        best_c = max(scores, key=lambda c: (scores[c], -abs(np.log10(c))))  # ties: the C nearest 1
    model = _fit(x_train, y_train, best_c)
    metrics = classification_metrics(labels["test"], model.predict(features["test"]), len(task.labels))
    return {"method": METHODS[kind], "C": best_c, "train_rows": int(len(subset)),
            "test_accuracy": metrics["accuracy"], "test_macro_f1": metrics["macro_f1"]}


def verdict(model_metrics: dict[str, Any], baseline: dict[str, Any]) -> str:
    """One sentence: did the model beat the baseline on test accuracy?"""
    ours, theirs = model_metrics.get("test_accuracy"), baseline["test_accuracy"]
    if not isinstance(ours, (int, float)):
        return "the model has no test accuracy to compare with the baseline"
    gap = 100 * (ours - theirs)
    if gap > 0:
        return f"the model beats the baseline ({baseline['method']}) by {gap:.1f} points of test accuracy"
    if gap == 0:
        return f"the model only ties with the baseline ({baseline['method']}) on test accuracy"
    return (f"the model LOSES to the baseline ({baseline['method']}) by {-gap:.1f} points of test accuracy: "
            "more data, more epochs or another recipe is needed before it is worth using")
