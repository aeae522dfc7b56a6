"""Dice and IoU per class from a pixel confusion matrix accumulated over a whole split.

Scores are "global": the true/false positive pixel counts of every image are summed before dividing (as the
Cityscapes and most medical benchmarks do), so a small object in one image weighs as much as its pixel count.
For class k with TP = C[k, k], FP = Σ C[:, k] − TP, FN = Σ C[k, :] − TP (rows: truth, columns: prediction):
IoU = TP / (TP + FP + FN) and Dice = 2·TP / (2·TP + FP + FN). A class absent from both truth and prediction has no
score (NaN) and is left out of the means.
"""

from __future__ import annotations

import re

import numpy as np
import torch


def confusion_matrix(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray,
                     num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 pixel counts; rows are true classes, columns predicted ones."""
    pred_np = np.asarray(pred.cpu() if isinstance(pred, torch.Tensor) else pred).astype(np.int64).ravel()
    true_np = np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target).astype(np.int64).ravel()
    if pred_np.shape != true_np.shape:
        raise ValueError(f"prediction has {pred_np.size} pixels but the target has {true_np.size}")
    if true_np.size and (min(pred_np.min(), true_np.min()) < 0 or max(pred_np.max(), true_np.max()) >= num_classes):
        raise ValueError(f"class indices must lie in 0..{num_classes - 1}")
    return np.bincount(true_np * num_classes + pred_np, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_scores(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(IoU, Dice) per class as float arrays; NaN for a class absent from both truth and prediction."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    fp, fn = confusion.sum(axis=0) - tp, confusion.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    return iou, dice


def segmentation_scores(confusion: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """``dice`` (mean over the non-background classes, class 0 being background), ``miou`` (mean IoU over all
    classes), ``pixel_accuracy``, and ``dice_<class>`` / ``iou_<class>`` for each class that has a score."""
    iou, dice = per_class_scores(confusion)
    total = confusion.sum()
    scores = {
        "dice": float(np.nanmean(dice[1:])) if np.isfinite(dice[1:]).any() else float("nan"),
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "pixel_accuracy": float(np.trace(confusion) / total) if total else float("nan"),
    }
    for name, class_iou, class_dice in zip(class_names, iou, dice, strict=True):
        key = re.sub(r"\W+", "_", name).strip("_") or "class"
        if np.isfinite(class_iou):
            scores[f"iou_{key}"] = float(class_iou)
            scores[f"dice_{key}"] = float(class_dice)
    return scores
