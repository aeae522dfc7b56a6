"""The Python API, mirrored by the CLI: ``train(recipe, **overrides) → Run``, ``load(path) → Predictor``."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelforge.core.atomic import atomic_write_json, atomic_write_text
from modelforge.core.errors import ArtifactError
from modelforge.core.seed import seed_everything


@dataclass
class Run:
    directory: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        return self.directory / "model"

    def load(self):
        return load(self.directory)


def new_run_dir(output_dir: str, name: str) -> Path:
    """``<output_dir>/<name>``, or ``<name>-2``, ``-3``… when taken: a new run never overwrites an old one."""
    root = Path(output_dir)
    candidate, n = root / name, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = root / f"{name}-{n}"
    return candidate


def latest_run_dir(output_dir: str, name: str) -> Path | None:
    root = Path(output_dir)
    pattern = re.compile(rf"^{re.escape(name)}(-\d+)?$")
    found = [p for p in root.glob(f"{name}*") if pattern.match(p.name) and (p / "recipe.yaml").exists()]
    return max(found, key=lambda p: (p / "recipe.yaml").stat().st_mtime) if found else None


def train(
    recipe: str | dict | Path,
    overrides: list[str] | None = None,
    *,
    resume: bool = False,
    run_dir: str | Path | None = None,
    **kw_overrides: Any,
) -> Run:
    """Train a recipe (name, YAML path or mapping); ``key__sub=value`` keywords override like ``key.sub=value``."""
    import yaml

    from modelforge.artifacts.model_dir import save_artifact
    from modelforge.tasks import get_task
    from modelforge.tasks.recipes import load_recipe, recipe_to_dict
    from modelforge.training import distributed as dist_utils
    from modelforge.training.trainer import Trainer

    recipe_obj = load_recipe(str(recipe) if isinstance(recipe, Path) else recipe, overrides, **kw_overrides)
    env = dist_utils.setup(dist_utils.default_device())
    directory = _resolve_run_dir(recipe_obj, run_dir, resume) if env.is_main else None
    if env.enabled:  # every rank must use the directory rank 0 chose
        import torch.distributed

        holder = [directory]
        torch.distributed.broadcast_object_list(holder, src=0)
        directory = holder[0]
    if env.is_main:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / "recipe.yaml", yaml.safe_dump(recipe_to_dict(recipe_obj), sort_keys=False))

    seed_everything(recipe_obj.train.seed)
    task = get_task(recipe_obj.task)(recipe_obj)
    started = time.perf_counter()
    splits = task.datasets()
    model = task.build_model()
    trainer = Trainer(task, model, recipe_obj.train, directory)
    summary = trainer.fit(splits, resume=resume)
    metrics: dict[str, Any] = {}
    if splits.test is not None:
        metrics = trainer.evaluate(splits.test, prefix="test")
        floats = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        trainer.metrics_log.write({"step": trainer.step, "epoch": trainer.epoch, "event": "test", **floats})
    summary.update(train_seconds=round(time.perf_counter() - started, 2), data=splits.summary)
    final_model = trainer.export_model()
    if env.is_main:
        save_artifact(directory / "model", recipe_obj, task, final_model)
        atomic_write_json(directory / "results.json", {"summary": summary, "metrics": metrics})
        _write_report(directory, splits)
    dist_utils.teardown(env)
    return Run(directory, metrics, summary)


def _write_report(directory: Path, splits: Any) -> None:
    """The HTML report is a convenience: failing to draw it must not fail a finished training run."""
    import warnings

    from modelforge.report import write_report

    try:
        write_report(directory, splits=splits)
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"could not write {directory / 'report.html'}: {exc} (retry with `modelforge report`)",
                      stacklevel=2)


def _resolve_run_dir(recipe_obj: Any, run_dir: str | Path | None, resume: bool) -> Path:
    if run_dir is not None:
        return Path(run_dir)
    out, name = recipe_obj.train.output_dir, recipe_obj.name
    if resume:
        return latest_run_dir(out, name) or new_run_dir(out, name)
    return new_run_dir(out, name)


def load(path: str | Path):
    """Load a run (or its model/ directory) as a Predictor."""
    from modelforge.serve.predictor import Predictor

    return Predictor(path)


def evaluate(path: str | Path, split: str = "test") -> dict[str, Any]:
    """Re-evaluate a trained run on its recipe's data split."""
    from modelforge.training.trainer import Trainer

    predictor = load(path)
    splits = predictor.task.datasets()
    dataset = getattr(splits, split, None)
    if dataset is None:
        raise ArtifactError(f"the recipe of {path} has no {split} split to evaluate on")
    trainer = Trainer(predictor.task, predictor.model, predictor.recipe.train, Path(path))
    return trainer.evaluate(dataset, prefix=split)


def read_results(path: str | Path) -> dict[str, Any]:
    file = Path(path) / "results.json"
    if not file.exists():
        raise ArtifactError(f"{file} does not exist; has the run finished?")
    return json.loads(file.read_text())
