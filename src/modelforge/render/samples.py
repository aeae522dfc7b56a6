"""Helpers for ``Task.report_samples``: which held-out items to show, and the HTML table they are shown in.

Pure rendering and index arithmetic (no training, artifacts or data loading), so a task may import this module
inside its ``report_samples`` without pulling the report's machinery into the task layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from modelforge.render.html import escape, format_value


def held_out(splits: Any) -> tuple[str, Any] | tuple[None, None]:
    """The split samples are drawn from: test, else validation; ``(None, None)`` when the run has neither."""
    for name in ("test", "val"):
        dataset = getattr(splits, name, None)
        if dataset is not None and len(dataset) > 0:
            return name, dataset
    return None, None


def spread(total: int, count: int) -> list[int]:
    """Up to ``count`` indices evenly spaced over ``range(total)``: a sorted-by-label set still shows every label."""
    if total <= 0 or count <= 0:
        return []
    count = min(count, total)
    return sorted({round(i * (total - 1) / max(count - 1, 1)) for i in range(count)})


def snippet(text: str, limit: int = 200) -> str:
    """``text`` with its whitespace runs collapsed, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], correct: Sequence[bool] | None = None) -> str:
    """An escaped HTML table of sample predictions (text cells keep their line breaks); with ``correct``, each row
    is marked right (green) or wrong (red)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        mark = "" if correct is None else (" class=\"right\"" if correct[i] else " class=\"wrong\"")
        cells = "".join(f"<td>{escape(format_value(v))}</td>" for v in row)
        body.append(f"<tr{mark}>{cells}</tr>")
    return f"<table class=\"samples\"><tr>{head}</tr>{''.join(body)}</table>"
