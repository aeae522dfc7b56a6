"""Metrics shared by tasks (computed with scikit-learn), the classifiers' shared evaluation (gathered over the ranks
of a sharded evaluation) and their shared output format."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
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


@dataclass
class RankGather:
    """An open ``gathering_ranks()``: ``gathers`` counts the evaluations inside it that gathered the ranks' rows."""

    gathers: int = 0


_gathering: ContextVar[RankGather | None] = ContextVar("modelforge_gathering_ranks", default=None)


@contextlib.contextmanager
def gathering_ranks() -> Iterator[RankGather]:
    """Within it, an evaluation treats its batches as this process's share of a split sharded over the ranks of the
    initialised process group: it gathers every rank's rows (``across_ranks``, in rank order; ``classifier_evaluation``
    does so for the classifiers) before computing any metric, so every rank returns the figures of the whole split.
    Every rank must evaluate inside it, each its contiguous share, the shares in rank order making up the split (an
    empty share still takes part). Outside it, or without a process group of more than one process, an evaluation
    covers exactly the batches it was given. The Trainer opens it when it shards
    an evaluation (``Task.evaluation_gathers_ranks``); an evaluation called elsewhere is never gathered."""
    gather = RankGather()
    token = _gathering.set(gather)
    try:
        yield gather
    finally:
        _gathering.reset(token)


def classifier_evaluation(batches: Iterable[tuple[Any, Any]], num_classes: int) -> dict[str, Any]:
    """Mean cross-entropy ``loss`` plus ``classification_metrics`` over ``(logits, labels)`` batches: the
    evaluation of every classifier task (each only says how its batches become logits). ``loss_se`` and
    ``accuracy_se`` are their standard errors over the rows: how far one evaluation's figure moves by chance
    (early stopping reads them so that a few dozen validation rows cannot stop a run on noise). Inside
    ``gathering_ranks()`` the rows of every rank are gathered first (see there)."""
    per_row, y_true, y_pred = across_ranks(*_classifier_rows(batches))
    if len(y_true) == 0:
        raise ValueError("classifier_evaluation: the evaluated split has no rows")
    metrics = classification_metrics(y_true, y_pred, num_classes)
    return {"loss": float(per_row.mean()), "loss_se": standard_error(per_row),
            **metrics, "accuracy_se": standard_error(y_true == y_pred)}


def _classifier_rows(batches: Iterable[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(per-row cross-entropy as float64, true labels, predicted labels) of ``batches``; empty arrays for none."""
    import torch
    import torch.nn.functional as F

    losses, preds, targets = [], [], []
    for logits, labels in batches:
        logits = logits.float()
        losses.append(F.cross_entropy(logits, labels, reduction="none"))
        preds.append(logits.argmax(1))
        targets.append(labels)
    if not targets:  # an empty share of a sharded split: it still takes part in the gather
        return np.empty(0, np.float64), np.empty(0, np.int64), np.empty(0, np.int64)
    per_row = torch.cat(losses).double().cpu().numpy()
    return per_row, torch.cat(targets).cpu().numpy(), torch.cat(preds).cpu().numpy()


def across_ranks(*parts: Any) -> tuple[Any, ...]:
    """Each of ``parts`` joined over every rank in rank order inside ``gathering_ranks()`` under a process group of
    more than one process: numpy arrays are concatenated (along the first axis), lists chained. Otherwise ``parts``
    themselves. A collective: every rank calls it, once per evaluation, with parts of the same kinds (a rank with an
    empty share passes empty arrays/lists). Sums travel as one-row arrays and are added up after the call."""
    import torch.distributed as dist

    gather = _gathering.get()
    if gather is None or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return parts
    shares: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(shares, parts)
    gather.gathers += 1
    return tuple(_joined([share[i] for share in shares]) for i in range(len(parts)))


def summed_in_order(values: Iterable[float]) -> float:
    """``values`` added one after another from 0.0, as a running float total over the batches adds them. An
    evaluation that gathers one sum per batch (``across_ranks``) and adds them with this gets the very float one
    process adding batch after batch gets (``np.sum`` adds pairwise: its last bits differ)."""
    total = 0.0
    for value in values:
        total += float(value)
    return total


def _joined(pieces: list[Any]) -> Any:
    if isinstance(pieces[0], np.ndarray):
        return np.concatenate(pieces)
    if isinstance(pieces[0], list):
        return [item for piece in pieces for item in piece]
    raise TypeError(f"across_ranks joins numpy arrays and lists, not {type(pieces[0]).__name__}")


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
