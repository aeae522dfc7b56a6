"""A classical baseline beside every classification and captioning run, on the model's own train/val/test split.

A task declares ``baseline = "text" | "pixels" | "audio" | "nearest_caption"``. For the classifiers this module
turns the split's inputs into features —
TF-IDF of the raw texts (``Task.baseline_texts``), the pixels, or MFCC means and standard deviations of the
utterances — fits a logistic regression on the training split (its ``C`` picked on the validation split when there
is one) and scores the test split. The run then says in words whether the network beat it: a model that loses to
TF-IDF + logistic regression is not worth deploying, however good its own figures look.

``nearest_caption`` (image captioning) answers each test image with the first caption of the training image nearest
to it in pixels (Euclidean distance of the resized images) and scores those captions with the task's own
``caption_metrics`` (BLEU-4, CIDEr): a captioner that cannot beat copying a similar picture's caption has learnt
nothing compositional. Each baseline result names the metrics it is compared on (``compared``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelforge.tasks.metrics import classification_metrics

METHODS = {
    "text": "TF-IDF (words 1-2 grams) + logistic regression",
    "pixels": "logistic regression on pixels",
    "audio": "logistic regression on MFCC means",
    "nearest_caption": "caption of the nearest training image by pixel distance",
}
GRID = (0.01, 0.1, 1.0, 10.0, 100.0)  # C values tried on the validation split
MAX_TRAIN = 20_000  # rows the baseline fits on at most (an evenly spaced subset): seconds, not minutes
NEAREST_CHUNK_BYTES = 256 * 2**20  # training pixels (as floats) nearest_caption compares at once: 3,000 64² scenes
NEAREST_QUERIES = 2048  # test images nearest_caption holds at once (each pass decodes the candidates again)
PIXEL_VALUES = 200_000_000  # pixel values per split the pixel baseline holds as floats at most (800 MB)
MIN_PIXEL_ROWS = 500  # however large the pictures, the pixel baseline fits on at least this many rows


def baseline_rows(count: int, at_most: int | None = None) -> np.ndarray:
    """The rows of a split of ``count`` the baseline reads when the split is read from disk: at most ``at_most``
    (default MAX_TRAIN; fewer for large pictures), evenly spaced. A task that keeps raw inputs only for the baseline
    (the text classifier's texts) keeps these."""
    return _evenly_spaced(count, MAX_TRAIN if at_most is None else at_most)


def _labels(dataset: Any) -> np.ndarray:
    if hasattr(dataset, "tensors"):
        return dataset.tensors[-1].numpy()
    if hasattr(dataset.targets, "numpy"):  # a label tensor (the text classifier's token rows)
        return dataset.targets.numpy()
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
    return dataset.subset(baseline_rows(len(dataset), rows))


def nearest_caption(task: Any, splits: Any) -> dict[str, Any]:
    """The nearest-neighbour caption baseline: each test image gets the first caption of the training image with the
    smallest pixel distance; scored by ``task.caption_metrics(references, outputs)``. Both splits are read through
    ``pixels(indices)`` a chunk at a time (a split read from disk is never decoded whole); the candidates are at most
    MAX_TRAIN evenly spaced training images, each decoded once per NEAREST_QUERIES test images."""
    train, test = splits.train, splits.test
    candidates = _evenly_spaced(len(train.captions), MAX_TRAIN)
    rows = max(1, NEAREST_CHUNK_BYTES // (4 * train.pixels([0])[0].numel()))
    picks: list[int] = []
    for start in range(0, len(test.captions), NEAREST_QUERIES):
        chunk = _unit_rows(test.pixels(range(start, min(start + NEAREST_QUERIES, len(test.captions)))))
        picks += candidates[_nearest(chunk, train, candidates, rows)].tolist()
    outputs = [train.captions[j][0] for j in picks]
    scores = task.caption_metrics(test.captions, outputs)
    return {"method": METHODS["nearest_caption"], "train_rows": len(candidates),
            **{f"test_{name}": value for name, value in scores.items()},
            "compared": [f"test_{name}" for name in ("cider", "bleu4") if name in scores]}


def _evenly_spaced(n: int, at_most: int) -> np.ndarray:
    return np.linspace(0, n - 1, min(n, at_most)).round().astype(int) if n else np.zeros(0, dtype=int)


def _unit_rows(images: Any) -> Any:
    return images.flatten(1).float() / 255


def _nearest(queries: Any, train: Any, candidates: np.ndarray, rows: int) -> np.ndarray:
    """Position in ``candidates`` of the training image nearest each query row, over chunks of ``rows`` candidates
    (the first of equally near ones, as one argmin over all of them would pick)."""
    import torch

    best = torch.full((len(queries),), float("inf"))
    found = torch.zeros(len(queries), dtype=torch.long)
    for start in range(0, len(candidates), rows):
        pixels = train.pixels(candidates[start:start + rows].tolist())
        distances = torch.cdist(queries, _unit_rows(pixels))
        index = distances.argmin(dim=1)
        value = distances.gather(1, index[:, None])[:, 0]
        closer = value < best
        best, found = torch.where(closer, value, best), torch.where(closer, index + start, found)
    return found.numpy()


def _rows_for(kind: str, dataset: Any) -> int:
    """How many rows of a split read from disk the baseline decodes: MAX_TRAIN, fewer for large pictures so their
    float features stay within PIXEL_VALUES (20,000 rows of 224² RGB would be 12 GB)."""
    if kind != "pixels" or hasattr(dataset, "tensors") or not len(dataset):
        return MAX_TRAIN
    shape = (getattr(dataset, "channels", None), getattr(dataset, "size", None))
    per_row = shape[0] * shape[1] ** 2 if None not in shape else dataset[0][0].numel()  # no decode when declared
    return min(MAX_TRAIN, max(MIN_PIXEL_ROWS, PIXEL_VALUES // per_row))


def run_baseline(task: Any, splits: Any) -> dict[str, Any] | None:
    """The baseline's test metrics (``test_accuracy``, ``test_macro_f1``; captioning: ``test_cider``,
    ``test_bleu4``) and how it was made; None when the task declares no baseline or the run has no test split."""
    kind = getattr(task, "baseline", None)
    if kind is None or splits.test is None:
        return None
    if kind == "nearest_caption":
        return nearest_caption(task, splits)
    parts = {"train": splits.train, "test": splits.test, **({"val": splits.val} if splits.val is not None else {})}
    # a split read from disk (``subset``) is decoded for the baseline at most MAX_TRAIN evenly spaced rows (fewer
    # for large pictures)
    parts = {name: _at_most(dataset, _rows_for(kind, dataset)) for name, dataset in parts.items()}
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
    return {"method": METHODS[kind], "C": best_c, "train_rows": int(len(subset)), "test_rows": int(len(labels["test"])),
            "test_accuracy": metrics["accuracy"], "test_macro_f1": metrics["macro_f1"]}


def verdict(model_metrics: dict[str, Any], baseline: dict[str, Any]) -> str:
    """One sentence: did the model beat the baseline on test accuracy (or the first metric it names in
    ``compared``)?"""
    compared = baseline.get("compared")
    if compared:
        return _verdict_on(compared[0], model_metrics.get(compared[0]), baseline[compared[0]], baseline["method"])
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


def _verdict_on(metric: str, ours: Any, theirs: float, method: str) -> str:
    if not isinstance(ours, (int, float)):
        return f"the model has no {metric} to compare with the baseline"
    gap = ours - theirs
    if gap > 0:
        return f"the model beats the baseline ({method}) by {gap:.3g} {metric} ({ours:.3g} vs {theirs:.3g})"
    if gap == 0:
        return f"the model only ties with the baseline ({method}) on {metric}"
    return (f"the model LOSES to the baseline ({method}) by {-gap:.3g} {metric} ({ours:.3g} vs {theirs:.3g}): "
            "more data, more epochs or another recipe is needed before it is worth using")
