"""The explanation gallery of a run: ``RUN/explanations/`` written after training when the recipe has ``explain:``.

Held-out samples (evenly spread over the test split, else validation) are explained with the recipe's method and
written as pictures (image overlays, spectrogram overlays, a Transformer's attention grid for the first samples),
HTML token snippets for text, the raw attributions as ``.npy``, and ``index.json`` describing every item. The whole
folder is swapped in atomically; ``report.html`` embeds it (see ``read_gallery``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelforge.core.atomic import atomic_directory
from modelforge.core.errors import ArtifactError, ConfigError

GALLERY_DIR = "explanations"
INDEX = "index.json"
ATTENTION_SAMPLES = 2  # attention grids are large: only for the first samples


def sample_batch(task: Any, dataset: Any, count: int) -> tuple[Any, list[str]]:
    """``count`` items spread over ``dataset`` as a preprocessed batch, and their true labels."""
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).astype(int))
    items = [dataset[int(i)] for i in picks]
    labels = [str(label) for label in task.state()["labels"]]
    truths = [labels[int(item[-1])] for item in items]
    if task.explain_kind == "text":  # (ids padded to the split's longest, length, label)
        return (torch.stack([item[0] for item in items]), torch.stack([item[1] for item in items])), truths
    if task.explain_kind == "image":
        return task.preprocess([np.asarray(item[0], dtype=np.uint8) for item in items]), truths
    return task.preprocess([item[0] for item in items]), truths  # audio: float waveforms


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float32))
    return buffer.getvalue()


def write_gallery(run_dir: Path, task: Any, model: nn.Module, splits: Any, cfg: Any) -> Path:
    """Explain ``cfg.samples`` held-out inputs with ``cfg.method`` into ``run_dir/explanations``; returns the
    folder. ``cfg`` is the recipe's ``ExplainConfig``."""
    from modelforge.explain import explain_batch

    dataset = splits.test if splits.test is not None else splits.val
    if dataset is None or len(dataset) == 0:
        raise ConfigError("explain: the recipe has no test or validation split to draw gallery samples from")
    batch, truths = sample_batch(task, dataset, cfg.samples)
    found = explain_batch(task, model, batch, cfg.method, cfg.target, baseline=cfg.baseline, steps=cfg.steps)
    target = Path(run_dir) / GALLERY_DIR
    items = []
    with atomic_directory(target) as tmp:
        for i, (item, truth) in enumerate(zip(found, truths)):
            stem = f"{i:02d}"
            entry: dict[str, Any] = {"index": i, "true": truth, "label": item.label,
                                     "probability": round(item.probability, 4), "target": item.target,
                                     "attributions": f"{stem}.npy"}
            (tmp / f"{stem}.npy").write_bytes(_npy(item.attributions))
            if item.convergence_delta is not None:
                entry["convergence_delta"] = item.convergence_delta
            png = item.png()
            if png is not None:
                (tmp / f"{stem}.png").write_bytes(png)
                entry["png"] = f"{stem}.png"
            snippet = item.html()
            if snippet is not None:
                (tmp / f"{stem}.html").write_text(snippet, encoding="utf-8")
                entry["html"] = f"{stem}.html"
            if item.attention is not None and i < ATTENTION_SAMPLES:
                (tmp / f"{stem}-attention.png").write_bytes(item.attention_png() or b"")
                entry["attention_png"] = f"{stem}-attention.png"
            items.append(entry)
        kind = found[0].kind if found else ""
        if kind == "image":
            from modelforge.explain.render import image_panel_png

            titles = [f"{item.label} (true {truth})" for item, truth in zip(found, truths)]
            (tmp / "gallery.png").write_bytes(
                image_panel_png([f.view for f in found], [f.heatmap for f in found], titles))
        index = {"task": task.name, "kind": kind, "method": cfg.method, "baseline": cfg.baseline,
                 "steps": cfg.steps, "target": cfg.target, "items": items,
                 "figure": "gallery.png" if kind == "image" else None}
        (tmp / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return target


def read_gallery(run_dir: Path) -> dict[str, Any] | None:
    """``index.json`` of a run's gallery, or None when the run has none."""
    file = Path(run_dir) / GALLERY_DIR / INDEX
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{file}: cannot read the explanation gallery ({exc})") from None


def _img(png: bytes, alt: str) -> str:
    import base64
    import html

    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"></figure>'


def gallery_html(run_dir: Path) -> str | None:
    """The gallery as an HTML fragment for ``report.html`` (pictures embedded), or None when the run has none."""
    import html

    try:
        index = read_gallery(run_dir)
    except ArtifactError as exc:  # a damaged gallery becomes a note; the rest of the report is still worth having
        return f'<p class="muted">{html.escape(str(exc))}</p>'
    if index is None:
        return None
    folder = Path(run_dir) / GALLERY_DIR

    def read(name: str | None) -> bytes | None:
        path = folder / name if name else None
        return path.read_bytes() if path is not None and path.is_file() else None

    target = index.get("target") or "the predicted label"
    parts = [f'<p class="muted">{html.escape(str(index.get("method")))} attributions for {html.escape(str(target))}'
             f' (baseline {html.escape(str(index.get("baseline")))}); red = evidence for, blue = against. '
             f"Files: {html.escape(str(folder))}</p>"]
    figure = read(index.get("figure"))
    if figure is not None:
        parts.append(_img(figure, "explanation gallery"))
    rows = []
    for item in index.get("items", []):
        delta = item.get("convergence_delta")
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            item.get("index"), item.get("true"), item.get("label"), item.get("probability"), item.get("target"),
            "" if delta is None else f"{delta:+.2e}")) + "</tr>")
        if figure is None and (png := read(item.get("png"))) is not None:
            parts.append(_img(png, f"explanation {item.get('index')}"))
        snippet = read(item.get("html"))
        if snippet is not None:
            parts.append(snippet.decode("utf-8"))
        attention = read(item.get("attention_png"))
        if attention is not None:
            parts.append(_img(attention, f"attention maps {item.get('index')}"))
    head = "".join(f"<th>{h}</th>" for h in ("#", "true", "predicted", "p", "explained", "IG delta"))
    parts.append(f"<table><tr>{head}</tr>{''.join(rows)}</table>")
    return "".join(parts)
