"""Matplotlib figures for run reports, returned as PNG bytes.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas directly, not through ``pyplot``, so making
a report never changes the process's global backend and never opens a window (training may run headless).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

CURVE_DPI = 110


def _figure(width: float = 6.4, height: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=CURVE_DPI)
    return buffer.getvalue()


def series(records: Sequence[dict[str, Any]], event: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` over the records of one event type, skipping missing and non-finite values."""
    steps, values = [], []
    for record in records:
        value = record.get(key)
        if record.get("event") == event and isinstance(value, (int, float)) and np.isfinite(value):
            steps.append(int(record.get("step", len(steps))))
            values.append(float(value))
    return steps, values


def eval_metric_names(records: Sequence[dict[str, Any]]) -> list[str]:
    """Numeric ``val_*`` keys logged at evaluations, in first-seen order."""
    names: dict[str, None] = {}
    for record in records:
        if record.get("event") == "eval":
            for key, value in record.items():
                if key.startswith("val_") and isinstance(value, (int, float)):
                    names.setdefault(key)
    return list(names)


def training_curves(records: Sequence[dict[str, Any]]) -> dict[str, bytes]:
    """Loss (train and validation), the other validation metrics, and the learning rate, each a PNG when logged."""
    figures: dict[str, bytes] = {}
    lines = [("train loss", *series(records, "train", "loss")), ("val loss", *series(records, "eval", "val_loss"))]
    if any(steps for _, steps, _ in lines):
        figures["loss"] = _line_plot("Loss", lines, "loss")
    others = [name for name in eval_metric_names(records) if name != "val_loss"]
    if others:
        metric_lines = [(name, *series(records, "eval", name)) for name in others]
        figures["validation metrics"] = _line_plot("Validation metrics", metric_lines, "value")
    lr = series(records, "train", "lr")
    if lr[0]:
        figures["learning rate"] = _line_plot("Learning rate", [("lr", *lr)], "lr")
    return figures


def _line_plot(title: str, lines: Sequence[tuple[str, list[int], list[float]]], ylabel: str) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    for label, steps, values in lines:
        if steps:
            # single points (one evaluation) get a marker so they are visible at all
            ax.plot(steps, values, label=label, marker="o" if len(steps) < 30 else None, markersize=3)
    ax.set(title=title, xlabel="optimiser step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    return to_png(fig)


def confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str] | None = None) -> bytes:
    """Counts with true labels on rows; annotated when there are few enough classes to read them."""
    counts = np.asarray(matrix)
    n = counts.shape[0]
    labels = list(labels) if labels and len(labels) == n else [str(i) for i in range(n)]
    side = min(9.0, 3.0 + 0.35 * n)
    fig = _figure(side + 1, side)
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ticks = np.arange(n)
    show = labels if n <= 40 else [""] * n
    ax.set_xticks(ticks, show, rotation=90 if max(map(len, show), default=0) > 3 else 0)
    ax.set_yticks(ticks, show)
    ax.set(title="Confusion matrix (test)", xlabel="predicted", ylabel="true")
    if n <= 20:
        threshold = counts.max() / 2 if counts.size else 0
        for (i, j), value in np.ndenumerate(counts):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                    color="white" if value > threshold else "black")
    return to_png(fig)


def image_grid(images: np.ndarray, titles: Sequence[str], correct: Sequence[bool], columns: int = 6) -> bytes:
    """(N, C, H, W) uint8 images with a title each, green when the prediction is right and red when wrong."""
    count = len(images)
    rows = max(1, -(-count // columns))
    fig = _figure(1.6 * columns, 1.8 * rows)
    for i, (image, title, ok) in enumerate(zip(images, titles, correct)):
        ax = fig.add_subplot(rows, columns, i + 1)
        picture = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        ax.imshow(picture, cmap="gray" if image.shape[0] == 1 else None, vmin=0, vmax=255)
        ax.set_title(title, fontsize=9, color="tab:green" if ok else "tab:red")
        ax.axis("off")
    return to_png(fig)


def overlay_curves(runs: dict[str, Sequence[dict[str, Any]]], metric: str | None = None) -> bytes:
    """Training loss of every run side by side with one validation metric (``metric`` or the first logged)."""
    if metric is None:
        names = [name for records in runs.values() for name in eval_metric_names(records) if name != "val_loss"]
        metric = names[0] if names else "val_loss"
    fig = _figure(11, 4)
    loss_ax, metric_ax = fig.subplots(1, 2)
    for name, records in runs.items():
        steps, values = series(records, "train", "loss")
        if steps:
            loss_ax.plot(steps, values, label=name)
        steps, values = series(records, "eval", metric)
        if steps:
            metric_ax.plot(steps, values, label=name, marker="o" if len(steps) < 30 else None, markersize=3)
    loss_ax.set(title="Training loss", xlabel="optimiser step", ylabel="loss")
    metric_ax.set(title=metric, xlabel="optimiser step", ylabel=metric)
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    return to_png(fig)
