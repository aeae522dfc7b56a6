"""Run reports: ``write_report(run_dir)`` → a self-contained ``report.html``; ``compare_runs`` → table + overlay plot.

A report is built only from what the run directory holds (recipe.yaml, metrics.jsonl, results.json, model/), so it
can be written at the end of training or any time later. Parts that cannot be made (no model yet, data no longer
available) become a one-line note in the report instead of failing it.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelforge.core.atomic import atomic_write_bytes, atomic_write_text
from modelforge.core.errors import ArtifactError, ModelforgeError
from modelforge.render import html, plots

__all__ = ["RunRecord", "Comparison", "read_run", "write_report", "compare_runs"]


@dataclass
class RunRecord:
    directory: Path
    recipe_text: str = ""
    recipe: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.directory.name

    @property
    def summary(self) -> dict[str, Any]:
        return self.results.get("summary", {})

    def final_metrics(self) -> dict[str, float]:
        """The saved model's figures: scalar test metrics from results.json, then its validation metrics — those of
        the evaluation whose weights early stopping restored (``restore_best``), else the last logged ones."""
        scalars = {k: v for k, v in self.results.get("metrics", {}).items() if _is_number(v)}
        restored = self.summary.get("restored_best")
        records = [{**restored, "event": "eval"}] if isinstance(restored, dict) else reversed(self.records)
        for record in records:
            if record.get("event") == "eval":
                for key, value in record.items():
                    if key.startswith("val_") and _is_number(value):
                        scalars.setdefault(key, value)
        return scalars


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_run(path: str | Path) -> RunRecord:
    import yaml

    from modelforge.training.loggers import read_metrics

    directory = Path(path)
    if directory.name == "model" and (directory / "config.json").exists():
        directory = directory.parent
    if not any((directory / name).exists() for name in ("recipe.yaml", "metrics.jsonl", "results.json")):
        raise ArtifactError(f"{directory} is not a run directory (no recipe.yaml, metrics.jsonl or results.json)")
    run = RunRecord(directory)
    try:
        if (directory / "recipe.yaml").exists():
            run.recipe_text = (directory / "recipe.yaml").read_text(encoding="utf-8")
            run.recipe = yaml.safe_load(run.recipe_text) or {}
        if (directory / "results.json").exists():
            run.results = json.loads((directory / "results.json").read_text(encoding="utf-8"))
        run.records = read_metrics(directory / "metrics.jsonl")
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise ArtifactError(f"{directory}: cannot read the run's files ({exc.__class__.__name__}: {exc})") from None
    return run


# ---- the report -------------------------------------------------------------------------------------------------
def write_report(run_dir: str | Path, output: str | Path | None = None, samples: int = 12,
                 splits: Any = None) -> Path:
    """Write ``report.html`` (and the figures as ``plots/*.png``) into the run directory; returns its path.

    ``splits`` (the ``Splits`` training already has) spares reloading the data for the sample predictions.
    """
    run = read_run(run_dir)
    figures: dict[str, bytes] = {}
    sections = [html.Section("Overview", html.key_value_table(_overview(run)))]
    metrics = run.final_metrics()
    sections.append(html.Section("Final metrics", html.key_value_table(sorted(metrics.items()))))
    baseline = run.summary.get("baseline")
    if isinstance(baseline, dict) and "verdict" in baseline:  # the classical baseline on the same test split
        compared = baseline.get("compared") or ["test_accuracy", "test_macro_f1"]
        rows = [row for name in compared
                for row in ((f"model {name}", metrics.get(name)), (f"baseline {name}", baseline.get(name)))]
        rows += [("baseline", baseline.get("method")), ("baseline C", baseline.get("C")),
                 ("baseline training rows", baseline.get("train_rows"))]
        if "test_rows" in baseline:  # fewer than the model's when a split read from disk is over MAX_TRAIN rows
            rows.append(("baseline test rows", baseline["test_rows"]))
        body = html.paragraph(baseline["verdict"]) + html.key_value_table(rows)
        sections.append(html.Section("Baseline", body))
    data = run.summary.get("data") or {}
    sections.append(html.Section("Data", html.key_value_table(data.items())))

    curves = plots.training_curves(run.records)
    figures.update(curves)
    body = "".join(html.image(png, title) for title, png in curves.items())
    sections.append(html.Section("Training curves", body or html.paragraph("metrics.jsonl holds no curves yet")))

    labels = _labels(run.directory)
    for key, matrix in run.results.get("metrics", {}).items():
        if key.endswith("confusion_matrix") and isinstance(matrix, list) and matrix:
            figures[key] = plots.confusion_matrix(matrix, labels)
            sections.append(html.Section(key.replace("_", " ").capitalize(), html.image(figures[key], key)))

    view = _sample_predictions(run.directory, samples, splits)
    parts = []
    if view.png is not None:
        figures["sample predictions"] = view.png
        parts.append(html.image(view.png, "sample predictions"))
    if view.html:
        parts.append(view.html)
    if view.note or not parts:
        parts.append(html.paragraph(view.note or "no sample predictions"))
    sections.append(html.Section("Sample predictions", "".join(parts)))
    from modelforge.explain.gallery import gallery_html  # the recipe's explain: gallery, when the run has one

    explanations = gallery_html(run.directory)
    if explanations is not None:
        sections.append(html.Section("Explanations", explanations))
    sections.append(html.Section("Recipe", html.preformatted(run.recipe_text or "(recipe.yaml missing)")))

    title = f"{run.recipe.get('name', run.name)} — run report"
    subtitle = f"{run.directory} · written {_dt.datetime.now().isoformat(timespec='seconds')}"
    target = Path(output) if output else run.directory / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, html.page(title, subtitle, sections))
    for name, png in figures.items():
        atomic_write_bytes(run.directory / "plots" / f"{_slug(name)}.png", png)
    return target


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _overview(run: RunRecord) -> list[tuple[str, Any]]:
    recipe = run.recipe
    rows: list[tuple[str, Any]] = [
        ("recipe", recipe.get("name", "?")),
        ("description", recipe.get("description", "")),
        ("task", recipe.get("task", "?")),
        ("model", (recipe.get("model") or {}).get("name", "?")),
    ]
    rows += [(k, v) for k, v in run.summary.items() if k != "data" and not isinstance(v, (dict, list))]
    restored = run.summary.get("restored_best")
    if isinstance(restored, dict):
        rows.append(("saved weights", f"restored best: step {restored.get('step')} (epoch {restored.get('epoch')})"))
    dp = run.summary.get("privacy")
    if isinstance(dp, dict) and "epsilon" in dp:  # DP-SGD runs state their guarantee up front
        rows.append(("privacy (DP-SGD)", f"ε = {dp['epsilon']:.3f}, δ = {dp.get('delta')}, noise σ = "
                                         f"{dp.get('noise_multiplier', 0):.3f}, clip C = {dp.get('max_grad_norm')}, "
                                         f"{dp.get('steps')} steps ({dp.get('accountant')} accountant)"))
    if not run.results:
        rows.append(("status", "results.json missing: the run has not finished"))
    return rows


def _labels(directory: Path) -> list[str] | None:
    try:
        state = json.loads((directory / "model" / "task.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    labels = state.get("labels")
    return [str(label) for label in labels] if isinstance(labels, list) else None


def _sample_predictions(directory: Path, count: int, splits: Any) -> Any:
    """The task's own sample view (``Task.report_samples``: an image grid, a table of texts, transcripts …) on
    held-out data, or a ``ReportSamples`` whose note says why there is none."""
    import torch

    from modelforge.artifacts.model_dir import load_artifact
    from modelforge.tasks.base import ReportSamples, Task

    if count <= 0:
        return ReportSamples(note="sample predictions were not asked for")
    try:
        loaded = load_artifact(directory)
    except ArtifactError as exc:
        return ReportSamples(note=f"no model to predict with: {exc}")
    task = loaded.task
    if type(task).report_samples is Task.report_samples:  # checked before loading any data
        return ReportSamples(note=f"no sample view for task {loaded.recipe.task!r} yet")
    try:
        splits = splits if splits is not None else task.datasets()
    except ModelforgeError as exc:
        return ReportSamples(note=f"the recipe's data is not available here ({exc})")
    try:
        with torch.no_grad():
            view = task.report_samples(loaded.model.eval(), splits, count)
    except Exception as exc:  # noqa: BLE001 - the rest of the report is still worth writing
        warnings.warn(f"{directory}: the sample predictions failed ({exc.__class__.__name__}: {exc})", stacklevel=2)
        return ReportSamples(note=f"the sample predictions could not be made ({exc.__class__.__name__}: {exc})")
    return view if view is not None else ReportSamples(note=f"no sample view for task {loaded.recipe.task!r}")


# ---- comparison -----------------------------------------------------------------------------------------------
@dataclass
class Comparison:
    columns: list[str]
    rows: list[list[Any]]
    plot: Path

    def table(self) -> str:
        cells = [self.columns] + [[html.format_value(v) if v is not None else "-" for v in row] for row in self.rows]
        widths = [max(len(str(row[i])) for row in cells) for i in range(len(self.columns))]
        lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def compare_runs(run_dirs: Sequence[str | Path], output: str | Path | None = None,
                 metric: str | None = None) -> Comparison:
    """Final metrics of several runs as one table, and their curves overlaid in one PNG (``compare.png``)."""
    runs = [read_run(path) for path in run_dirs]
    if len(runs) < 1:
        raise ArtifactError("give at least one run directory to compare")
    names = [run.name for run in runs]
    if len(set(names)) < len(names):
        names = [str(run.directory) for run in runs]
    finals = [run.final_metrics() for run in runs]
    keys = sorted({k for f in finals for k in f}, key=lambda k: (not k.startswith("test_"), k))
    columns = ["run", "recipe", "steps", *keys]
    rows = [[name, run.recipe.get("name", "?"), run.summary.get("steps"), *[f.get(k) for k in keys]]
            for name, run, f in zip(names, runs, finals)]
    target = Path(output) if output else Path("compare.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, plots.overlay_curves(dict(zip(names, (r.records for r in runs))), metric))
    return Comparison(columns, rows, target)
