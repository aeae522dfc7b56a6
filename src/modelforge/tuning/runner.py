"""``modelforge.tune(recipe, overrides, trials=…)``: settle the study's settings from the recipe and the options, run
the workers, and write the results (the command ``modelforge tune`` is this function plus printing)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelforge.core.errors import ConfigError, MissingDependencyError, TrainingError
from modelforge.tuning.study import StudySettings, open_study, run_workers, sqlite_url

DEFAULT_TRIALS = 20
# metric names whose smaller values are better, when tune.metric is given without tune.direction
SMALLER_IS_BETTER = ("loss", "error", "wer", "cer", "perplexity", "mse", "mae")


@dataclass
class StudySummary:
    """What a finished ``tune`` returns: where everything is and the best trial."""

    study_dir: Path
    study_name: str
    storage: str
    metric: str
    direction: str
    states: dict[str, int]
    columns: list[str]
    rows: list[dict[str, Any]] = field(repr=False)
    best_trial: int | None = None
    best_value: float | None = None
    best_values: dict[str, Any] = field(default_factory=dict)
    best_run_dir: Path | None = None
    best_yaml: Path | None = None
    trials_csv: Path | None = None
    report: Path | None = None

    def table(self, limit: int | None = None) -> str:
        from modelforge.tuning.results import table_text

        return table_text(self.columns, self.rows, limit)


def objective_of(recipe: Any) -> tuple[str, str]:
    """(metric, direction): tune.metric/direction, else the early-stopping metric, else the task's own."""
    from modelforge.tasks import get_task

    cfg, stopper = recipe.tune, recipe.train.early_stopping
    metric = cfg.metric if cfg and cfg.metric else None
    direction = cfg.direction if cfg else None
    if metric is None and stopper is not None:
        metric, default = stopper.metric, "maximize" if stopper.mode == "max" else "minimize"
    elif metric is None:
        metric, default = get_task(recipe.task).validation_metric
    else:
        default = "minimize" if any(word in metric.lower() for word in SMALLER_IS_BETTER) else "maximize"
    if not metric.startswith("val_"):
        raise ConfigError(f"tune.metric {metric!r}: the study is scored on validation metrics (val_*), "
                          "so the test split stays untouched")
    return metric, direction or default


def settle(recipe: str | dict | Path, overrides: Sequence[str] | None, *, trials: int | None, space: Sequence[str],
           study_dir: str | Path | None, storage: str | None, study_name: str | None,
           timeout: float | None) -> StudySettings:
    """The study's settings; every check that can fail does so here, before the first trial."""
    from modelforge.core.tune_config import TuneConfig
    from modelforge.tasks.recipes import load_recipe, recipe_to_dict
    from modelforge.tuning.space import check_space, grid, merge_space

    recipe_obj = load_recipe(str(recipe) if isinstance(recipe, Path) else recipe, list(overrides or []))
    cfg = recipe_obj.tune or TuneConfig()
    search = merge_space(cfg.space, list(space))
    base = recipe_to_dict(recipe_obj)
    base.pop("tune", None)
    check_space(base, search)
    budget = trials or cfg.trials
    if cfg.sampler == "grid":  # refuses keys without a finite set of values; more trials would repeat points
        points = math.prod(len(values) for values in grid(search).values())
        budget = min(budget or points, points)
    metric, direction = objective_of(recipe_obj)
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    where = Path(study_dir) if study_dir else Path(recipe_obj.train.output_dir) / f"{recipe_obj.name}-tune"
    return StudySettings(recipe=base, space=search, metric=metric, direction=direction, trials=budget or DEFAULT_TRIALS,
                         study_dir=where, storage=storage or sqlite_url(where),
                         study_name=study_name or recipe_obj.name, sampler=cfg.sampler, pruner=cfg.pruner,
                         seed=cfg.seed, timeout=timeout if timeout is not None else cfg.timeout)


def tune(
    recipe: str | dict | Path,
    overrides: Sequence[str] | None = None,
    *,
    trials: int | None = None,
    jobs: int = 1,
    space: Sequence[str] = (),
    study_dir: str | Path | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    timeout: float | None = None,
) -> StudySummary:
    """Search the recipe's ``tune.space`` (plus ``space`` options such as ``"train.lr=log_uniform:1e-4:1e-2"``) with
    Optuna until the study holds ``trials`` finished trials (default ``tune.trials``); ``jobs`` worker processes.
    Running it again with the same study directory continues the study."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise MissingDependencyError("modelforge tune needs Optuna: pip install 'modelforge[tune]'") from None
    settings = settle(recipe, overrides, trials=trials, space=space, study_dir=study_dir, storage=storage,
                      study_name=study_name, timeout=timeout)
    open_study(settings)  # create it (or refuse a mismatched one) before any worker starts
    run_workers(settings, jobs)
    return summarize(settings)


def summarize(settings: StudySettings) -> StudySummary:
    """Write trials.csv, best.yaml and report.html for the study as the storage holds it now."""
    import modelforge.tuning.results as results

    study = open_study(settings)
    columns, rows = results.trial_rows(study, settings.metric)
    states: dict[str, int] = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
    directory = settings.study_dir
    summary = StudySummary(directory, settings.study_name, settings.storage, settings.metric, settings.direction,
                           states, columns, rows)
    summary.trials_csv = results.write_trials_csv(directory / "trials.csv", columns, rows)
    best = results.best_trial(study)
    if best is not None:
        summary.best_trial, summary.best_value = best.number, best.value
        summary.best_values = dict(best.user_attrs.get("values", {}))
        summary.best_run_dir = Path(best.user_attrs["run_dir"])
        summary.best_yaml = results.write_best_yaml(directory / "best.yaml", settings.recipe, best, settings.metric)
    overview = [("study", settings.study_name), ("storage", settings.storage), ("metric", settings.metric),
                ("direction", settings.direction), ("sampler", settings.sampler), ("pruner", settings.pruner),
                *((f"{state} trials", n) for state, n in states.items()),
                ("best trial", summary.best_trial), ("best value", summary.best_value),
                *((f"best {k}", v) for k, v in summary.best_values.items())]
    summary.report = results.write_study_report(directory, study, settings.metric, columns, rows, overview)
    if best is None:
        errors = [r["note"] for r in rows if r.get("note")]
        first = f"; first error: {errors[0]}" if errors else ""
        raise TrainingError(f"no trial of study {settings.study_name!r} completed (see {summary.trials_csv}){first}")
    return summary
