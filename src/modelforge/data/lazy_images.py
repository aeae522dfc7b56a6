"""Image datasets read from disk item by item: an index of paths and labels in memory, the pixels decoded, resized
and converted in ``__getitem__`` — so memory stays flat however many images the folder holds, and DataLoader
workers decode in parallel with the training step.

Items are a pure function of the index (no random transform happens here; the task's augmentation runs on the
batch with the trainer's restored RNG), so the batches are identical with any number of workers and a resumed run
sees exactly the data of an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from modelforge.data.formats.image_folder import decode_center_crop, decode_image
from modelforge.data.transforms import load_image

STATISTICS_SAMPLE = 512  # images decoded to estimate the training mean/std (all of them in a smaller folder)


class LabelledPixels(Dataset):
    """What every labelled image dataset read per item shares: ``labels`` (int64 numpy), ``channels``, ``size`` and
    a ``__getitem__`` giving ``(uint8 (C, size, size), label)``."""

    labels: np.ndarray
    channels: int
    size: int

    @property
    def targets(self) -> torch.Tensor:
        return torch.from_numpy(self.labels)

    def pixels(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """The decoded images at ``indices`` as one (n, C, size, size) uint8 tensor."""
        return torch.stack([self[int(i)][0] for i in indices]) if len(indices) else torch.zeros(
            0, self.channels, self.size, self.size, dtype=torch.uint8)


class ImageFileDataset(LabelledPixels):
    """``(uint8 (C, size, size) tensor, int64 label)`` per item, decoded from ``base / paths[i]`` when asked."""

    loads_from_disk = True  # the trainer gives such datasets DataLoader workers by default (train.num_workers)

    def __init__(self, base: Path, paths: np.ndarray, labels: np.ndarray, channels: int, size: int,
                 resize: int | None = None):
        """``resize``: shorter side to it, then the centre ``size`` square (ImageNet evaluation); None: the whole
        image resized to the square."""
        if len(paths) != len(labels):
            raise ValueError("ImageFileDataset needs as many labels as paths")
        self.base, self.channels, self.size, self.resize = Path(base), channels, size, resize
        self.paths = np.asarray(paths, dtype=np.bytes_)
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> Path:
        return self.base / self.paths[index].decode("utf-8", "surrogateescape")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.resize is None:
            pixels = decode_image(self.path(index), self.channels, self.size)
        else:
            pixels = decode_center_crop(load_image(self.path(index)), self.size, self.resize)
        return torch.tensor(pixels), torch.tensor(self.labels[index])  # a copy: Pillow's buffer is read-only

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageFileDataset:
        picked = np.asarray(indices, dtype=np.int64)
        return ImageFileDataset(self.base, self.paths[picked], self.labels[picked], self.channels, self.size,
                                self.resize)



def spread(n: int, count: int) -> np.ndarray:
    """``count`` evenly spaced indices of ``range(n)`` (all of them when ``n <= count``)."""
    if n <= count:
        return np.arange(n)
    return np.linspace(0, n - 1, count).round().astype(np.int64)


def channel_statistics(dataset: ImageFileDataset, sample: int = STATISTICS_SAMPLE) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of pixels / 255 over up to ``sample`` evenly spaced images — the same figures the
    in-memory path computes over the whole split when the folder holds no more images than that.

    Under torchrun each rank decodes only its contiguous share of the sample and the ranks add up their sums. The
    sums are exact integers (of uint8 pixels), so every rank, and any world size, gets the same figures bit for bit.
    """
    picked = spread(len(dataset), sample)
    rank, world = _process_group()
    counts = [0] * (1 + 2 * dataset.channels)  # pixels per channel, then each channel's sum, then its sum of squares
    for index in np.array_split(picked, world)[rank].tolist():
        pixels = dataset[index][0].reshape(dataset.channels, -1).to(torch.int64)
        counts[0] += pixels.shape[1]
        for c, (total, squares) in enumerate(zip(pixels.sum(1).tolist(), pixels.square().sum(1).tolist())):
            counts[1 + c] += total
            counts[1 + dataset.channels + c] += squares
    if world > 1:
        import torch.distributed as dist

        gathered: list[list[int]] = [[] for _ in range(world)]
        dist.all_gather_object(gathered, counts)  # Python ints: no overflow, any backend
        counts = [sum(column) for column in zip(*gathered)]
    n, sums, squares = max(counts[0], 1), counts[1 : 1 + dataset.channels], counts[1 + dataset.channels :]
    mean = [total / n / 255 for total in sums]
    # the unbiased variance, as torch.std gives, from exact integers: (n Σx² − (Σx)²) / (n (n − 1))
    std = [math.sqrt((n * sq - total * total) / (n * max(n - 1, 1))) / 255 for total, sq in zip(sums, squares)]
    return mean, [max(s, 1e-6) for s in std]


def _process_group() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed group; (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
