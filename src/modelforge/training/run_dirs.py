"""Which directory a training run writes to, and what ``--resume`` continues.

A new run goes to ``<output_dir>/<recipe name>``, or ``<name>-2``, ``-3``… when that is taken, so a run never
overwrites another. ``--resume`` continues the most recent run of the recipe *that has a checkpoint*: a folder left
by a run that failed before training (or an empty one) holds nothing to resume, and picking it would silently start
again from step 0 beside the real run's checkpoints. Only ``claim_new_run_dir`` creates a directory: the caller
claims it once the data has loaded and training is about to start.
"""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelforge.core.errors import ArtifactError, ConfigError
from modelforge.training.checkpoint import list_checkpoints


@dataclass(frozen=True)
class ResumePoint:
    """The latest complete checkpoint of a run: where it is and the trainer state it stopped at."""

    directory: Path  # the run directory
    checkpoint: Path
    step: int
    epoch: int
    stop_reason: str | None


def new_run_dir(output_dir: str | Path, name: str) -> Path:
    """``<output_dir>/<name>``, or ``<name>-2``, ``-3``… when taken: a new run never overwrites an old one."""
    root = Path(output_dir)
    candidate, n = root / name, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        n += 1
        candidate = root / f"{name}-{n}"
    return candidate


def claim_new_run_dir(chosen: Path, name: str) -> Path:
    """Create the chosen new run directory, or the next free ``-N`` name after it, with an exclusive ``mkdir``: the
    choice is made before the data loads, and another run started meanwhile may have taken it. An existing folder,
    even an empty one, is never shared (two runs claiming one empty folder at once could not tell each other)."""
    n = 1 if chosen.name == name else int(chosen.name[len(name) + 1:])
    candidate = chosen
    while True:
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            n += 1
            candidate = chosen.parent / f"{name}-{n}"


def resume_point(run_dir: Path) -> ResumePoint | None:
    """The run's latest complete checkpoint, read without loading any tensor; None when it has none."""
    found = list_checkpoints(run_dir / "checkpoints")
    if not found:
        return None
    try:
        state = json.loads((found[-1] / "state.json").read_text())
        return ResumePoint(run_dir, found[-1], int(state["step"]), int(state["epoch"]), state.get("stop_reason"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"checkpoint {found[-1]} cannot be read ({exc.__class__.__name__}: {exc})") from None


def latest_resumable(output_dir: str | Path, name: str) -> ResumePoint | None:
    """The run of recipe ``name`` under ``output_dir`` whose latest checkpoint is the most recent one written."""
    root = Path(output_dir)
    pattern = re.compile(rf"^{re.escape(name)}(-\d+)?$")
    points = [point for path in (root.glob(f"{glob.escape(name)}*") if root.is_dir() else [])
              if pattern.match(path.name) and path.is_dir() and (point := resume_point(path)) is not None]
    return max(points, key=lambda p: p.checkpoint.stat().st_mtime_ns, default=None)


def check_run_dir(path: Path) -> Path:
    """An explicit ``--run-dir`` must be a folder or not exist yet."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--run-dir {path}: a file of that name exists; give a folder for the run")
    return path


def resolve_run_dir(output_dir: str | Path, name: str, run_dir: str | Path | None,
                    resume: bool) -> tuple[Path, ResumePoint | None]:
    """(run directory, resume point or None). With ``resume``, refuses (one line) when there is nothing to resume:
    training from step 0 under the name of a resume would be work silently lost."""
    if run_dir is not None:
        directory = check_run_dir(Path(run_dir))
        if not resume:
            return directory, None
        point = resume_point(directory) if directory.is_dir() else None
        if point is None:
            raise ArtifactError(f"--resume: {directory} holds no checkpoint to resume from; "
                                "train without --resume to start it")
        return directory, point
    if not resume:
        return new_run_dir(output_dir, name), None
    point = latest_resumable(output_dir, name)
    if point is None:
        raise ArtifactError(f"--resume: no run of recipe {name!r} under {output_dir}/ has a checkpoint; "
                            "train without --resume to start one")
    return point.directory, point


def nothing_left(point: ResumePoint, total_steps: int, epochs: int) -> bool:
    """Whether the run at ``point`` already trained everything the recipe asks for (or stopped early)."""
    return point.step >= total_steps or point.epoch >= epochs or point.stop_reason is not None


def finished_results(directory: Path) -> dict[str, Any] | None:
    """The finished run's results.json (written after the model was saved), or None if it never got there."""
    file = directory / "results.json"
    if not (file.is_file() and (directory / "model").is_dir()):
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        return None
