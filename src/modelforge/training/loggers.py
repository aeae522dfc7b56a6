"""Where training talks: ``metrics.jsonl`` (one JSON record per log/eval event) and the console progress display."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from modelforge.core.atomic import atomic_write_text


class MetricsLog:
    """Append-only JSON-lines log, flushed per record so a killed run keeps everything logged before it died."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled  # only rank 0 writes under torchrun; the folder appears with the first record

    def truncate_after(self, step: int) -> None:
        """On resume, drop records written after the checkpoint we restart from (they will be written again)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(clean) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def format_metrics(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))


class Progress:
    """A rich progress bar with loss, throughput and ETA on a terminal; one plain line per epoch otherwise."""

    def __init__(self, mode: str, total_steps: int):
        self.total = total_steps
        stream_is_tty = sys.stderr.isatty()
        self.rich = mode == "on" or (mode == "auto" and stream_is_tty)
        self.quiet = mode == "off"
        self._bar = None
        self._last = 0.0
        if self.rich:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                transient=False,
            )
            self._task = self._bar.add_task("train", total=total_steps, info="")
            self._bar.start()

    def update(self, step: int, epoch: int, info: dict[str, float], force: bool = False) -> None:
        if self._bar is None:
            return
        now = time.monotonic()
        if force or now - self._last > 0.2:  # redrawing every step would cost more than a small model's step
            self._last = now
            self._bar.update(self._task, completed=step, description=f"epoch {epoch + 1}", info=format_metrics(info))

    def epoch_end(self, epoch: int, step: int, metrics: dict[str, Any]) -> None:
        line = f"epoch {epoch + 1} step {step}/{self.total} {format_metrics(metrics)}"
        if self._bar is not None:
            self._bar.console.print(line)
        elif not self.quiet:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
