"""In-memory datasets whose batches are gathered with one index operation (no per-item Python work)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset


class TensorDataset(Dataset):
    """Aligned tensors indexed together; ``get_batch(indices)`` returns a tuple of batched tensors."""

    def __init__(self, *tensors: torch.Tensor):
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("TensorDataset needs tensors of equal first dimension")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def get_batch(self, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, ...]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[idx] for t in self.tensors)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> TensorDataset:
        return TensorDataset(*self.get_batch(indices))
