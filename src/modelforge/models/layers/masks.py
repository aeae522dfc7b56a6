"""Masks over padded sequences."""

from __future__ import annotations

import torch


def length_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """(batch, max_length) boolean mask, True on the first ``lengths[b]`` steps of row ``b``."""
    return torch.arange(max_length, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)
