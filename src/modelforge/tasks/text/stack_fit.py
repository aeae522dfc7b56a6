"""Fitting the stack text classifier (models/text_stack.py) without gradient steps.

The module itself computes the features — its frozen embedding and its in-graph TF-IDF, with the ``idf`` fitted
first on the training split — so what logistic regression fits on is exactly what the served model computes. ``C``
is picked on the validation split from the run baseline's grid (tasks/baselines.py), the final regression is fitted
on the training split, and its coefficients are copied into the module's two heads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from modelforge.models.layers.masks import length_mask
from modelforge.models.text_stack import TextStackClassifier
from modelforge.tasks.baselines import GRID, _fit

BATCH = 64


def _batches(dataset: Any, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(input_ids, attention_mask) batches of a (ids, lengths, labels) split in order, each read with ``get_batch``
    and trimmed to its longest row."""
    for start in range(0, len(dataset), BATCH):
        ids, size = dataset.get_batch(range(start, min(start + BATCH, len(dataset))))[:2]
        longest = int(size.max())
        yield ids[:, :longest].to(device), length_mask(size, longest).to(device)


@torch.no_grad()
def stack_features(model: TextStackClassifier, dataset: Any) -> Any:
    """Rows of [embedding ; TF-IDF buckets] as a sparse matrix (duplicate positions of a bucket summed)."""
    from scipy.sparse import csr_matrix, hstack

    device = next(model.parameters()).device
    embeddings, data, cols, rows = [], [], [], []
    offset = 0
    for ids, mask in _batches(dataset, device):
        embeddings.append(model.embed(ids, mask).cpu().numpy())
        buckets, weights = model.tfidf(ids, mask)
        kept = weights.ne(0)
        row_index = torch.arange(len(ids), device=device).unsqueeze(1).expand_as(buckets)
        rows.append((row_index[kept] + offset).cpu().numpy())
        cols.append(buckets[kept].cpu().numpy())
        data.append(weights[kept].double().cpu().numpy())
        offset += len(ids)
    tfidf = csr_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(offset, model.tfidf.size))  # csr_matrix sums the duplicate (row, bucket) entries
    return hstack([csr_matrix(np.concatenate(embeddings).astype(np.float64)), tfidf]).tocsr()


def fit_stack(model: TextStackClassifier, splits: Any) -> dict[str, Any]:
    """Fit ``idf`` and both heads on ``splits`` (train; val picks C); returns what the fit chose."""
    device = next(model.parameters()).device
    model.eval()
    seen = model.tfidf.fit_idf(_batches(splits.train, device))  # batch by batch, never all at once
    x_train, y_train = stack_features(model, splits.train), splits.train.targets.numpy()
    scores: dict[float, float] = {}
    if splits.val is not None:
        x_val, y_val = stack_features(model, splits.val), splits.val.targets.numpy()
        scores = {c: float((_fit(x_train, y_train, c).predict(x_val) == y_val).mean()) for c in GRID}
    best = max(scores, key=lambda c: (scores[c], -abs(np.log10(c)))) if scores else 1.0  # ties: the C nearest 1
    _copy_head(model, _fit(x_train, y_train, best))
    picked = "picked on the validation split" if scores else "no validation split to pick it"
    how = f"stack (frozen encoder + TF-IDF) by logistic regression, C={best} ({picked})"
    return {"method": "stack", "how": how, "C": best, "val_accuracy_by_C": {str(c): s for c, s in scores.items()},
            "tfidf_buckets_seen": seen, "train_rows": len(y_train)}


@torch.no_grad()
def _copy_head(model: TextStackClassifier, regression: Any) -> None:
    """Logistic regression's coefficients into the module: rows of its classes, the embedding's columns into
    ``head`` and the TF-IDF buckets' into ``tfidf_head``. Two classes: scikit-learn keeps one row w (the logit of
    class 1); ±w/2 gives the same probabilities as a softmax. A class without training rows gets a very low logit."""
    coef, intercept = regression.coef_, regression.intercept_
    if len(regression.classes_) == 2:
        coef, intercept = np.stack([-coef[0] / 2, coef[0] / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    classes = model.head.out_features
    weights = np.zeros((classes, coef.shape[1]))
    bias = np.full(classes, -1e4)
    weights[regression.classes_], bias[regression.classes_] = coef, intercept
    dim = model.head.in_features
    dtype = model.head.weight.dtype
    model.head.weight.copy_(torch.as_tensor(weights[:, :dim], dtype=dtype))
    model.head.bias.copy_(torch.as_tensor(bias, dtype=dtype))
    model.tfidf_head.copy_(torch.as_tensor(weights[:, dim:].T, dtype=dtype))
