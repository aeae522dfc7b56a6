"""One trial: sample the space, train an ordinary run directory through ``api.train``, report each evaluation to
Optuna so the pruner can stop a poor trial early, and return the trial's value.

Trials skip the run report (drawing it takes as long as a small trial): ``modelforge report RUN`` draws one.
The value is the best value of the metric over the trial's evaluations (as Keras Tuner scores a trial). A pruned
trial still ends as a complete run (the Trainer stops as it does for early stopping, and saves the model) and is
recorded as pruned. A trial that raises — a diverged loss, a NaN metric, a combination the model refuses — is
recorded as failed with its one-line error, and the study goes on.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from modelforge.core.errors import TrainingError, first_line
from modelforge.training.callbacks import Callback
from modelforge.tuning.settings import StudySettings, worker_id
from modelforge.tuning.space import suggest, with_values


class ReportToTrial(Callback):
    """Reports the metric of every evaluation to the Optuna trial and stops training when the pruner says so."""

    def __init__(self, trial: Any, metric: str, maximize: bool):
        self.trial, self.metric, self.maximize = trial, metric, maximize
        self.values: list[float] = []
        self.pruned_at: int | None = None

    def on_eval_end(self, trainer: Any, metrics: dict[str, Any]) -> None:
        if self.metric not in metrics:
            logged = ", ".join(k for k, v in metrics.items() if isinstance(v, (int, float)))
            raise TrainingError(f"tune.metric {self.metric!r} is not logged; evaluation gives: {logged}")
        value = float(metrics[self.metric])
        if not math.isfinite(value):
            raise TrainingError(f"{self.metric} became {value} at step {trainer.step}")
        self.values.append(value)
        self.trial.report(value, trainer.step)
        if self.trial.should_prune():
            self.pruned_at = trainer.step
            trainer.stop_reason = f"pruned by the study at step {trainer.step} ({self.metric} {value:.4g})"

    def best(self) -> float:
        if not self.values:
            raise TrainingError(f"the trial never evaluated {self.metric}: tuning needs a validation split "
                                "(data.val_size > 0)")
        return max(self.values) if self.maximize else min(self.values)


class Objective:
    """``study.optimize(Objective(settings))``: each call trains one trial into ``STUDY_DIR/trials/trial-NNNN``."""

    def __init__(self, settings: StudySettings):
        self.settings = settings

    def __call__(self, trial: Any) -> float:
        import optuna

        trial.set_user_attr("worker", worker_id())
        started = time.perf_counter()
        try:
            return self._train(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # recorded, so the trial counts as done: a failure that repeats cannot loop
            trial.set_user_attr("error", first_line(exc))
            raise
        except BaseException:  # Ctrl-C: the next run replaces the trial, as after a kill
            trial.set_user_attr("interrupted", True)
            raise
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))

    def _train(self, trial: Any) -> float:
        import optuna

        from modelforge.api import train

        settings = self.settings
        values = suggest(trial, settings.space)
        run_dir = Path(settings.study_dir) / "trials" / f"trial-{trial.number:04d}"
        trial.set_user_attr("values", values)
        trial.set_user_attr("run_dir", str(run_dir))
        recipe = with_values(settings.recipe, values)
        recipe["train"]["progress"] = "off"  # one line per trial instead of a progress bar each
        reporter = ReportToTrial(trial, settings.metric, settings.direction == "maximize")
        # a trial is judged on its validation metric: the report and the classical baseline wait for `modelforge train`
        run = train(recipe, run_dir=run_dir, callbacks=[reporter], report=False, baseline=False)
        value = reporter.best()
        trial.set_user_attr("steps", run.summary.get("steps"))
        trial.set_user_attr("test", {k: v for k, v in run.metrics.items() if isinstance(v, (int, float))})
        if reporter.pruned_at is not None:
            raise optuna.TrialPruned(run.summary.get("stop_reason"))
        return value


def announce(study: Any, trial: Any) -> None:
    """One line per finished trial: number, state, value, time, the sampled values (``optimize`` callback)."""
    attrs = trial.user_attrs
    values = " ".join(f"{k}={_short(v)}" for k, v in attrs.get("values", {}).items())
    state = trial.state.name.lower()
    if state == "complete":
        outcome = f"{study.user_attrs.get('metric', 'value')}={trial.value:.4f}"
    elif state == "pruned":
        outcome = f"at step {attrs.get('steps')}"
    else:
        outcome = attrs.get("error", "")
    print(f"trial {trial.number} {state} {outcome} ({attrs.get('seconds', '?')}s) {values}".rstrip(), flush=True,
          file=sys.stdout)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
