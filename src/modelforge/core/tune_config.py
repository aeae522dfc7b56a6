"""The ``tune:`` section of a recipe: what ``modelforge tune`` searches and how (the search runs in ``tuning/``).

``space`` maps a dotted recipe key to one distribution, written as a one-key mapping:
``{log_uniform: [lo, hi]}``, ``{uniform: [lo, hi], step: s}``, ``{int: [lo, hi], step: s, log: false}`` or
``{choice: [a, b, …]}``. The keys themselves are checked against the recipe schema by ``tuning/space.py``, which
needs the task and model registries (``core`` must not import them).
"""

from __future__ import annotations

import builtins
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

KINDS = ("log_uniform", "uniform", "int", "choice")


class _Strict(BaseModel):
    # the same settings as core.config.StrictConfig, which this module cannot import (config.py imports it)
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Distribution(_Strict):
    """One searched key: exactly one of the kinds, with its bounds or choices."""

    log_uniform: Optional[tuple[float, float]] = Field(None, description="[low, high], sampled on a log scale")
    uniform: Optional[tuple[float, float]] = Field(None, description="[low, high], sampled uniformly")
    int: Optional[tuple[builtins.int, builtins.int]] = Field(None, description="[low, high] integers, both included")
    choice: Optional[list[Any]] = Field(None, min_length=1, description="the values to choose from")
    step: Optional[Union[builtins.int, float]] = Field(None, gt=0, description="int/uniform: spacing of values")
    log: Optional[bool] = Field(None, description="int: sample on a log scale")

    @model_validator(mode="after")
    def _one_kind(self) -> Distribution:
        given = [kind for kind in KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)} (got {', '.join(given) or 'none'})")
        kind = given[0]
        if kind != "choice":
            low, high = getattr(self, kind)
            if not low <= high:
                raise ValueError(f"{kind}: low {low} is above high {high}")
            if kind == "log_uniform" and low <= 0:
                raise ValueError(f"log_uniform needs low > 0 (got {low})")
        if self.step is not None and kind not in ("int", "uniform"):
            raise ValueError(f"step applies to int and uniform, not {kind}")
        if self.step is not None and kind == "int" and self.step != round(self.step):
            raise ValueError(f"int step must be a whole number (got {self.step})")
        if self.log and kind != "int":
            raise ValueError("log: true applies to int (use log_uniform for floats)")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in KINDS if getattr(self, kind) is not None)

    def extremes(self) -> list[Any]:
        """The values a trial may take at the edges (every choice): each must make a valid recipe."""
        return list(self.choice) if self.kind == "choice" else list(getattr(self, self.kind))


class TuneConfig(_Strict):
    """``tune:`` — hyperparameter search with Optuna (``modelforge tune``)."""

    metric: Optional[str] = Field(None, description="validation metric to optimise (default: the early-stopping "
                                                    "metric, else the task's own, e.g. val_accuracy)")
    direction: Optional[Literal["maximize", "minimize"]] = Field(None, description="default: from the metric")
    trials: Optional[int] = Field(None, ge=1, description="finished trials the study aims for, over all workers "
                                                          "(default 20; grid: every point once)")
    timeout: Optional[float] = Field(None, gt=0, description="seconds after which a worker starts no new trial")
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "successive_halving", "none"] = "median"
    seed: Optional[int] = Field(None, description="sampler seed (default: unseeded)")
    # dict[str, Any], not dict[str, Distribution]: the keys are recipe keys, which the recipe's unknown-key check
    # must not compare with Distribution's fields; each value is validated below instead
    space: dict[str, Any] = Field(default_factory=dict, description="dotted recipe key → distribution")

    @field_validator("space")
    @classmethod
    def _distributions(cls, space: dict[str, Any]) -> dict[str, Distribution]:
        out = {}
        for key, spec in space.items():
            if not isinstance(spec, (dict, Distribution)):
                raise ValueError(f"{key}: expected a mapping such as {{log_uniform: [1e-4, 1e-2]}}, got {spec!r}")
            try:
                out[key] = spec if isinstance(spec, Distribution) else Distribution.model_validate(spec)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                message = err["msg"].removeprefix("Value error, ")
                raise ValueError(f"{key}{': ' + where if where else ''}: {message}") from None
        return out
