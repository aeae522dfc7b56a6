"""Differentially private training (DP-SGD, Abadi et al. 2016) on Opacus, switched on by a recipe's ``privacy:``.

What Opacus does here: per-sample gradients (``GradSampleModule`` hooks on the model's layers), per-sample clipping
plus Gaussian noise (``DPOptimizer`` with ``expected_batch_size``), noise calibration
(``get_noise_multiplier``) and the privacy accounting (``RDPAccountant`` / ``PRVAccountant``).

What this module adds, so that the Trainer keeps its exact resume:

- **Poisson sampling as a deterministic batch plan.** Opacus' own ``DPDataLoader`` draws its batches from a live
  generator, which a resumed run could not replay. Instead every example joins every step independently with
  probability ``q = 1 / steps_per_epoch`` (≈ batch_size / N), drawn from a generator seeded by (train.seed, epoch)
  like ``batches.epoch_order``; the plan of an epoch is a list of index tensors the Trainer walks as usual, so a
  resumed run sees exactly the batches of an uninterrupted one. Batches may be empty: an empty batch skips the
  forward pass and its step adds noise only, as DP-SGD's analysis requires.
- **The budget is enforced.** With a noise multiplier computed from ``target_epsilon`` for the planned steps, ε
  ends at or below the target. With a fixed ``noise_multiplier`` and a ``target_epsilon``, the number of steps the
  budget allows is found up front and training stops (``stop_reason`` says so) before the step that would exceed it.
- **Accounting survives resume.** The accountant's history goes into each checkpoint's state.json; the noise comes
  from the global torch generator, whose state checkpoints already restore.
- ε (at ``delta``) is logged at the end of every epoch as an ``event: privacy`` record in metrics.jsonl and lands
  in results.json and the model's task.json under ``privacy``.

BatchNorm is refused rather than converted: it mixes the examples of a batch, so a per-sample gradient does not
exist, and converting it to GroupNorm (Opacus' ``ModuleValidator.fix``) would save weights that the recipe's own
model builder cannot load back for serving. The error names the layer.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from modelforge.core.config import PrivacyConfig
from modelforge.core.errors import ConfigError
from modelforge.tasks.base import StepOutput
from modelforge.training.batches import epoch_order
from modelforge.training.callbacks import Callback


def _opacus() -> Any:
    try:
        import opacus
    except ImportError:  # pragma: no cover — opacus is in the "trust" extra
        raise ConfigError("privacy: needs opacus; install modelforge[trust]") from None
    return opacus


def check_model(model: nn.Module) -> None:
    """Refuse layers DP-SGD cannot train, naming the first one (BatchNorm first: the most common case)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise ConfigError(
                f"privacy: layer {name!r} is {type(module).__name__}, which mixes the examples of a batch, so DP-SGD "
                "has no per-sample gradient for it; use a model without BatchNorm (e.g. GroupNorm/LayerNorm)"
            )
    _opacus()
    from opacus.validators import ModuleValidator

    for name, module in model.named_modules():
        validator = ModuleValidator.VALIDATORS.get(type(module))
        errors = validator(module) if validator else []
        if errors:
            reason = " ".join(str(errors[0]).split())
            kind = type(module).__name__
            raise ConfigError(f"privacy: layer {name!r} ({kind}) cannot be trained with DP-SGD: {reason}")


def check_settings(trainer: Any) -> None:
    """Training settings that contradict DP-SGD's per-sample clipping or its accounting → one-line ConfigError."""
    cfg = trainer.cfg
    problems = {
        "train.grad_accum > 1 (every optimiser step must be one Poisson-sampled batch for the accounting)":
            cfg.grad_accum > 1,
        f"train.strategy={cfg.strategy} (DP-SGD runs on a single process)":
            cfg.strategy != "single" or trainer.env.world_size > 1,
        "train.precision=fp16 (the loss scaler would rescale the clipped, noised gradients)": cfg.precision == "fp16",
        "train.compile (Opacus' per-sample gradient hooks need the eager model)": cfg.compile,
        "train.activation_checkpointing (the recomputed forward would record activations twice)":
            cfg.activation_checkpointing,
        "train.grad_clip (privacy.max_grad_norm clips each example's gradient instead)": cfg.grad_clip is not None,
        "a task with several optimisers (DP-SGD wraps exactly one)": _optimizer_groups(trainer) is not None,
    }
    for what, bad in problems.items():
        if bad:
            raise ConfigError(f"privacy: cannot be combined with {what}")


def _optimizer_groups(trainer: Any) -> Any:
    groups = getattr(trainer.task, "optimizer_groups", None)
    return groups(trainer.model) if groups else None


def make_accountant(kind: str) -> Any:
    from opacus.accountants import PRVAccountant, RDPAccountant

    return RDPAccountant() if kind == "rdp" else PRVAccountant()


def epsilon_of(kind: str, history: list[tuple[float, float, int]], delta: float) -> float:
    """ε after ``history`` [(noise multiplier, sample rate, steps)] under a fresh accountant of ``kind``."""
    if not history or sum(steps for _, _, steps in history) == 0:
        return 0.0
    accountant = make_accountant(kind)
    accountant.history = [tuple(h) for h in history]
    return float(accountant.get_epsilon(delta=delta))


def poisson_plan(n: int, steps: int, sample_rate: float, seed: int, epoch: int) -> list[torch.Tensor]:
    """``steps`` batches where each of the ``n`` examples joins each batch independently with ``sample_rate``.

    Depends only on (seed, epoch), so a resumed run replays the same batches; sizes vary and may be 0.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 7_919 * 1_000_003_000)
    return [torch.nonzero(torch.rand(n, generator=generator) < sample_rate).flatten() for _ in range(steps)]


def _dp_optimizer_class() -> type:
    from opacus.optimizers import DPOptimizer

    class StateInitSafeDPOptimizer(DPOptimizer):
        """Opacus' DPOptimizer, except for the zero-lr, zero-grad ``step()`` with which
        ``torch.distributed.checkpoint`` initialises an empty optimiser state before saving it: that call has no
        per-sample gradients and updates nothing, so it goes straight to the wrapped optimiser. Every training step
        has per-sample gradients (an empty batch gets zero-size ones) and goes through clipping and noise."""

        def step(self, closure: Any = None) -> Any:
            state_init = all(getattr(p, "grad_sample", None) is None for p in self.params) and all(
                float(group["lr"]) == 0.0 for group in self.param_groups)
            if state_init and closure is None:
                return self.original_optimizer.step()
            check_per_sample_gradients(self.params, getattr(self, "parameter_names", {}))
            return super().step(closure)

    return StateInitSafeDPOptimizer


def check_per_sample_gradients(params: list[nn.Parameter], names: dict[int, str]) -> None:
    """One-line ConfigError when Opacus gave a trainable parameter no per-example gradient, or one whose first axis
    is not the batch: a weight used outside its layer's forward (a position table read by index, an attention bias
    indexed by positions, not examples) or inside a layer Opacus has no per-sample rule for. Opacus itself fails
    deep inside its clipping (tensor sizes differ) or says only "Per sample gradient is not initialized"."""
    sizes = [p.grad_sample.shape[0] for p in params if getattr(p, "grad_sample", None) is not None]
    batch = max(set(sizes), key=sizes.count) if sizes else 0
    for p in params:
        sample = getattr(p, "grad_sample", None)
        if sample is None and p.grad is None:  # not used this step (LayerDrop skipped its layer): every example's
            p.grad_sample = p.new_zeros((batch, *p.shape))  # gradient is zero; the step still adds its noise
            continue
        if sample is None or sample.shape[0] != batch:
            name = names.get(id(p), f"a parameter of shape {list(p.shape)}")
            why = "no per-example gradient" if sample is None else \
                f"a per-example gradient over {sample.shape[0]} rows, not the batch's {batch}"
            raise ConfigError(f"privacy: Opacus gives {name} {why} (a weight read outside its layer's forward, or a "
                              "layer without a per-sample rule); DP-SGD cannot train it — add adapter: (LoRA trains "
                              "the adapter only) or leave out privacy:")


def _DPOptimizer(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 — a class factory (opacus is imported lazily)
    return _dp_optimizer_class()(*args, **kwargs)


class DPTraining(Callback):
    """DP-SGD for one Trainer: attached in ``Trainer.__init__``, set up with the data size on the first epoch."""

    def __init__(self, trainer: Any, cfg: PrivacyConfig):
        check_settings(trainer)
        check_model(trainer.model)
        opacus = _opacus()
        self.cfg = cfg
        self.seed = trainer.cfg.seed
        self.batch_size = trainer.cfg.batch_size
        with warnings.catch_warnings():  # Opacus warns about secure RNG; DP here is for research, as documented
            warnings.simplefilter("ignore")
            # The hooks go onto the model's own layers: the Trainer keeps calling the plain model (forward
            # signatures, state-dict keys and the exported artifact stay unchanged).
            self.grad_sample_module = opacus.GradSampleModule(trainer.model)
            trainer.optimizer = _DPOptimizer(
                trainer.optimizer,
                noise_multiplier=cfg.noise_multiplier or 0.0,
                max_grad_norm=cfg.max_grad_norm,
                expected_batch_size=self.batch_size,
            )
        self.optimizer = trainer.optimizer
        self.optimizer.parameter_names = {id(p): name for name, p in trainer.model.named_parameters()}
        # Opacus hooks the first layer too, whose input (the data) needs no gradient; torch then warns at every
        # run that the full backward hook fires on outputs only, which is exactly what per-sample gradients use.
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
        self.optimizer.attach_step_hook(self._account)
        self.accountant = make_accountant(cfg.accountant)
        self.sample_rate: float | None = None
        self.noise_multiplier: float | None = cfg.noise_multiplier
        self.allowed_steps: int | None = None
        self.planned_steps: int | None = None

    # ---- setup once the data size is known -------------------------------------------------------------------
    def setup(self, n_train: int, total_steps: int) -> None:
        if self.sample_rate is not None:
            return
        steps_per_epoch = math.ceil(n_train / self.batch_size)
        self.sample_rate = 1.0 / steps_per_epoch
        self.planned_steps = total_steps
        cfg = self.cfg
        if self.noise_multiplier is None:
            from opacus.accountants.utils import get_noise_multiplier

            self.noise_multiplier = float(get_noise_multiplier(
                target_epsilon=cfg.target_epsilon, target_delta=cfg.delta, sample_rate=self.sample_rate,
                steps=total_steps, accountant=cfg.accountant,
            ))
        self.optimizer.noise_multiplier = self.noise_multiplier
        self.allowed_steps = total_steps if cfg.target_epsilon is None else self._budget_steps(total_steps)
        if self.allowed_steps == 0:
            raise ConfigError(
                f"privacy: with noise_multiplier={self.noise_multiplier} a single step already spends more than "
                f"target_epsilon={cfg.target_epsilon}; raise the noise or the target"
            )

    def _epsilon_after(self, steps: int) -> float:
        return epsilon_of(self.cfg.accountant, [(self.noise_multiplier, self.sample_rate, steps)], self.cfg.delta)

    def _budget_steps(self, total_steps: int) -> int:
        """The most steps (≤ total) whose ε stays within target_epsilon: ε grows with the steps, so bisect."""
        target = self.cfg.target_epsilon
        if self._epsilon_after(total_steps) <= target:
            return total_steps
        low, high = 0, total_steps  # ε(low) ≤ target < ε(high)
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if self._epsilon_after(mid) <= target else (low, mid)
        return low

    # ---- the Trainer's hooks ---------------------------------------------------------------------------------
    def epoch_batches(self, n_train: int, total_steps: int, epoch: int) -> list[torch.Tensor]:
        self.setup(n_train, total_steps)
        steps = math.ceil(n_train / self.batch_size)
        if not self.cfg.poisson_sampling:  # shuffled fixed-size batches; ε is still computed for Poisson rate q
            return epoch_order(n_train, self.batch_size, self.seed, epoch)
        return poisson_plan(n_train, steps, self.sample_rate, self.seed, epoch)

    def empty_step(self) -> StepOutput:
        """An empty Poisson batch: no forward pass; zero-size per-sample gradients so the step adds noise only."""
        for p in self.optimizer.params:
            p.grad_sample = p.new_zeros((0, *p.shape))
        return StepOutput(torch.zeros((), requires_grad=True))

    def _account(self, optimizer: Any) -> None:
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)

    @property
    def steps_accounted(self) -> int:
        return sum(steps for _, _, steps in self.accountant.history)

    def epsilon(self) -> float:
        return epsilon_of(self.cfg.accountant, self.accountant.history, self.cfg.delta)

    def on_step_end(self, trainer: Any, logs: dict[str, float]) -> None:
        epoch_ended = trainer.position == 0
        out_of_budget = self.allowed_steps is not None and trainer.step >= self.allowed_steps
        if out_of_budget and trainer.step < (self.planned_steps or 0) and not trainer.stop_reason:
            trainer.stop_reason = (
                f"privacy budget: another step would take epsilon above target_epsilon={self.cfg.target_epsilon} "
                f"(epsilon={self.epsilon():.4g} after {trainer.step} steps)"
            )
        if epoch_ended or trainer.stop_reason:
            trainer.metrics_log.write({"step": trainer.step, "epoch": trainer.epoch, "event": "privacy",
                                       "epsilon": self.epsilon(), "delta": self.cfg.delta})

    def on_train_end(self, trainer: Any) -> None:
        # task.json travels with the model, so the artifact itself states its privacy guarantee
        trainer.task.state_dict_["privacy"] = self.report()

    def report(self) -> dict[str, Any]:
        """The guarantee of the trained model, for results.json and task.json."""
        return {
            "epsilon": round(self.epsilon(), 6),
            "delta": self.cfg.delta,
            "target_epsilon": self.cfg.target_epsilon,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.cfg.max_grad_norm,
            "sample_rate": self.sample_rate,
            "steps": self.steps_accounted,
            "accountant": self.cfg.accountant,
            "poisson_sampling": self.cfg.poisson_sampling,
        }

    # ---- checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"history": [list(h) for h in self.accountant.history], "noise_multiplier": self.noise_multiplier}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.accountant.history = [tuple(h) for h in state["history"]]
        if state.get("noise_multiplier") is not None:
            self.noise_multiplier = state["noise_multiplier"]
            self.optimizer.noise_multiplier = self.noise_multiplier


def attach(trainer: Any) -> DPTraining | None:
    """DP-SGD for the trainer when its task's recipe has a ``privacy:`` section; registers itself as a callback."""
    cfg = getattr(getattr(trainer.task, "recipe", None), "privacy", None)
    if cfg is None:
        return None
    engine = DPTraining(trainer, cfg)
    trainer.callbacks.append(engine)
    return engine


def is_empty(task: Any, batch: Any) -> bool:
    return task.batch_size_of(batch) == 0
