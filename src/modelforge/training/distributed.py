"""Distributed training on PyTorch's own engine: torchrun sets the environment, this module reads it.

- ``setup()`` initialises the process group from torchrun's variables (gloo on CPU, nccl on GPU).
- ``wrap()`` applies the strategy: DDP, or FSDP2 ``fully_shard`` on every block and then the root.
- ``full_model_state`` / ``full_optimizer_state`` gather full (unsharded) state dicts, so checkpoints written by any
  world size load in a single process and resume under another world size.
- ``launch()`` re-executes ``modelforge train`` under torchrun for ``--nproc N``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from modelforge.core.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_from_torchrun() -> DistEnv:
    return DistEnv(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def setup(device: torch.device) -> DistEnv:
    env = env_from_torchrun()
    if env.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group(backend=backend)
    return env


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", env_from_torchrun().local_rank)
    return torch.device("cpu")


def block_modules(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a model (sharding and activation-checkpointing units): modules named ``*Block``."""
    units = getattr(model, "block_modules", None)
    if callable(units):
        return list(units())
    return [m for m in model.modules() if m is not model and type(m).__name__.endswith("Block")]


def wrap(model: nn.Module, strategy: str, env: DistEnv, device: torch.device) -> nn.Module:
    """The module the training loop calls; the unwrapped one keeps serving state dicts and artifacts."""
    if not env.enabled or strategy == "single":
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in block_modules(model):
            fully_shard(block)
        fully_shard(model)
        return model
    raise ConfigError(f"unknown train.strategy {strategy!r}; valid: single, ddp, fsdp")


def _options(cpu_offload: bool = True):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full state dict of a plain, DDP-wrapped or FSDP-sharded module (collective: call on every rank)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options())


def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state, options=_options(cpu_offload=False))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Optimiser state keyed by parameter names (not positions), gathered in full (collective)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options())


def load_full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    if not state.get("state"):
        # An optimiser without per-parameter state (plain SGD) has nothing to place on a device, and
        # set_optimizer_state_dict fails on it ("Expected device to be set"); only its hyperparameters matter.
        for group, saved in zip(optimizer.param_groups, state.get("param_groups", [])):
            group.update({k: v for k, v in saved.items() if k != "params"})
        return
    set_optimizer_state_dict(model, optimizer, state, options=_options(cpu_offload=False))


def all_reduce_mean(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if not env.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / env.world_size


def broadcast_buffers(model: nn.Module, env: DistEnv) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank (collective). Each rank's training forwards
    update its own from its share of the batch; DDP copies rank 0's over them at the start of its next forward, so
    a forward of the plain module in between would otherwise run with this rank's own figures rather than those of
    rank 0, which checkpoints and the artifact hold."""
    if not env.enabled:
        return
    with torch.no_grad():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def teardown(env: DistEnv) -> None:
    """Leave the process group cleanly: a process that exits with gloo still set up can abort during shutdown."""
    if env.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(indices: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """This rank's contiguous share of a global batch (equal shares when the batch divides by the world size)."""
    if not env.enabled:
        return indices
    return indices.tensor_split(env.world_size)[env.rank]


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``modelforge <argv>`` under torchrun with ``nproc`` processes on this node."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    runner = shutil.which("torchrun")
    prefix = [runner] if runner else [sys.executable, "-m", "torch.distributed.run"]
    command = [*prefix, "--standalone", f"--nproc_per_node={nproc}", "-m", "modelforge", *argv]
    return subprocess.call(command)
