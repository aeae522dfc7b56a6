"""Deterministic batching: the order of epoch ``e`` depends only on (seed, e), so a resumed run skips exactly the
micro-batches already consumed and sees the same data in the same order as an uninterrupted one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


def epoch_order(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True) -> list[torch.Tensor]:
    if shuffle:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.arange(n)
    return list(order.split(batch_size))


def iterate(
    dataset: Dataset, batches: list[torch.Tensor], collate: Callable[[list[Any]], Any], num_workers: int = 0
) -> Iterator[Any]:
    """Yield batches; in-memory datasets with ``get_batch`` gather each batch with one index operation."""
    if num_workers > 0:
        loader = DataLoader(dataset, batch_sampler=[b.tolist() for b in batches], collate_fn=collate,
                            num_workers=num_workers)
        yield from loader
        return
    get_batch = getattr(dataset, "get_batch", None)
    for indices in batches:
        yield get_batch(indices) if get_batch else collate([dataset[i] for i in indices.tolist()])


def eval_loader(dataset: Dataset, batch_size: int, collate: Callable[[list[Any]], Any]) -> list[Any] | Iterator[Any]:
    return iterate(dataset, epoch_order(len(dataset), batch_size, 0, 0, shuffle=False), collate)


def move_to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    return batch
