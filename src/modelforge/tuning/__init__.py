"""``modelforge tune``: hyperparameter search on Optuna. It sits above the Python API (each trial is an ordinary
``api.train`` run directory) and beside the CLI.

space.py (the search space and its checks), study.py (storage, sampler, pruner, workers), objective.py (one trial),
results.py (trials.csv, best.yaml, report.html), runner.py (``tune()``, which ties them together).
"""

from __future__ import annotations

from modelforge.tuning.runner import StudySummary, tune

__all__ = ["StudySummary", "tune"]
