"""The Trainer: the one training loop every task runs through.

It owns the optimiser and schedule, gradient accumulation and clipping, bf16 autocast, evaluation every epoch (and
every N steps), early stopping, the progress display, ``metrics.jsonl``, and atomic checkpoints with exact resume:
weights, optimiser state, RNG states and the data-order position are all restored, so a run killed at any step and
resumed ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modelforge.core.config import TrainConfig
from modelforge.core.errors import TrainingError
from modelforge.core.seed import rng_state, set_rng_state
from modelforge.tasks.base import Splits, Task
from modelforge.training import checkpoint as ckpt
from modelforge.training.batches import epoch_order, eval_loader, iterate, move_to
from modelforge.training.callbacks import Callback
from modelforge.training.loggers import MetricsLog, Progress
from modelforge.training.optim import build_optimizer, lr_at, set_lr


class Trainer:
    def __init__(
        self,
        task: Task,
        model: nn.Module,
        cfg: TrainConfig,
        run_dir: Path,
        callbacks: Iterable[Callback] = (),
        device: str | torch.device = "cpu",
    ):
        self.task, self.model, self.cfg, self.run_dir = task, model, cfg, Path(run_dir)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.callbacks = list(callbacks)
        self.optimizer = build_optimizer(self.model.parameters(), cfg)
        self.metrics_log = MetricsLog(self.run_dir / "metrics.jsonl")
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.step = 0
        self.epoch = 0
        self.position = 0  # micro-batches of the current epoch already consumed
        self.best: float | None = None
        self.bad_evals = 0
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.stop_reason: str | None = None
        self.last_eval: dict[str, Any] = {}

    # ---- sizes ------------------------------------------------------------------------------------------------
    def steps_per_epoch(self, n_train: int) -> int:
        micro = math.ceil(n_train / self.cfg.batch_size)
        return math.ceil(micro / self.cfg.grad_accum)

    def total_steps(self, n_train: int) -> int:
        total = self.steps_per_epoch(n_train) * self.cfg.epochs
        return min(total, self.cfg.max_steps) if self.cfg.max_steps else total

    # ---- checkpoints ------------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "rng": rng_state(),
            "best": self.best,
            "bad_evals": self.bad_evals,
            "stop_reason": self.stop_reason,
        }

    def save_checkpoint(self) -> Path:
        extras = {"best": self.best_weights} if self.best_weights is not None else None
        return ckpt.save_checkpoint(
            self.checkpoint_dir, self.step, self.model, self.optimizer, self._state(), extras, self.cfg.keep_checkpoints
        )

    def resume(self) -> bool:
        """Restore the latest complete checkpoint; False when there is none."""
        ckpt.clean_partial(self.checkpoint_dir)
        found = ckpt.list_checkpoints(self.checkpoint_dir)
        if not found:
            return False
        state, extras = ckpt.load_checkpoint(found[-1], self.model, self.optimizer)
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.best, self.bad_evals, self.stop_reason = state["best"], state["bad_evals"], state.get("stop_reason")
        self.best_weights = extras.get("best")
        set_rng_state(state["rng"])
        self.metrics_log.truncate_after(self.step)
        return True

    # ---- evaluation and early stopping ------------------------------------------------------------------------
    def evaluate(self, dataset: Any, prefix: str = "val") -> dict[str, Any]:
        batch_size = self.cfg.eval_batch_size or self.cfg.batch_size
        loader = (move_to(b, self.device) for b in eval_loader(dataset, batch_size, self.task.collate))
        was_training = self.model.training
        self.model.eval()
        try:
            with self._autocast():
                metrics = self.task.evaluate(self.model, loader)
        finally:
            self.model.train(was_training)
        return {f"{prefix}_{k}": v for k, v in metrics.items()}

    def _after_eval(self, metrics: dict[str, Any]) -> None:
        self.last_eval = metrics
        floats = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        self.metrics_log.write({"step": self.step, "epoch": self.epoch, "event": "eval", **floats})
        for cb in self.callbacks:
            cb.on_eval_end(self, metrics)
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
                self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.bad_evals += 1
            if self.bad_evals >= stopper.patience:
                self.stop_reason = f"early stopping: {stopper.metric} did not improve for {stopper.patience} evals"

    # ---- the loop ---------------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _optimizer_step(self, total: int) -> float:
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        lr = lr_at(self.step, total, self.cfg)
        set_lr(self.optimizer, lr)
        self.optimizer.step()
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

    def fit(self, splits: Splits, resume: bool = False) -> dict[str, Any]:
        cfg = self.cfg
        if resume:
            self.resume()
        n_train = len(splits.train)
        total = self.total_steps(n_train)
        progress = Progress(cfg.progress, total)
        for cb in self.callbacks:
            cb.on_train_start(self)
        self.model.train()
        window_loss, window_micro, window_n, window_t = 0.0, 0, 0, time.perf_counter()
        try:
            while self.epoch < cfg.epochs and self.step < total and not self.stop_reason:
                batches = epoch_order(n_train, cfg.batch_size, cfg.seed, self.epoch)
                stream = iterate(splits.train, batches[self.position :], self.task.collate, cfg.num_workers)
                for batch in stream:
                    batch = move_to(batch, self.device)
                    with self._autocast():
                        out = self.task.training_step(self.model, batch)
                    if not torch.isfinite(out.loss):
                        self._diverged(out.loss)
                    group_end = min(len(batches), (self.position // cfg.grad_accum + 1) * cfg.grad_accum)
                    group_size = group_end - (self.position // cfg.grad_accum) * cfg.grad_accum
                    (out.loss / group_size).backward()
                    self.position += 1
                    window_loss += out.loss.item()
                    window_micro += 1
                    window_n += self.task.batch_size_of(batch)
                    if self.position < group_end:
                        continue
                    lr = self._optimizer_step(total)
                    last_in_epoch = self.position == len(batches)
                    if last_in_epoch:
                        self.epoch, self.position = self.epoch + 1, 0
                    info = {"loss": window_loss / window_micro, "lr": lr}
                    if self.step % cfg.log_every_steps == 0 or last_in_epoch or self.step == total:
                        elapsed = time.perf_counter() - window_t
                        info["samples_per_s"] = window_n / elapsed if elapsed > 0 else 0.0
                        self.metrics_log.write({"step": self.step, "epoch": self.epoch, "event": "train", **info})
                        window_loss, window_micro, window_n, window_t = 0.0, 0, 0, time.perf_counter()
                    progress.update(self.step, self.epoch if not last_in_epoch else self.epoch - 1, info)
                    for cb in self.callbacks:
                        cb.on_step_end(self, info)
                    due_eval = splits.val is not None and (
                        last_in_epoch or (cfg.eval_every_steps and self.step % cfg.eval_every_steps == 0)
                    )
                    if due_eval:
                        self._after_eval(self.evaluate(splits.val))
                    if last_in_epoch:
                        progress.epoch_end(self.epoch - 1, self.step, {**info, **self.last_eval})
                    if cfg.checkpoint_every_steps and self.step % cfg.checkpoint_every_steps == 0:
                        self.save_checkpoint()
                    if self.step >= total or self.stop_reason:
                        break
                    if last_in_epoch:
                        break
            self.save_checkpoint()
        finally:
            progress.update(self.step, max(0, self.epoch - 1), {}, force=True)
            progress.close()
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        for cb in self.callbacks:
            cb.on_train_end(self)
        return {"steps": self.step, "epochs": self.epoch, "stop_reason": self.stop_reason}
