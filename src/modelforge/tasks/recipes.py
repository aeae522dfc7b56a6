"""The one home of a recipe's trip: find (built-in name or path) → read YAML → apply overrides → validate (the
``Recipe`` schema of core/config.py, the task's DataConfig, the model builder's keywords) → ``recipe_to_dict`` back.

Built-in recipes live in ``recipes/<task>/<name>.yaml`` at the repository root (or ``$MODELFORGE_RECIPES``); a user
passes either such a name or a path to their own YAML file.
"""

from __future__ import annotations

import copy
import difflib
import os
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from modelforge.core.config import Recipe, non_finite_path, validate
from modelforge.core.errors import ConfigError, RegistryError
from modelforge.core.registry import check_kwargs, get
from modelforge.tasks import get_task
from modelforge.tasks.own_data import check_source, select_for_overrides


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read recipe {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping with task/data/model/train keys")
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=0.01`` → (["train", "lr"], 0.01); the value is read as YAML so numbers/bools/lists get types."""
    key, sep, value = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad override {text!r}: expected key.sub=value, e.g. train.lr=0.01")
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def set_path(raw: dict[str, Any], path: list[str], value: Any) -> None:
    node = raw
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {'.'.join(path)}: {part!r} is not a section")
        node = child
    node[path[-1]] = value


def recipes_dir() -> Path:
    env = os.environ.get("MODELFORGE_RECIPES")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "recipes"


def builtin_recipes() -> dict[str, Path]:
    root = recipes_dir()
    return {p.stem: p for p in sorted(root.glob("*/*.yaml"))} if root.is_dir() else {}


def find_recipe(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        return path
    known = builtin_recipes()
    if name_or_path not in known:
        close = difflib.get_close_matches(name_or_path, list(known), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown recipe {name_or_path!r}.{hint} See `modelforge recipes` for the list")
    return known[name_or_path]


def _coerce_model_kwargs(model_name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    try:
        check_kwargs("model", model_name, kwargs)
    except RegistryError as exc:
        raise ConfigError(f"model: {exc}") from None
    builder = get("model", model_name).builder
    hints = typing.get_type_hints(builder)
    out = {}
    for key, value in kwargs.items():
        try:
            out[key] = TypeAdapter(hints[key]).validate_python(value) if key in hints else value
        except ValidationError as exc:
            raise ConfigError(f"model.{key}: {exc.errors()[0]['msg']} (got {value!r})") from None
        where = non_finite_path(out[key])  # after coercion: the text "inf" becomes a float
        if where is not None:
            raise ConfigError(f"model.{key}{where}: Input should be a finite number (got {value!r})")
    return out


def resolve(raw: dict[str, Any], source: str = "") -> Recipe:
    """Validate a raw recipe mapping: top level, the task's DataConfig, then model keywords."""
    raw = copy.deepcopy(raw)
    data_raw = raw.get("data") or {}
    recipe = validate(Recipe, {**raw, "data": {}}, source=source)
    task_cls = get_task(recipe.task)
    if isinstance(data_raw, dict):
        check_source(recipe.task, data_raw)
    data = validate(task_cls.DataConfig, data_raw, prefix="data.", source=source)
    method = recipe.model.method
    if method is not None and method not in task_cls.model_methods:
        valid = ", ".join(task_cls.model_methods) or "none"
        raise ConfigError(f"model.method={method!r}: task {recipe.task} trains with no such method (valid: {valid})")
    model_kwargs = _coerce_model_kwargs(recipe.model.name, recipe.model.kwargs())
    model = {"name": recipe.model.name, "method": method, **model_kwargs}
    return recipe.model_copy(update={"data": data, "model": type(recipe.model).model_validate(model)})


def _switch_model(raw: dict[str, Any], changes: list[tuple[list[str], Any]]) -> None:
    """An override naming another model (``model.name=hf``) starts its model section afresh: the recipe's other
    model keywords belong to the builder it replaces (``dim``, ``num_layers`` …); the overrides then add their own."""
    names = [value for keys, value in changes if keys == ["model", "name"]]
    model = raw.get("model")
    if names and isinstance(model, dict) and model.get("name") != names[-1]:
        raw["model"] = {"name": names[-1]}


def load_recipe(name_or_path: str | dict[str, Any], overrides: list[str] | None = None, **kw_overrides: Any) -> Recipe:
    """Load a recipe by name, path or mapping, apply ``key.sub=value`` strings and ``key__sub=value`` keywords."""
    if isinstance(name_or_path, dict):
        raw, source = copy.deepcopy(name_or_path), "recipe"
    else:
        path = find_recipe(name_or_path)
        raw, source = load_yaml(path), str(path)
    overridden: set[str] = set()  # the data.* keys the overrides set
    changes = [parse_override(text) for text in overrides or []]
    changes += [(key.split("__"), value) for key, value in kw_overrides.items()]
    _switch_model(raw, changes)
    for keys, value in changes:
        set_path(raw, keys, value)
        overridden.update(keys[1:2] if keys[0] == "data" else [])
    if isinstance(raw.get("data"), dict) and isinstance(raw.get("task"), str):
        select_for_overrides(raw["task"], raw["data"], overridden)
    return resolve(raw, source)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    out = recipe.model_dump(mode="json", exclude_none=True)
    out["data"] = recipe.data.model_dump(mode="json") if hasattr(recipe.data, "model_dump") else recipe.data
    return out
