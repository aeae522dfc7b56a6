"""Deletion curves: a faithfulness measure for image attributions (Samek et al. 2017; Petsiuk et al. 2018, RISE).

Remove the k % of pixels an explanation ranks highest (set them to the baseline) and measure the accuracy that is
left; do the same with pixels in random order. If the attribution points at the pixels the model relies on,
accuracy falls faster than with random removal. The area under the curve (mean accuracy over the k grid)
summarises it: lower is more faithful.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class DeletionCurve:
    fractions: list[float]
    accuracy: list[float]

    @property
    def area(self) -> float:
        """Normalised area under the curve (trapezoid over the fractions, divided by their span)."""
        span = self.fractions[-1] - self.fractions[0]
        return float(np.trapezoid(self.accuracy, self.fractions) / span) if span > 0 else float(self.accuracy[0])


def pixel_order(scores: torch.Tensor, random: bool = False, seed: int = 0) -> torch.Tensor:
    """Per image, pixel indices (flattened H·W) from most to least attributed — or in a random order."""
    n, pixels = scores.shape[0], scores[0].numel()
    if random:
        generator = torch.Generator().manual_seed(seed)
        return torch.stack([torch.randperm(pixels, generator=generator) for _ in range(n)])
    return scores.reshape(n, -1).argsort(dim=1, descending=True, stable=True)


@torch.no_grad()
def deletion_curve(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    order: torch.Tensor,
    baseline: torch.Tensor,
    fractions: Sequence[float],
    batch_size: int = 500,
) -> DeletionCurve:
    """Accuracy of ``forward`` on ``images`` (B, C, H, W) after setting the first ``fraction`` of each image's
    ``order`` (B, H·W) to ``baseline`` (all channels of a pixel together), for each fraction."""
    n, channels, height, width = images.shape
    pixels = height * width
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(pixels).expand(n, -1).contiguous())  # rank of each pixel per image
    accuracy = []
    for fraction in fractions:
        removed = (ranks < int(round(fraction * pixels))).view(n, 1, height, width)
        correct = 0
        for start in range(0, n, batch_size):
            part = slice(start, start + batch_size)
            x = torch.where(removed[part], baseline[part], images[part])
            correct += int((forward(x).argmax(-1) == labels[part]).sum())
        accuracy.append(correct / n)
    return DeletionCurve([float(f) for f in fractions], accuracy)
