"""Deterministic batching: the order of epoch ``e`` depends only on (seed, e), so a resumed run skips exactly the
micro-batches already consumed and sees the same data in the same order as an uninterrupted one.

Datasets read from disk (``loads_from_disk``) get DataLoader workers by default: each worker decodes whole batches
of the fixed plan, the loader hands them back in plan order and keeps ``prefetch_factor`` batches per worker ready,
so the data is the same with any number of workers. The loader draws its workers' base seed from its own fixed
generator, never from the global RNG, whose state (dropout, augmentation) is what a checkpoint restores.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from modelforge.core.errors import DataError
from modelforge.training.worker_lifetime import DieWithParent

PREFETCH_BATCHES = 2  # batches each worker keeps decoded ahead of the training step


MIN_ITEMS_FOR_WORKERS = 1000  # smaller sets read from disk decode in the main process by default


def default_workers(dataset: Dataset, requested: int | None) -> int:
    """``train.num_workers``, or when unset: min(4, usable CPUs - 1) for a dataset read from disk on a machine of
    3 or more CPUs; 0 for one in memory (gathering a batch from tensors is faster than shipping it from another
    process), for one of fewer than MIN_ITEMS_FOR_WORKERS items (workers start anew each epoch and evaluation, which
    costs more than decoding a few hundred images: a small folder trained for hundreds of one-batch epochs would
    spend its time forking) and on 1-2 CPUs, where a worker takes a core the step's compute threads are using: on
    2 cores, 28×28 PNGs decoded by one worker trained at 0.78-0.83 of the in-memory speed, decoded between steps in
    the training process at 0.9 and more (benchmarks/data_scale.py)."""
    if requested is not None:
        return requested
    if not getattr(dataset, "loads_from_disk", False) or len(dataset) < MIN_ITEMS_FOR_WORKERS:
        return 0
    cpus = usable_cpus()
    return 0 if cpus <= 2 else min(4, cpus - 1)


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's share, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def epoch_order(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True) -> list[torch.Tensor]:
    if shuffle:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.arange(n)
    return list(order.split(batch_size))


def _worker_error(exc: Exception) -> DataError | None:
    """A DataError raised in a worker comes back with the worker's traceback in its message: keep its one line."""
    if not isinstance(exc, DataError):
        return None
    lines = str(exc).strip().splitlines()
    return DataError(lines[-1].split("DataError: ", 1)[-1] if lines else str(exc))


class _WithSkips:
    """A worker's collate that also hands back the files its dataset skipped since the last batch (see
    data/first_touch.py); a class, not a closure, so that it pickles for any worker start method."""

    def __init__(self, collate: Callable[[list[Any]], Any], skips: Any):
        self.collate, self.skips = collate, skips

    def __call__(self, items: list[Any]) -> tuple[Any, list[str]]:
        return self.collate(items), self.skips.take()


def iterate(
    dataset: Dataset, batches: list[torch.Tensor], collate: Callable[[list[Any]], Any], num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[Any]:
    """Yield batches; in-memory datasets with ``get_batch`` gather each batch with one index operation."""
    if num_workers > 0 and batches:
        skips = getattr(dataset, "skips", None)  # files found unreadable in a worker travel back with the batch
        loader = DataLoader(dataset, batch_sampler=[b.tolist() for b in batches],
                            collate_fn=collate if skips is None else _WithSkips(collate, skips),
                            num_workers=num_workers, pin_memory=pin_memory, prefetch_factor=PREFETCH_BATCHES,
                            generator=torch.Generator().manual_seed(0), worker_init_fn=DieWithParent())
        try:
            for batch in loader:
                if skips is not None:
                    batch, found = batch
                    skips.note(found)
                yield batch
        except DataError as exc:
            raise _worker_error(exc) from None
        return
    get_batch = getattr(dataset, "get_batch", None)
    get_items = getattr(dataset, "__getitems__", None)  # a batch at once, as DataLoader asks its workers
    for indices in batches:
        if get_batch:
            yield get_batch(indices)
        else:
            yield collate(get_items(indices.tolist()) if get_items else [dataset[i] for i in indices.tolist()])


def eval_loader(dataset: Dataset, batch_size: int, collate: Callable[[list[Any]], Any], num_workers: int = 0,
                pin_memory: bool = False, rank: int = 0, world_size: int = 1) -> list[Any] | Iterator[Any]:
    """The batches of ``dataset`` in order; with ``world_size`` > 1, only rank ``rank``'s share: see eval_share."""
    batches = eval_share(epoch_order(len(dataset), batch_size, 0, 0, shuffle=False), rank, world_size)
    return iterate(dataset, batches, collate, num_workers, pin_memory)


def eval_share(batches: list[torch.Tensor], rank: int, world_size: int) -> list[torch.Tensor]:
    """Rank ``rank``'s contiguous run of whole ``batches`` (shares differ by at most one batch; a rank may get none
    when there are fewer batches than ranks). The shares one after another are ``batches``: each rank runs exactly
    the batches one process runs, so a gathered evaluation equals the single-process one row for row."""
    return [batches[i] for i in torch.arange(len(batches)).tensor_split(world_size)[rank].tolist()]


def move_to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    return batch
