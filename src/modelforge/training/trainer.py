"""The Trainer: the one training loop every task runs through.

It owns the optimiser and schedule, gradient accumulation and clipping, bf16/fp16 autocast, evaluation every epoch
(and every N steps), early stopping, the progress display, ``metrics.jsonl``, atomic checkpoints with exact resume,
and — under torchrun — DDP or FSDP2 with a data order identical to a single process (under DDP a classifier's
evaluation is sharded over the ranks and gathered; see ``Trainer.evaluate``). Weights, optimiser state, RNG
states and the data-order position are all restored on resume, so a run killed at any step and resumed ends
bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modelforge.core.config import TrainConfig
from modelforge.core.errors import ConfigError, TrainingError
from modelforge.core.seed import rng_state, set_rng_state
from modelforge.tasks.base import Splits, Task
from modelforge.tasks.metrics import gathering_ranks
from modelforge.training import checkpoint as ckpt
from modelforge.training import distributed as dist_utils
from modelforge.training import privacy
from modelforge.training.batches import default_workers, epoch_order, eval_loader, iterate, move_to
from modelforge.training.callbacks import Callback
from modelforge.training.loggers import MetricsLog, Progress
from modelforge.training.memory_format import set_layout, to_channels_last, use_channels_last
from modelforge.training.optim import build_optimizer, lr_at, set_lr


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Recompute each block's activations during backward instead of storing them; returns the blocks wrapped."""
    from torch.utils.checkpoint import checkpoint

    blocks = dist_utils.block_modules(model)
    for block in blocks:
        forward = block.forward

        def checkpointed(*args: Any, _forward: Any = forward, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():
                return _forward(*args, **kwargs)
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        block.forward = checkpointed
    return len(blocks)


class Trainer:
    def __init__(
        self,
        task: Task,
        model: nn.Module,
        cfg: TrainConfig,
        run_dir: Path,
        callbacks: Iterable[Callback] = (),
        device: str | torch.device | None = None,
    ):
        self.task, self.model, self.cfg, self.run_dir = task, model, cfg, Path(run_dir)
        self.device = torch.device(device) if device is not None else dist_utils.default_device()
        self.env = dist_utils.setup(self.device)
        self.model.to(self.device)
        self.channels_last = use_channels_last(self.model, cfg.channels_last)
        if self.channels_last:  # once, before DDP/compile wrap it; fit() restores the ordinary layout at its end
            set_layout(self.model, True)
        if cfg.activation_checkpointing and apply_activation_checkpointing(self.model) == 0:
            warnings.warn("train.activation_checkpointing: this model has no *Block modules; nothing to checkpoint",
                          stacklevel=2)
        self.train_model = dist_utils.wrap(self.model, cfg.strategy, self.env, self.device)
        if cfg.compile:
            self.train_model = self._compiled(self.train_model, cfg.compile_backend)
        self.callbacks = list(callbacks)
        self.optimizer = build_optimizer(self.model.parameters(), cfg)
        self.privacy = privacy.attach(self)  # DP-SGD when the recipe has privacy: (wraps the optimiser)
        self.optimizers = self._optimizer_groups()  # {group: optimiser} for multi-optimiser tasks (GAN), else None
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.precision == "fp16" else None
        self.metrics_log = MetricsLog(self.run_dir / "metrics.jsonl", enabled=self.env.is_main)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.step = 0
        self.epoch = 0
        self.position = 0  # micro-batches of the current epoch already consumed
        self.best: float | None = None
        self.bad_evals = 0
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.best_eval: dict[str, Any] | None = None  # the evaluation of best_weights: what the saved model scores
        self.stop_reason: str | None = None
        self.last_eval: dict[str, Any] = {}
        self.last_eval_step = 0
        self._compiled_for_evaluation: nn.Module | None = None  # see _evaluation_model

    @staticmethod
    def _compiled(model: nn.Module, backend: str) -> nn.Module:
        try:
            return torch.compile(model, backend=backend)
        except Exception as exc:  # noqa: BLE001 — any backend failure falls back to eager, as documented
            warnings.warn(f"train.compile: torch.compile is unavailable here ({exc}); training eagerly", stacklevel=2)
            return model

    # ---- sizes ------------------------------------------------------------------------------------------------
    def steps_per_epoch(self, n_train: int) -> int:
        micro = math.ceil(n_train / self.cfg.batch_size)
        return math.ceil(micro / self.cfg.grad_accum)

    def planned_epochs(self, n_train: int) -> int:
        """``train.epochs``, or more when ``train.min_steps`` asks for more optimiser steps than they give: a few
        hundred rows make only a handful of steps per epoch, too few to fit anything."""
        per_epoch = self.steps_per_epoch(n_train)
        if self.cfg.min_steps and per_epoch * self.cfg.epochs < self.cfg.min_steps:
            return math.ceil(self.cfg.min_steps / max(per_epoch, 1))
        return self.cfg.epochs

    def total_steps(self, n_train: int) -> int:
        total = self.steps_per_epoch(n_train) * self.planned_epochs(n_train)
        return min(total, self.cfg.max_steps) if self.cfg.max_steps else total

    # ---- checkpoints ------------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "rng": rng_state(),
            "best": self.best,
            "best_eval": self.best_eval,
            "bad_evals": self.bad_evals,
            "stop_reason": self.stop_reason,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "world_size": self.env.world_size,
            "privacy": self.privacy.state_dict() if self.privacy else None,
        }

    def save_checkpoint(self) -> Path | None:
        """Gather full states (every rank takes part) and write them from rank 0."""
        model_state = dist_utils.full_model_state(self.model)
        optimizer_state = self._full_optimizer_state()
        target = None
        if self.env.is_main:
            extras = {"best": self.best_weights} if self.best_weights is not None else None
            target = ckpt.save_checkpoint(self.checkpoint_dir, self.step, model_state, optimizer_state, self._state(),
                                          extras, self.cfg.keep_checkpoints)
        dist_utils.barrier(self.env)
        return target

    def resume(self) -> bool:
        """Restore the latest complete checkpoint (written under any world size); False when there is none."""
        if self.env.is_main:
            ckpt.clean_partial(self.checkpoint_dir)
        dist_utils.barrier(self.env)
        found = ckpt.list_checkpoints(self.checkpoint_dir)
        if not found:
            return False
        state, model_state, optimizer_state, extras = ckpt.read_checkpoint(found[-1])
        dist_utils.load_full_model_state(self.model, model_state)
        self._load_optimizer_state(optimizer_state)
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.best, self.bad_evals, self.stop_reason = state["best"], state["bad_evals"], state.get("stop_reason")
        self.best_weights = extras.get("best")
        self.best_eval = state.get("best_eval")
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        if self.privacy and state.get("privacy"):
            self.privacy.load_state_dict(state["privacy"])
        self.metrics_log.truncate_after(self.step)
        return True

    def export_model(self) -> nn.Module:
        """A plain single-process module with the trained weights (gathers shards under FSDP; collective)."""
        if not (self.env.enabled and self.cfg.strategy == "fsdp"):
            return self.model
        state = dist_utils.full_model_state(self.model)
        plain = self.task.build_model()
        plain.load_state_dict(state)
        return plain

    def _loading(self, dataset: Any) -> tuple[int, bool]:
        """(DataLoader workers, pinned memory) for ``dataset``: see batches.default_workers."""
        workers = default_workers(dataset, self.cfg.num_workers)
        return workers, workers > 0 and self.device.type == "cuda"

    # ---- evaluation and early stopping ------------------------------------------------------------------------
    def evaluate(self, dataset: Any, prefix: str = "val") -> dict[str, Any]:
        """Metrics of ``dataset``, identical on every rank. Under torchrun with DDP, a task that declares
        ``evaluation_gathers_ranks`` has each rank run only its contiguous share of the evaluation batches, with the
        plain module (no DDP collective can then wait on a rank with fewer batches), and its ``evaluate`` gathers every
        rank's rows (``across_ranks``) inside ``gathering_ranks()``. Otherwise every rank evaluates the whole set (FSDP
        needs all ranks in each forward; a task that does not declare it does not gather)."""
        batch_size = self.cfg.eval_batch_size or self.cfg.batch_size
        sharded = self._shards_evaluation()
        share = (self.env.rank, self.env.world_size) if sharded else (0, 1)
        batches = eval_loader(dataset, batch_size, self.task.collate, *self._loading(dataset), *share)
        loader = (self._to_device(b) for b in batches)
        model = self._evaluation_model() if sharded else self.train_model
        if sharded:  # what DDP's first evaluation forward would have done: every rank evaluates rank 0's buffers
            dist_utils.broadcast_buffers(self.model, self.env)
        was_training = model.training
        model.eval()
        try:
            with self._autocast(), (gathering_ranks() if sharded else contextlib.nullcontext()) as gather:
                metrics = self.task.evaluate(model, loader)
        finally:
            model.train(was_training)
        if sharded and gather.gathers != 1:  # every rank fails alike: the task's evaluate is deterministic code
            raise TrainingError(f"task {self.task.name!r} declares evaluation_gathers_ranks, but its evaluate gathered "
                                f"the ranks' rows {gather.gathers} times instead of once (tasks.metrics.across_ranks)")
        return {f"{prefix}_{k}": v for k, v in metrics.items()}

    def _evaluation_model(self) -> nn.Module:
        """The plain module a sharded evaluation runs: compiled once, on first use, when ``train.compile`` is on (the
        compiled module shares the trained parameters, so it always scores the current weights)."""
        if not self.cfg.compile:
            return self.model
        if self._compiled_for_evaluation is None:
            self._compiled_for_evaluation = self._compiled(self.model, self.cfg.compile_backend)
        return self._compiled_for_evaluation

    def _shards_evaluation(self) -> bool:
        """Whether each rank evaluates only its share (see ``evaluate``)."""
        return self.env.enabled and self.cfg.strategy == "ddp" and self.task.evaluation_gathers_ranks

    def _log_eval(self, metrics: dict[str, Any]) -> dict[str, float]:
        self.last_eval, self.last_eval_step = metrics, self.step
        floats = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        self.metrics_log.write({"step": self.step, "epoch": self.epoch, "event": "eval", **floats})
        for cb in self.callbacks:
            cb.on_eval_end(self, metrics)
        return floats

    def _after_eval(self, metrics: dict[str, Any]) -> None:
        floats = self._log_eval(metrics)
        stopper = self.cfg.early_stopping
        if stopper is None:
            return
        if stopper.metric not in metrics:
            raise TrainingError(
                f"train.early_stopping.metric {stopper.metric!r} is not logged; evaluation gives: {', '.join(floats)}"
            )
        value = float(metrics[stopper.metric])
        better = (
            self.best is None
            or (stopper.mode == "min" and value < self.best - stopper.min_delta)
            or (stopper.mode == "max" and value > self.best + stopper.min_delta)
        )
        if better:
            self.best, self.bad_evals = value, 0
            if stopper.restore_best:
                self.best_weights = ckpt.plain_tensors(dist_utils.full_model_state(self.model))
                finite = {k: v for k, v in floats.items() if math.isfinite(v)}  # JSON-safe, like metrics.jsonl
                self.best_eval = {"step": self.step, "epoch": self.epoch, **finite}
        elif (not self.cfg.min_steps or self.step >= self.cfg.min_steps) and self._clearly_worse(value, metrics):
            self.bad_evals += 1  # no stopping inside the guaranteed steps, nor on a miss within the noise
            if self.bad_evals >= stopper.patience:
                self.stop_reason = f"early stopping: {stopper.metric} did not improve for {stopper.patience} evals"

    def _clearly_worse(self, value: float, metrics: dict[str, Any]) -> bool:
        """Whether an evaluation that did not improve on the best misses it by more than chance explains: on a
        validation set of a few dozen rows one row's flip moves the accuracy by several points, so a miss counts
        against patience only beyond ``noise_allowance`` standard errors (``<metric>_se``) of the metric."""
        stopper = self.cfg.early_stopping
        allowance = stopper.noise_allowance * float(metrics.get(f"{stopper.metric}_se") or 0.0)
        if allowance <= 0:
            return True
        target = self.best - stopper.min_delta if stopper.mode == "min" else self.best + stopper.min_delta
        gap = value - target if stopper.mode == "min" else target - value
        return gap > allowance

    def _to_device(self, batch: Any) -> Any:
        batch = move_to(batch, self.device)
        return to_channels_last(batch) if self.channels_last else batch

    # ---- one optimiser step -----------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.cfg.precision)
        return torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def _step_optimizer(self, optimizer: torch.optim.Optimizer, params: Any, lr: float) -> None:
        """The one optimiser step of both paths (one optimiser, or a group of several): unscale (fp16), clip
        ``params`` to ``train.grad_clip``, set the lr, step."""
        if self.scaler:
            self.scaler.unscale_(optimizer)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        set_lr(optimizer, lr)
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def _optimizer_step(self, total: int) -> float:
        lr = lr_at(self.step, total, self.cfg)
        self._step_optimizer(self.optimizer, self.model.parameters(), lr)
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return lr

    def _diverged(self, loss: torch.Tensor) -> None:
        found = ckpt.list_checkpoints(self.checkpoint_dir)
        keep = f"; last good checkpoint: {found[-1]}" if found else "; no checkpoint was written before it"
        raise TrainingError(
            f"loss became {loss.item()} at step {self.step + 1} (epoch {self.epoch + 1}); training stopped{keep}. "
            "Lower train.lr, set train.grad_clip, or check the data"
        )

    # ---- several optimisers (GAN) -----------------------------------------------------------------------------
    def _optimizer_groups(self) -> dict[str, torch.optim.Optimizer] | None:
        """One optimiser (same train.* settings) per group the task declares; None for single-optimiser tasks."""
        groups = self.task.optimizer_groups(self.model)
        if groups is None:
            return None
        cfg, privacy_on = self.cfg, self.task.recipe.privacy is not None
        unsupported = [what for what, bad in (
            (f"train.grad_accum={cfg.grad_accum}", cfg.grad_accum > 1),
            ("train.strategy=fsdp", cfg.strategy == "fsdp"),
            (f"training in {self.env.world_size} processes", self.env.enabled),
            ("a privacy section (DP-SGD)", privacy_on),
        ) if bad]
        if unsupported:
            raise ConfigError(f"task {self.task.name!r} trains with several optimisers ({', '.join(groups)}); "
                              f"{unsupported[0]} is not supported for it")
        empty = [name for name, params in groups.items() if not list(params)]
        if not groups or empty:
            raise ConfigError(f"task {self.task.name!r} declares optimiser groups without parameters: {empty}")
        if cfg.compile:
            warnings.warn("train.compile is not applied to multi-optimiser tasks; training eagerly", stacklevel=3)
            self.train_model = self.model
        return {name: build_optimizer(params, cfg) for name, params in groups.items()}

    def _full_optimizer_state(self) -> dict[str, Any]:
        if self.optimizers is None:
            return dist_utils.full_optimizer_state(self.model, self.optimizer)
        return {"optimizers": {name: dist_utils.full_optimizer_state(self.model, optimizer)
                               for name, optimizer in self.optimizers.items()}}

    def _load_optimizer_state(self, state: dict[str, Any]) -> None:
        groups = state.get("optimizers")
        mine = sorted(self.optimizers or [])
        if sorted(groups or []) != mine:
            raise TrainingError(f"the checkpoint holds optimiser groups {sorted(groups or []) or ['(one)']}, this "
                                f"task trains {mine or ['(one)']}; resume with the recipe that wrote it")
        if groups is None:
            dist_utils.load_full_optimizer_state(self.model, self.optimizer, state)
            return
        for name, optimizer in self.optimizers.items():
            dist_utils.load_full_optimizer_state(self.model, optimizer, groups[name])

    def _multi_optimizer_step(self, splits: Splits, batch: Any, total: int, progress: Progress,
                              window: dict[str, Any], n_batches: int) -> bool:
        """One batch of a multi-optimiser task, counted as one trainer step: for each (group, StepOutput) that
        ``task.training_steps`` yields, backward, clip, set the lr, step that group's optimiser and clear every
        gradient, then resume the task's generator, so the generator's loss is computed against the discriminator
        that was just updated. Returns True when the epoch loop should stop."""
        lr = lr_at(self.step, total, self.cfg)
        if window["micro"] == 0:  # a fresh logging window: restart the per-group sums
            window.update({f"loss_{name}": 0.0 for name in self.optimizers})
        steps = self.task.training_steps(self.model, batch)
        while True:
            with self._autocast():
                item = next(steps, None)
            if item is None:
                break
            name, out = item
            optimizer = self.optimizers.get(name)
            if optimizer is None:
                raise TrainingError(f"task {self.task.name!r} yielded a step for optimiser group {name!r}; "
                                    f"its groups are {', '.join(self.optimizers)}")
            loss = out.loss.detach()
            if not torch.isfinite(loss):
                self._diverged(loss)
            self._backward(out.loss)
            self._step_optimizer(optimizer, [p for group in optimizer.param_groups for p in group["params"]], lr)
            # every gradient, not only this group's: the generator's loss also fills the discriminator's gradients
            self.model.zero_grad(set_to_none=True)
            window["loss"] += loss.item()
            window[f"loss_{name}"] += loss.item()
        self.step += 1
        self.position += 1
        window["micro"] += 1
        window["samples"] += self.task.batch_size_of(batch)
        last_in_epoch = self.position == n_batches
        if last_in_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        self._after_step(splits, total, progress, lr, window, last_in_epoch)
        return self.step >= total or self.stop_reason is not None or last_in_epoch

    # ---- the loop ---------------------------------------------------------------------------------------------
    def fit(self, splits: Splits, resume: bool = False) -> dict[str, Any]:
        fitted = self.task.fit_directly(self.model, splits)
        if fitted is not None:
            return self._fitted_directly(splits, fitted)
        if resume:
            self.resume()
        total = self.total_steps(len(splits.train))
        epochs = self.planned_epochs(len(splits.train))
        progress = Progress(self.cfg.progress if self.env.is_main else "off", total)
        for cb in self.callbacks:
            cb.on_train_start(self)
        self.train_model.train()
        try:
            while self.epoch < epochs and self.step < total and not self.stop_reason:
                self._run_epoch(splits, total, progress)
            self.save_checkpoint()
        finally:
            if self.channels_last:  # what is evaluated, saved and exported after training has the ordinary layout
                set_layout(self.model, False)
                self.channels_last = False
            progress.update(self.step, max(0, self.epoch - 1), {}, force=True)
            progress.close()
        summary: dict[str, Any] = {"steps": self.step, "epochs": self.epoch, "stop_reason": self.stop_reason,
                                   "world_size": self.env.world_size}
        last = {k: v for k, v in self.last_eval.items() if isinstance(v, (int, float))}
        if last:  # what a run without a test split reports (modelforge train prints it)
            summary["last_eval"] = {"step": self.last_eval_step, **last}
        if self.best_weights is not None:
            dist_utils.load_full_model_state(self.model, self.best_weights)
            summary["restored_best"] = self.best_eval  # the saved model's figures, not the last evaluation's
        for cb in self.callbacks:
            cb.on_train_end(self)
        return summary

    def _fitted_directly(self, splits: Splits, fitted: dict[str, Any]) -> dict[str, Any]:
        """A model the task fitted without gradient steps (``Task.fit_directly``): evaluated on the validation split
        and checkpointed like a trained one (a resumed run fits it again: the fit is deterministic and cheap)."""
        for cb in self.callbacks:
            cb.on_train_start(self)
        if splits.val is not None:  # logged, but no early-stopping bookkeeping: there is one model, not a best one
            self._log_eval(self.evaluate(splits.val))
        self.save_checkpoint()
        for cb in self.callbacks:
            cb.on_train_end(self)
        return {"steps": self.step, "epochs": self.epoch, "stop_reason": None, "world_size": self.env.world_size,
                "fitted": fitted}

    def _run_epoch(self, splits: Splits, total: int, progress: Progress) -> None:
        cfg = self.cfg
        batches = (self.privacy.epoch_batches(len(splits.train), total, self.epoch) if self.privacy  # Poisson plan
                   else epoch_order(len(splits.train), cfg.batch_size, cfg.seed, self.epoch))
        mine = [dist_utils.shard(b, self.env) for b in batches[self.position :]]
        window = {"loss": 0.0, "micro": 0, "samples": 0, "start": time.perf_counter()}
        for batch in iterate(splits.train, mine, self.task.collate, *self._loading(splits.train)):
            batch = self._to_device(batch)
            if self.optimizers is not None:  # several optimisers (GAN): one batch = one step of each, in order
                if self._multi_optimizer_step(splits, batch, total, progress, window, len(batches)):
                    break
                continue
            with self._autocast():
                out = (self.privacy.empty_step() if self.privacy and privacy.is_empty(self.task, batch)
                       else self.task.training_step(self.train_model, batch))
            loss = dist_utils.all_reduce_mean(out.loss.detach(), self.env)
            if not torch.isfinite(loss):
                self._diverged(loss)
            group_start = (self.position // cfg.grad_accum) * cfg.grad_accum
            group_end = min(len(batches), group_start + cfg.grad_accum)
            self._backward(out.loss / (group_end - group_start))
            self.position += 1
            window["loss"] += loss.item()
            window["micro"] += 1
            window["samples"] += self.task.batch_size_of(batch) * self.env.world_size
            if self.position < group_end:
                continue
            lr = self._optimizer_step(total)
            last_in_epoch = self.position == len(batches)
            if last_in_epoch:
                self.epoch, self.position = self.epoch + 1, 0
            self._after_step(splits, total, progress, lr, window, last_in_epoch)
            if self.step >= total or self.stop_reason or last_in_epoch:
                break

    def _after_step(self, splits: Splits, total: int, progress: Progress, lr: float, window: dict[str, Any],
                    last_in_epoch: bool) -> None:
        cfg = self.cfg
        info = {"loss": window["loss"] / window["micro"], "lr": lr}
        info.update({k: v / window["micro"] for k, v in window.items() if k.startswith("loss_")})  # per group
        if self.step % cfg.log_every_steps == 0 or last_in_epoch or self.step == total:
            elapsed = time.perf_counter() - window["start"]
            info["samples_per_s"] = window["samples"] / elapsed if elapsed > 0 else 0.0
            self.metrics_log.write({"step": self.step, "epoch": self.epoch, "event": "train", **info})
            window.update(loss=0.0, micro=0, samples=0, start=time.perf_counter())
        progress.update(self.step, self.epoch - 1 if last_in_epoch else self.epoch, info)
        for cb in self.callbacks:
            cb.on_step_end(self, info)
        every = cfg.eval_every_steps
        if splits.val is not None and (last_in_epoch or (every and self.step % every == 0)):
            self._after_eval(self.evaluate(splits.val))
        if last_in_epoch:
            progress.epoch_end(self.epoch - 1, self.step, {**info, **self.last_eval})
        if cfg.checkpoint_every_steps and self.step % cfg.checkpoint_every_steps == 0:
            self.save_checkpoint()
