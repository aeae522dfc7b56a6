"""The search space: the recipe's ``tune.space`` plus ``--space KEY=SPEC`` options, checked against the recipe schema
before the first trial, and sampled into one trial's recipe values through an Optuna trial."""

from __future__ import annotations

import copy
import difflib
import json
from typing import Any

from pydantic import ValidationError

from modelforge.core.errors import ConfigError, ModelforgeError
from modelforge.core.tune_config import KINDS, Distribution
from modelforge.tasks.recipes import set_path

SPEC_FORMS = "log_uniform:LOW:HIGH, uniform:LOW:HIGH[:STEP], int:LOW:HIGH[:STEP] or choice:A,B,..."
# keys a trial must not change: they say which recipe this is, or how the search itself runs
FIXED_KEYS = ("name", "description", "task", "tune")
SCALARS = (str, int, float, bool, type(None))


def _number(text: str, where: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a number (forms: {SPEC_FORMS})") from None


def _choice_value(text: str) -> Any:
    """``128`` → 128, ``1e-3`` → 0.001, ``true`` → True, ``adam`` → "adam" (YAML 1.1 would keep 1e-3 a string)."""
    import yaml

    try:
        return _number(text, "")
    except ConfigError:
        return yaml.safe_load(text) if text else ""


def parse_space_option(text: str) -> tuple[str, Distribution]:
    """``train.lr=log_uniform:1e-4:1e-2`` → ("train.lr", Distribution(log_uniform=(1e-4, 1e-2)))."""
    where = f"--space {text}"
    key, sep, spec = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{where}: expected KEY=SPEC, e.g. train.lr=log_uniform:1e-4:1e-2")
    kind, _, rest = spec.partition(":")
    if kind not in KINDS:
        close = difflib.get_close_matches(kind, KINDS, n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise ConfigError(f"{where}: unknown distribution {kind!r}.{hint} Forms: {SPEC_FORMS}")
    raw: dict[str, Any]
    if kind == "choice":
        raw = {"choice": [_choice_value(part) for part in rest.split(",")]}
    else:
        parts = [_number(part, where) for part in rest.split(":")]
        if len(parts) not in (2, 3) or (len(parts) == 3 and kind == "log_uniform"):
            raise ConfigError(f"{where}: {kind} takes LOW:HIGH{'' if kind == 'log_uniform' else '[:STEP]'}")
        raw = {kind: parts[:2], **({"step": parts[2]} if len(parts) == 3 else {})}
    try:
        return key, Distribution.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None


def merge_space(recipe_space: dict[str, Distribution], options: list[str]) -> dict[str, Distribution]:
    """The recipe's ``tune.space`` with each ``--space`` option added (an option replaces the recipe's key)."""
    space = dict(recipe_space)
    for text in options:
        key, distribution = parse_space_option(text)
        space[key] = distribution
    if not space:
        raise ConfigError("nothing to search: add a tune.space section to the recipe or give --space KEY=SPEC, "
                          "e.g. --space train.lr=log_uniform:1e-4:1e-2")
    return space


def with_values(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of the recipe mapping with each dotted key set to its value."""
    out = copy.deepcopy(raw)
    for key, value in values.items():
        set_path(out, key.split("."), value)
    return out


def check_space(raw: dict[str, Any], space: dict[str, Distribution]) -> None:
    """Every key is a recipe key and every edge value (each bound, each choice) makes a valid recipe — checked with the
    recipe's own schema, so an unknown key fails here with its "did you mean", before any trial starts."""
    from modelforge.tasks.recipes import load_recipe

    for key, distribution in space.items():
        if key.split(".")[0] in FIXED_KEYS:
            raise ConfigError(f"tune.space {key}: {key.split('.')[0]} cannot be searched; searchable sections are "
                              "data, model, train, privacy and explain")
        for value in distribution.extremes():
            try:
                load_recipe(with_values(raw, {key: value}))
            except ModelforgeError as exc:
                raise ConfigError(f"tune.space {key}={value!r}: {exc}") from None


def _labels(choices: list[Any]) -> list[Any] | None:
    """Optuna's categorical values must be scalars; lists (``model.channels: [[8, 16], [16, 32]]``) go as JSON."""
    return None if all(isinstance(c, SCALARS) for c in choices) else [json.dumps(c) for c in choices]


def suggest(trial: Any, space: dict[str, Distribution]) -> dict[str, Any]:
    """One value per key, drawn through the Optuna trial (whose parameter names are the dotted keys)."""
    values: dict[str, Any] = {}
    for key, dist in space.items():
        kind = dist.kind
        if kind == "log_uniform":
            values[key] = trial.suggest_float(key, *dist.log_uniform, log=True)
        elif kind == "uniform":
            values[key] = trial.suggest_float(key, *dist.uniform, step=dist.step)
        elif kind == "int":
            values[key] = trial.suggest_int(key, *dist.int, step=int(dist.step or 1), log=bool(dist.log))
        else:
            labels = _labels(dist.choice)
            picked = trial.suggest_categorical(key, labels or dist.choice)
            values[key] = json.loads(picked) if labels else picked
    return values


def grid(space: dict[str, Distribution]) -> dict[str, list[Any]]:
    """The grid sampler's search space: every value of each key, so each key needs a finite set of values."""
    import numpy as np

    out: dict[str, list[Any]] = {}
    for key, dist in space.items():
        kind = dist.kind
        if kind == "choice":
            out[key] = _labels(dist.choice) or list(dist.choice)
        elif kind == "int":
            low, high = dist.int
            out[key] = list(range(low, high + 1, int(dist.step or 1)))
        elif kind == "uniform" and dist.step is not None:
            low, high = dist.uniform
            out[key] = [float(v) for v in np.arange(low, high + dist.step / 2, dist.step)]
        else:
            raise ConfigError(f"tune.sampler grid: {key} is {kind} without a step; the grid needs choice, int, or "
                              "uniform with a step")
    return out
