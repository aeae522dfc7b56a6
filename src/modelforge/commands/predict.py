"""``modelforge predict RUN INPUT...``: a run's predictions as JSON, with their pictures written as PNG files.

The task says which pictures a result has (``Task.prediction_pictures``: detection boxes or a segmentation overlay
drawn on the input, a reconstruction, a generated image); this module decides where they go: ``--output DIR``, else
beside the input file, else ``RUN/predictions/``. Each is ``<stem>.<tag>.png`` — the input file's stem, else the
input itself when it is a short plain word (a GAN's seed), else ``input-<index>`` — and the JSON holds its path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from modelforge.core.atomic import atomic_write_bytes


def _input_file(item: Any) -> Path | None:
    if isinstance(item, (str, Path)) and len(str(item)) < 4096 and Path(str(item)).is_file():
        return Path(str(item))
    return None


def picture_folder(item: Any, output_dir: str | Path | None, run_dir: Path | None) -> Path:
    """Where the pictures of ``item``'s prediction go."""
    source = _input_file(item)
    if output_dir:
        return Path(output_dir)
    if source is not None:
        return source.parent
    return run_dir / "predictions" if run_dir else Path("predictions")


def picture_stem(item: Any, index: int) -> str:
    """The file stem of ``item``'s pictures: the input file's stem, a short plain input itself, or input-<index>."""
    source = _input_file(item)
    if source is not None:
        return source.stem
    text = str(item).strip()
    return text if re.fullmatch(r"[A-Za-z0-9_-]{1,40}", text) else f"input-{index}"


def save_pictures(task: Any, item: Any, result: Any, output_dir: str | Path | None, index: int) -> Any:
    """Write ``result``'s pictures (as the task declares them) and return the result with their paths."""
    pictures = task.prediction_pictures(item, result)
    if not pictures:
        return result
    run_dir = task.artifact_dir.parent if task.artifact_dir else None
    folder = picture_folder(item, output_dir, run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = picture_stem(item, index)
    replaced = {picture.replaces for picture in pictures}
    saved = {key: value for key, value in result.items() if key not in replaced}
    for picture in pictures:
        target = folder / f"{stem}.{picture.tag}.png"
        atomic_write_bytes(target, picture.png)
        saved[picture.field] = str(target)
    return saved


def predict(run: str, inputs: list[str], output_dir: str | None,
            options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The JSON ``modelforge predict`` prints: one object per input, pictures saved as files; ``options``: the
    task's per-call options (``--labels`` → ``labels``), refused by a task that does not declare them."""
    from modelforge.api import load

    predictor = load(run)
    results = predictor.predict(list(inputs), **(options or {}))
    results = [save_pictures(predictor.task, i, r, output_dir, n) for n, (i, r) in enumerate(zip(inputs, results))]
    return [{"input": i, **r} if isinstance(r, dict) else {"input": i, "output": r} for i, r in zip(inputs, results)]
