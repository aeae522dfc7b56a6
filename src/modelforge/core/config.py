"""Recipe configuration: pydantic v2 classes are the only schema; YAML in, typed ``key.sub=value`` overrides.

A recipe is ``Recipe{name, description, task, data, model, train, privacy?, adapter?, explain?, serve?, tune?}``.
``data`` is validated by the task's own ``DataConfig`` class and ``model`` keywords by the model builder's
signature; both happen in ``modelforge.tasks.recipes`` because ``core`` must not import tasks or models.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modelforge.core.errors import ConfigError
from modelforge.core.tune_config import TuneConfig


class StrictConfig(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are re-validated, and every float must
    be finite (``train.lr=inf`` or ``nan`` would only surface as a NaN loss steps later)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def non_finite_path(value: Any) -> str | None:
    """Where a float inside ``value`` (nested lists, tuples, mappings) is inf or NaN: "" for ``value`` itself,
    "[1]" or ".key" below it; None when every number is finite."""
    if isinstance(value, float):
        return None if math.isfinite(value) else ""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        below = non_finite_path(item)
        if below is not None:
            return (f".{key}" if isinstance(value, dict) else f"[{key}]") + below
    return None


class EarlyStopping(StrictConfig):
    metric: str = Field("val_loss", description="metric to watch, as logged (e.g. val_accuracy)")
    mode: Literal["min", "max"] = "min"
    patience: int = Field(3, ge=1, description="evaluations without improvement before stopping")
    min_delta: float = 0.0
    noise_allowance: float = Field(
        0.0, ge=0, description="an evaluation counts against patience only when it misses the best by more than this "
                               "many standard errors of the metric (<metric>_se, logged by classifiers); 0: every miss"
    )
    restore_best: bool = Field(True, description="keep the best weights seen, not the last")


class TrainConfig(StrictConfig):
    epochs: int = Field(1, ge=1)
    max_steps: Optional[int] = Field(None, ge=1, description="stop after this many optimiser steps")
    batch_size: int = Field(64, ge=1)
    eval_batch_size: Optional[int] = Field(None, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: Literal["constant", "step", "cosine", "linear", "onecycle"] = "constant"
    warmup_steps: int = Field(0, ge=0, description="linear warm-up before the schedule (constant/step/cosine/linear)")
    warmup_ratio: Optional[float] = Field(
        None, ge=0, lt=1, description="warm-up as a fraction of the run's optimiser steps (replaces warmup_steps)"
    )
    min_steps: Optional[int] = Field(
        None, ge=1, description="small data: add epochs until the run makes at least this many optimiser steps; "
                                "early stopping never fires before them"
    )
    step_size: int = Field(1000, ge=1, description="step schedule: optimiser steps between decays")
    gamma: float = Field(0.1, gt=0, description="step schedule: decay factor")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine/linear: final lr as a fraction of lr")
    pct_start: float = Field(0.3, gt=0, lt=1, description="onecycle: fraction of steps spent rising")
    div_factor: float = Field(25.0, gt=0, description="onecycle: initial lr = lr / div_factor")
    final_div_factor: float = Field(1e4, gt=0, description="onecycle: final lr = initial lr / final_div_factor")
    grad_clip: Optional[float] = Field(None, gt=0, description="clip the global gradient norm to this value")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimiser step")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast dtype (fp16 uses a GradScaler)")
    strategy: Literal["single", "ddp", "fsdp"] = Field("single", description="under torchrun: DDP or FSDP2 sharding")
    compile: bool = Field(False, description="torch.compile the model (falls back with a warning)")
    compile_backend: str = Field("inductor", description="torch.compile backend (inductor, aot_eager, …)")
    channels_last: Optional[bool] = Field(
        None, description="NHWC layout for 2-D convolution models while training (opt-in; unset: off)"
    )
    activation_checkpointing: bool = Field(False, description="recompute each block's activations in backward")
    eval_every_steps: Optional[int] = Field(None, ge=1, description="also evaluate every N optimiser steps")
    early_stopping: Optional[EarlyStopping] = None
    checkpoint_every_steps: Optional[int] = Field(None, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every_steps: int = Field(50, ge=1)
    seed: int = 0
    num_workers: Optional[int] = Field(
        None, ge=0, description="DataLoader worker processes; unset: min(4, usable CPUs - 1) for data read from disk "
                                "(image, sound and video folders, COCO files) on 3+ CPUs, 0 for data held in memory "
                                "and on 1-2 CPUs")
    progress: Literal["auto", "on", "off"] = "auto"
    output_dir: str = Field("runs", description="runs go to <output_dir>/<recipe name>")

    @field_validator("progress", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: Any) -> Any:
        # YAML 1.1 reads bare on/off as booleans
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


class ExplainConfig(StrictConfig):
    """``explain:`` — attributions for held-out samples, written after training as the run's explanation gallery."""

    method: Literal["integrated_gradients", "saliency", "occlusion", "gradient_shap"] = "integrated_gradients"
    samples: int = Field(8, ge=1, le=64, description="held-out inputs explained in the gallery")
    target: Optional[str] = Field(None, description="label to attribute (default: each input's predicted label)")
    baseline: Literal["black", "mean"] = Field(
        "black", description="reference input: black image / silence (lowest feature) / [PAD]; or the training mean"
    )
    steps: int = Field(64, ge=2, le=2048, description="integrated gradients: points on the path integral")


class PrivacyConfig(StrictConfig):
    """DP-SGD (``training/privacy.py``): a target ε (noise computed for the planned steps) and/or a fixed noise."""

    target_epsilon: Optional[float] = Field(None, gt=0, description="privacy budget ε; training never exceeds it")
    delta: float = Field(1e-5, gt=0, lt=1, description="δ of the (ε, δ) guarantee; well below 1/N")
    max_grad_norm: float = Field(1.0, gt=0, description="per-sample gradient clipping norm C")
    noise_multiplier: Optional[float] = Field(None, gt=0, description="fixed noise σ (default: computed from ε)")
    accountant: Literal["rdp", "prv"] = Field("rdp", description="Opacus accountant: RDP or PRV (tighter)")
    poisson_sampling: bool = Field(True, description="Poisson-sampled batches, as the accounting assumes")

    @model_validator(mode="after")
    def _epsilon_or_noise(self) -> PrivacyConfig:
        if self.target_epsilon is None and self.noise_multiplier is None:
            raise ValueError("set target_epsilon (noise computed) or noise_multiplier (or both: ε is then a cap)")
        return self


class AdapterConfig(StrictConfig):
    """``adapter:`` — parameter-efficient fine-tuning through ``peft`` (``training/lora.py``): only the adapter and
    the model's new head train."""

    method: Literal["lora"] = "lora"
    r: int = Field(8, ge=1, description="rank of each low-rank update")
    alpha: float = Field(16.0, gt=0, description="scale of the update (alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter's input")
    target_modules: Union[Literal["auto"], list[str]] = Field(
        "auto", description="layers to adapt: auto (every Linear of the attention/FFN blocks) or module names"
    )
    save: Literal["merged", "adapter"] = Field(
        "merged", description="artifact weights: merged into the base, or the adapter alone (model.name=hf)"
    )


class ModelConfig(BaseModel):
    """``name`` picks a registered model; ``method`` how a task trains it (only tasks that declare methods take
    one: ``Task.model_methods``); every other key is a keyword of its builder."""

    model_config = ConfigDict(extra="allow")
    name: str
    method: Optional[str] = None

    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Recipe(StrictConfig):
    name: str
    description: str = ""
    task: str
    data: Any = Field(default_factory=dict, description="validated by the task's DataConfig")
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    privacy: Optional[PrivacyConfig] = None
    adapter: Optional[AdapterConfig] = None
    explain: Optional[ExplainConfig] = None
    serve: Optional[dict[str, Any]] = None
    tune: Optional[TuneConfig] = Field(None, description="hyperparameter search (`modelforge tune`); train ignores it")

    @model_validator(mode="before")
    @classmethod
    def _data_is_mapping(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("data") is None:
            values["data"] = {}
        return values


def check_keys(raw: Any, cls: type[BaseModel], prefix: str = "") -> None:
    """Fail on the first unknown key under a forbid-extra class, with a 'did you mean' from its fields."""
    if not isinstance(raw, dict) or cls.model_config.get("extra") != "forbid":
        return
    fields = cls.model_fields
    for key, value in raw.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" Did you mean {prefix}{close[0]}?" if close else ""
            raise ConfigError(f"unknown key {prefix}{key}.{hint} Valid keys: {', '.join(fields)}")
        annotation = fields[key].annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                check_keys(value, candidate, f"{prefix}{key}.")


def one_line(exc: ValidationError, prefix: str = "", source: str = "") -> str:
    """A pydantic error as one actionable line: where, what, and the offending value."""
    err = exc.errors()[0]
    loc = prefix + ".".join(str(p) for p in err["loc"])
    where = f"{source}: " if source else ""
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}{loc}: {err['msg']} (got {err.get('input')!r}){more}"


def validate(cls: type[BaseModel], raw: dict[str, Any], prefix: str = "", source: str = "") -> Any:
    check_keys(raw, cls, prefix)
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(one_line(exc, prefix, source)) from None
