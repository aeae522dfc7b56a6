"""Metrics shared by tasks (computed with scikit-learn) and the classifiers' shared output format."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    labels = list(range(num_classes))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def classifier_evaluation(batches: Iterable[tuple[Any, Any]], num_classes: int) -> dict[str, Any]:
    """Mean cross-entropy ``loss`` plus ``classification_metrics`` over ``(logits, labels)`` batches: the
    evaluation of every classifier task (each only says how its batches become logits). ``loss_se`` and
    ``accuracy_se`` are their standard errors over the rows: how far one evaluation's figure moves by chance
    (early stopping reads them so that a few dozen validation rows cannot stop a run on noise)."""
    import torch
    import torch.nn.functional as F

    losses, preds, targets = [], [], []
    for logits, labels in batches:
        logits = logits.float()
        losses.append(F.cross_entropy(logits, labels, reduction="none"))
        preds.append(logits.argmax(1))
        targets.append(labels)
    y_true, y_pred = torch.cat(targets).cpu().numpy(), torch.cat(preds).cpu().numpy()
    per_row = torch.cat(losses).double().cpu().numpy()
    metrics = classification_metrics(y_true, y_pred, num_classes)
    return {"loss": float(per_row.mean()), "loss_se": standard_error(per_row),
            **metrics, "accuracy_se": standard_error(y_true == y_pred)}


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of ``values`` (sample standard deviation / sqrt(n); 0 for fewer than 2 rows).
    For 0/1 values (correct or not) it is the binomial standard error of an accuracy, sqrt(p(1-p)/n) up to the
    n/(n-1) sample correction."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return 0.0
    return float(values.std(ddof=1) / np.sqrt(len(values)))


def ranked_labels(logits: Any, labels: list[str], top_k: int = 5) -> list[dict[str, Any]]:
    """Per row of class logits: ``{label, probability, top: [{label, probability}, …]}`` — what every classifier
    task returns from ``postprocess`` (and the server sends)."""
    probs = logits.float().softmax(-1)
    values, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    results = []
    for row_v, row_i in zip(values.tolist(), indices.tolist(), strict=True):
        top = [{"label": labels[i], "probability": round(p, 6)} for p, i in zip(row_v, row_i, strict=True)]
        results.append({"label": top[0]["label"], "probability": top[0]["probability"], "top": top})
    return results
