"""What a study leaves in its directory: ``trials.csv`` (also printed as a table), ``best.yaml`` (the best trial's
recipe, ready for ``modelforge train best.yaml``) and ``report.html`` with Optuna's optimisation-history,
parameter-importance and parallel-coordinate plots as static images (``plots/*.png``)."""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any

from modelforge.core.atomic import atomic_write_bytes, atomic_write_text
from modelforge.tuning.space import with_values

FIXED_COLUMNS = ("trial", "state", "value", "seconds", "steps")


def trial_rows(study: Any, metric: str) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, one row per trial in number order): state, value, time, steps, each searched key, test metrics."""
    trials = study.get_trials(deepcopy=False)
    keys = list(dict.fromkeys(k for t in trials for k in t.user_attrs.get("values", {})))
    tests = sorted({k for t in trials for k in t.user_attrs.get("test", {})})
    rows = []
    for t in trials:
        attrs = t.user_attrs
        state = "interrupted" if attrs.get("interrupted") else t.state.name.lower()
        row = {"trial": t.number, "state": state, "value": t.value, "seconds": attrs.get("seconds"),
               "steps": attrs.get("steps"), **{k: attrs.get("values", {}).get(k) for k in keys},
               **{k: attrs.get("test", {}).get(k) for k in tests},
               "run_dir": attrs.get("run_dir"), "note": attrs.get("error", "")}
        rows.append(row)
    columns = [*FIXED_COLUMNS, *keys, *tests, "run_dir", "note"]
    return [metric if c == "value" else c for c in columns], [_rename(r, metric) for r in rows]


def _rename(row: dict[str, Any], metric: str) -> dict[str, Any]:
    return {(metric if k == "value" else k): v for k, v in row.items()}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def table_text(columns: list[str], rows: list[dict[str, Any]], limit: int | None = None) -> str:
    """The trials as aligned text columns (without run directories and notes: those are in trials.csv)."""
    shown = [c for c in columns if c not in ("run_dir", "note")]
    cells = [shown] + [[_cell(r.get(c)) for c in shown] for r in rows[:limit]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(shown))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_trials_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return path


def best_trial(study: Any) -> Any | None:
    """The best complete trial, or None when no trial completed."""
    import optuna

    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return None
    return study.best_trial


def write_best_yaml(path: Path, recipe: dict[str, Any], trial: Any, metric: str) -> Path:
    """The base recipe with the best trial's values, validated like any recipe, as YAML with a provenance header."""
    import yaml

    from modelforge.tasks.recipes import load_recipe, recipe_to_dict

    values = trial.user_attrs.get("values", {})
    best = recipe_to_dict(load_recipe(with_values(recipe, values)))
    best.pop("tune", None)
    header = (f"# best trial {trial.number} of the study: {metric} = {trial.value:.6g}\n"
              f"# searched values: {', '.join(f'{k}={v}' for k, v in values.items())}\n"
              f"# train it: modelforge train {path}\n")
    atomic_write_text(path, header + yaml.safe_dump(best, sort_keys=False))
    return path


def study_plots(study: Any, metric: str) -> dict[str, bytes | str]:
    """Optuna's matplotlib plots as PNG bytes; a plot that cannot be drawn (too few trials) is a note instead."""
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    from modelforge.render.plots import to_png

    makers = {"optimization history": optuna_plots.plot_optimization_history,
              "parameter importance": optuna_plots.plot_param_importances,
              "parallel coordinate": optuna_plots.plot_parallel_coordinate}
    out: dict[str, bytes | str] = {}
    for title, make in makers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna.exceptions.ExperimentalWarning on every call
                axes = make(study, target_name=metric)
            figure = getattr(axes, "figure", None) or axes.flat[0].figure
            figure.set_size_inches(7.5, 4.2)
            figure.tight_layout()
            out[title] = to_png(figure)
            import matplotlib.pyplot as plt  # optuna draws through pyplot; close the figure it opened

            plt.close(figure)
        except (ValueError, RuntimeError, ZeroDivisionError, optuna.exceptions.OptunaError) as exc:
            out[title] = f"not drawn: {exc}"
    return out


def write_study_report(study_dir: Path, study: Any, metric: str, columns: list[str], rows: list[dict[str, Any]],
                       overview: list[tuple[str, Any]]) -> Path:
    """``report.html``: the overview, the plots (also written to ``plots/``) and the trials table."""
    from modelforge.render import html

    sections = [html.Section("Study", html.key_value_table(overview))]
    for title, plot in study_plots(study, metric).items():
        if isinstance(plot, bytes):
            atomic_write_bytes(study_dir / "plots" / f"{title.replace(' ', '_')}.png", plot)
            sections.append(html.Section(title.capitalize(), html.image(plot, title)))
        else:
            sections.append(html.Section(title.capitalize(), html.paragraph(plot)))
    sections.append(html.Section("Trials", html.table(columns, [[r.get(c) for c in columns] for r in rows])))
    target = study_dir / "report.html"
    atomic_write_text(target, html.page(f"Study {study.study_name}", str(study_dir), sections))
    return target


def study_run_dirs(path: str | Path) -> list[Path] | None:
    """The run directories of a study's complete and pruned trials (what ``modelforge compare STUDY_DIR`` compares),
    or None when ``path`` is not a study directory."""
    file = Path(path) / "trials.csv"
    if not file.is_file():
        return None
    with file.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [Path(r["run_dir"]) for r in rows if r.get("state") in ("complete", "pruned") and r.get("run_dir")
            and (Path(r["run_dir"]) / "results.json").is_file()]
