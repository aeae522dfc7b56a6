"""`modelforge tune`: the search space and its checks, pruning, failed trials, and whole studies through the CLI —
end to end, killed and resumed, and shared by two processes. Trials are `digits-cnn` on 128 images for 2 epochs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelforge.core.errors import ConfigError
from modelforge.core.tune_config import Distribution
from modelforge.tuning.space import parse_space_option

REPO = Path(__file__).resolve().parents[2]
TINY = ["data.limit=128", "data.val_size=64", "data.test_size=64", "train.epochs=2", "train.batch_size=32",
        "train.eval_batch_size=256"]
LR = "--space=train.lr=log_uniform:1e-4:1e-2"


def tune_command(study_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "modelforge", "tune", "digits-cnn", *TINY, "tune.pruner=none", LR,
            "--study-dir", str(study_dir), *extra]


def read_trials(study_dir: Path) -> list[dict[str, str]]:
    with (study_dir / "trials.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def trial_lines(stdout: str) -> dict[int, str]:
    """{trial number: state} of the one-line announcements a worker prints."""
    found = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[0] == "trial" and parts[1].isdigit():
            found[int(parts[1])] = parts[2]
    return found


# ---- the search space ---------------------------------------------------------------------------------------------
def test_space_options_parse_into_distributions():
    assert parse_space_option("train.lr=log_uniform:1e-4:1e-2") == ("train.lr", Distribution(log_uniform=(1e-4, 1e-2)))
    key, dist = parse_space_option("train.batch_size=int:16:128:16")
    assert key == "train.batch_size" and dist.int == (16, 128) and dist.step == 16
    assert parse_space_option("train.optimizer=choice:adam,sgd")[1].choice == ["adam", "sgd"]
    assert parse_space_option("train.weight_decay=choice:0,1e-4")[1].choice == [0, 1e-4]
    for bad, message in [("train.lr=log_unifrom:1e-4:1e-2", "Did you mean log_uniform"),
                         ("train.lr=log_uniform:1e-2:1e-4", "above high"),
                         ("train.lr=log_uniform:0:1", "low > 0"),
                         ("train.lr=uniform:a:1", "not a number"),
                         ("train.lr", "expected KEY=SPEC")]:
        with pytest.raises(ConfigError, match=message):
            parse_space_option(bad)


def test_recipe_space_keys_are_checked_before_any_trial(tmp_path):
    from modelforge.tuning.runner import settle

    def settled(space, *overrides):
        return settle("digits-cnn", list(overrides), trials=1, space=space, study_dir=tmp_path / "s", storage=None,
                      study_name=None, timeout=None)

    settings = settled(["train.lr=log_uniform:1e-4:1e-2"])
    assert (settings.metric, settings.direction, settings.trials) == ("val_accuracy", "maximize", 1)
    with pytest.raises(ConfigError, match=r"tune.space model.widht=8: model: .*takes no keyword 'widht'"):
        settled(["model.widht=choice:8,16"])
    with pytest.raises(ConfigError, match="train.optimizer.*'rmsprop'"):  # every choice must be a valid value
        settled(["train.optimizer=choice:adam,rmsprop"])
    with pytest.raises(ConfigError, match="task cannot be searched"):
        settled(["task=choice:text_classification"])
    with pytest.raises(ConfigError, match="the grid needs choice"):
        settled(["train.lr=log_uniform:1e-4:1e-2"], "tune.sampler=grid")
    grid = settled(["train.lr=choice:1e-3,3e-3", "train.batch_size=int:16:64:16"], "tune.sampler=grid")
    assert grid.trials == 1  # --trials 1 given; without it, every point once:
    grid = settle("digits-cnn", ["tune.sampler=grid"], trials=None, space=["train.lr=choice:1e-3,3e-3",
                  "train.batch_size=int:16:64:16"], study_dir=tmp_path / "s", storage=None, study_name=None,
                  timeout=None)
    assert grid.trials == 2 * 4 and grid.sampler == "grid"
    assert not (tmp_path / "s").exists()


def test_bad_space_key_exits_2_with_one_line(cli, tmp_path):
    result = cli("tune", "digits-cnn", "--space", "train.lrr=log_uniform:1e-4:1e-2", "--study-dir", str(tmp_path / "s"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.lrr" in lines[0] and "Did you mean train.lr?" in lines[0], result.stderr
    assert not (tmp_path / "s").exists()
    recipe = tmp_path / "search.yaml"  # the same check for the recipe's own tune: section
    recipe.write_text((REPO / "recipes/image_classification/digits-cnn.yaml").read_text()
                      + "tune:\n  space:\n    train.batch_sise: {choice: [16, 32]}\n")
    result = cli("tune", str(recipe), "--study-dir", str(tmp_path / "s"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Did you mean train.batch_size?" in lines[0], result.stderr
    result = cli("tune", "digits-cnn", LR, "--storage", "postgresql://nobody@127.0.0.1:1/none", "--study-dir",
                 str(tmp_path / "s"))  # a database that cannot be opened: one line, nothing written
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "cannot open the study database" in lines[0], result.stderr
    assert not (tmp_path / "s").exists()


# ---- one trial: pruning and failure ---------------------------------------------------------------------------------
def _settings(tmp_path: Path, space: dict, epochs: int):
    from modelforge.tasks.recipes import load_recipe, recipe_to_dict
    from modelforge.tuning.settings import StudySettings

    recipe = recipe_to_dict(load_recipe("digits-cnn", [*TINY, f"train.epochs={epochs}"]))
    return StudySettings(recipe=recipe, space={k: Distribution.model_validate(v) for k, v in space.items()},
                         metric="val_accuracy", direction="maximize", trials=1, study_dir=tmp_path,
                         storage="unused", study_name="t")


def test_pruning_stops_a_bad_trial_early_and_keeps_its_run(tmp_path):
    import optuna

    from modelforge.tuning.objective import Objective
    from modelforge.tuning.study import build_pruner

    study = optuna.create_study(direction="maximize", pruner=build_pruner("median"))
    for value in (0.9, 0.92):  # two earlier trials that learned well at every evaluation
        study.add_trial(optuna.trial.create_trial(value=value, intermediate_values={s: value for s in range(1, 64)}))
    study.optimize(Objective(_settings(tmp_path, {"train.lr": {"choice": [1e-7]}}, epochs=4)), n_trials=1)
    trial = study.trials[-1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    run = Path(trial.user_attrs["run_dir"])
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["event"] == "eval"]
    results = json.loads((run / "results.json").read_text())
    assert len(evals) == 1 and results["summary"]["epochs"] == 1  # stopped at the first of 4 epochs
    assert results["summary"]["stop_reason"].startswith("pruned by the study at step")
    assert trial.user_attrs["steps"] == evals[0]["step"] and (run / "model" / "model.safetensors").exists()
    assert "error" not in trial.user_attrs


def test_a_diverging_trial_is_recorded_failed_and_the_study_goes_on(tmp_path):
    import optuna

    from modelforge.tuning.objective import Objective

    study = optuna.create_study(direction="maximize")
    study.optimize(Objective(_settings(tmp_path, {"train.lr": {"choice": [1e12]}}, epochs=1)), n_trials=2,
                   catch=(Exception,))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2
    assert study.trials[0].user_attrs["error"].startswith("loss became nan at step")


def test_a_trial_failing_before_training_still_counts_toward_the_budget(tmp_path):
    import optuna

    from modelforge.tuning.objective import Objective
    from modelforge.tuning.study import counts_toward_budget

    settings = _settings(tmp_path, {"train.lr": {"choice": [1e-3]}}, epochs=1)
    settings.recipe["train"] = "fast"  # the sampled value cannot even be put into the recipe
    study = optuna.create_study(direction="maximize")
    study.optimize(Objective(settings), n_trials=1, catch=(Exception,))
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.FAIL and "'train' is not a section" in trial.user_attrs["error"]
    assert counts_toward_budget(trial)


# ---- whole studies through the CLI ----------------------------------------------------------------------------------
def test_tiny_study_end_to_end_through_cli(cli, tmp_path):
    study_dir = tmp_path / "study"
    result = cli(*tune_command(study_dir, "--trials", "3")[3:])
    assert result.returncode == 0, result.stderr
    assert sorted(trial_lines(result.stdout).items()) == [(0, "complete"), (1, "complete"), (2, "complete")]
    rows = read_trials(study_dir)
    assert [r["state"] for r in rows] == ["complete"] * 3 and "train.lr" in rows[0] and "test_accuracy" in rows[0]
    for row in rows:  # every trial is an ordinary run
        assert (Path(row["run_dir"]) / "model" / "model.safetensors").exists()
    best = max(rows, key=lambda r: float(r["val_accuracy"]))
    assert f"best: trial {best['trial']}" in result.stdout

    from modelforge.tasks.recipes import load_recipe

    recipe = load_recipe(str(study_dir / "best.yaml"))  # ready for `modelforge train best.yaml`
    assert recipe.tune is None and recipe.train.lr == pytest.approx(float(best["train.lr"]))
    assert recipe.data.limit == 128 and recipe.train.progress == "auto"
    report = (study_dir / "report.html").read_text()
    assert report.count("data:image/png") == 3 and all((study_dir / "plots" / f"{name}.png").exists() for name in
                                                       ("optimization_history", "parameter_importance",
                                                        "parallel_coordinate"))
    compared = cli("compare", str(study_dir), "--output", str(tmp_path / "compare.png"))
    assert compared.returncode == 0, compared.stderr
    assert all(f"trial-000{n}" in compared.stdout for n in range(3))


def test_killed_tune_resumes_without_repeating_finished_trials(cli, tmp_path):
    study_dir = tmp_path / "study"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(tune_command(study_dir, "--trials", "2"), cwd=REPO, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        for line in first.stdout:  # the first trial finishes …
            if line.startswith("trial 0 "):
                break
        deadline = time.monotonic() + 120
        while not (study_dir / "trials" / "trial-0001").exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # … and the second starts: kill it mid-trial
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    finished = study_dir / "trials" / "trial-0000" / "results.json"
    stamp = finished.stat().st_mtime_ns

    again = cli(*tune_command(study_dir, "--trials", "2")[3:])
    assert again.returncode == 0, again.stderr
    assert trial_lines(again.stdout) == {2: "complete"}  # trial 0 is not run again; the killed trial 1 is replaced
    assert finished.stat().st_mtime_ns == stamp
    states = {int(r["trial"]): r["state"] for r in read_trials(study_dir)}
    assert states == {0: "complete", 1: "interrupted", 2: "complete"}


def test_two_processes_share_one_sqlite_study(tmp_path):
    study_dir = tmp_path / "study"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    workers = [subprocess.Popen(tune_command(study_dir, "--trials", "3"), cwd=REPO, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err for _, err in outputs]
    ran = [set(trial_lines(out)) for out, _ in outputs]
    assert ran[0] and ran[1] and not ran[0] & ran[1]  # both contributed, no trial twice
    rows = read_trials(study_dir)
    complete = [r for r in rows if r["state"] == "complete"]
    # each worker stops when finished + running trials reach 3; two that check at the same moment may add one more
    assert 3 <= len(complete) <= 4 and {int(r["trial"]) for r in rows} == ran[0] | ran[1]
