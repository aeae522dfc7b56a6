"""The Optuna study: its storage (a SQLite file in the study directory, or any SQLAlchemy URL), sampler and pruner,
and the worker loop that runs trials until the study holds its number of finished trials.

Several workers — the ``--jobs`` processes, other ``modelforge tune`` commands, other machines on one database URL —
share a study: before each trial a worker counts the trials finished or running in the storage and stops when they
reach ``tune.trials``. A trial of a worker that died (``SIGKILL``, a lost machine) does not count: on this machine
its process id is gone, elsewhere its heartbeat goes stale; it is marked failed ("interrupted") and a new trial
takes its place, so a restarted ``tune`` continues without repeating finished trials.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from modelforge.core.errors import ConfigError
from modelforge.tuning.settings import StudySettings

HEARTBEAT_SECONDS = 30  # a trial on another machine is given up 4 heartbeats after its last one
FINGERPRINT_ATTR = "modelforge_fingerprint"


def sqlite_url(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def open_storage(url: str) -> Any:
    import optuna

    from modelforge.core.errors import first_line

    engine_kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    for attempt in range(3):  # two workers creating one new SQLite file at once: the loser retries
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS,
                                              grace_period=4 * HEARTBEAT_SECONDS)
        except Exception as exc:  # noqa: BLE001 — SQLAlchemy raises many kinds (bad URL, missing driver, refused)
            if attempt == 2 or not url.startswith("sqlite"):
                raise ConfigError(f"--storage {url}: cannot open the study database ({first_line(exc)})") from None
            time.sleep(1 + attempt)


def build_sampler(settings: StudySettings, worker: int) -> Any:
    import optuna

    from modelforge.tuning.space import grid

    # each worker of one command draws its own random numbers; a seeded study stays reproducible per worker
    seed = None if settings.seed is None else settings.seed + worker
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "grid":
        return optuna.samplers.GridSampler(grid(settings.space), seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def build_pruner(name: str) -> Any:
    import optuna

    if name == "median":  # the first trials always run to the end; later ones stop below the running median
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def open_study(settings: StudySettings, worker: int = 0) -> Any:
    """Create the study, or load it when it exists; a study of another recipe or space is refused."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # trials are reported one line each by the worker
    # heartbeats and fail_stale_trials are marked experimental; they are what lets a lost machine's trial go
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if settings.storage == sqlite_url(settings.study_dir):  # the database file goes in it; other storages leave
        settings.study_dir.mkdir(parents=True, exist_ok=True)  # it to the first trial, so a refused URL leaves nothing
    study = optuna.create_study(storage=open_storage(settings.storage), study_name=settings.study_name,
                                direction=settings.direction, sampler=build_sampler(settings, worker),
                                pruner=build_pruner(settings.pruner), load_if_exists=True)
    found = study.user_attrs.get(FINGERPRINT_ATTR)
    if found is None:
        study.set_user_attr(FINGERPRINT_ATTR, settings.fingerprint())
        study.set_user_attr("metric", settings.metric)
    elif found != settings.fingerprint():
        raise ConfigError(f"{settings.storage} already holds a study {settings.study_name!r} of another recipe, "
                          "space or metric; give a new --study-dir (or --study-name) to start a new study")
    return study


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def fail_interrupted(study: Any) -> list[int]:
    """Mark failed the running trials whose worker process on this machine is gone; returns their numbers."""
    import optuna

    host, found = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = str(trial.user_attrs.get("worker", ""))
        owner_host, _, pid = owner.rpartition(":")
        if owner_host != host or not pid.isdigit() or _process_alive(int(pid)):
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            found.append(trial.number)
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker got there first
            pass
    return found


def counts_toward_budget(trial: Any) -> bool:
    """Finished trials count (complete, pruned, or failed by their own error), running ones too; interrupted don't."""
    import optuna

    states = optuna.trial.TrialState
    if trial.state in (states.COMPLETE, states.PRUNED, states.RUNNING):
        return True
    return trial.state == states.FAIL and "error" in trial.user_attrs


def run_worker(settings: StudySettings, worker: int = 0, threads: int | None = None) -> int:
    """Run trials until the study is full or the timeout passes; returns how many this worker ran."""
    import optuna

    from modelforge.tuning.objective import Objective, announce

    if threads:
        import torch

        torch.set_num_threads(threads)
    study = open_study(settings, worker)
    objective = Objective(settings)
    started, ran = time.monotonic(), 0
    while True:
        optuna.storages.fail_stale_trials(study)  # trials of lost machines, by heartbeat
        fail_interrupted(study)
        if sum(counts_toward_budget(t) for t in study.get_trials(deepcopy=False)) >= settings.trials:
            return ran
        if settings.timeout is not None and time.monotonic() - started >= settings.timeout:
            return ran
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[announce], gc_after_trial=True)
        ran += 1


def _spawned_worker(settings: StudySettings, worker: int, threads: int) -> None:
    """A ``--jobs`` process: a user error is one line and exit code 2, as in the command itself."""
    from modelforge.core.errors import ModelforgeError

    try:
        run_worker(settings, worker, threads)
    except ModelforgeError as exc:
        print(f"modelforge: error: tune worker {worker}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def run_workers(settings: StudySettings, jobs: int) -> None:
    """``jobs`` worker processes on this machine (trials are whole training runs: processes, not threads, so each
    has its own torch RNG and thread pool); one job runs in this process."""
    if jobs == 1:
        run_worker(settings)
        return
    import multiprocessing

    from modelforge.core.errors import TrainingError

    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_spawned_worker, args=(settings, i, threads)) for i in range(jobs)]
    for process in workers:
        process.start()
    try:
        for process in workers:
            process.join()
    except KeyboardInterrupt:
        for process in workers:
            process.terminate()
        raise
    failed = [i for i, p in enumerate(workers) if p.exitcode != 0]
    if failed:
        print(f"modelforge: {len(failed)} of {jobs} tune workers exited with an error", file=sys.stderr)
        if len(failed) == jobs:
            raise TrainingError(f"every tune worker failed (exit codes {[p.exitcode for p in workers]})")
