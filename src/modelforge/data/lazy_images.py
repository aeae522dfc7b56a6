"""Image datasets read from disk item by item: an index of paths and labels in memory, the pixels decoded, resized
and converted in ``__getitem__`` — so memory stays flat however many images the folder holds, and DataLoader
workers decode in parallel with the training step.

Items are a pure function of the index (no random transform happens here; the task's augmentation runs on the
batch with the trainer's restored RNG), so the batches are identical with any number of workers and a resumed run
sees exactly the data of an uninterrupted one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from modelforge.core.errors import DataError, ModelforgeError
from modelforge.data.first_touch import SkippedAtFirstTouch
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
    """``(uint8 (C, size, size) tensor, int64 label)`` per item, decoded from ``base / paths[i]`` when asked.

    The index opened no file, so a file that is not a readable image is found here. ``on_error="fail"``: the
    DataError naming it. ``"skip"``: it is reported once (``skips``) and the item is the next readable one in index
    order with its label — the same substitute in every epoch, process and resumed run, and the split keeps its
    size (a skipped evaluation image counts its neighbour twice)."""

    loads_from_disk = True  # the trainer gives such datasets DataLoader workers by default (train.num_workers)

    def __init__(self, base: Path, paths: np.ndarray, labels: np.ndarray, channels: int, size: int,
                 resize: int | None = None, on_error: Literal["skip", "fail"] = "fail",
                 skips: SkippedAtFirstTouch | None = None):
        """``resize``: shorter side to it, then the centre ``size`` square (ImageNet evaluation); None: the whole
        image resized to the square."""
        if len(paths) != len(labels):
            raise ValueError("ImageFileDataset needs as many labels as paths")
        self.base, self.channels, self.size, self.resize = Path(base), channels, size, resize
        self.paths = np.asarray(paths, dtype=np.bytes_)
        self.labels = np.asarray(labels, dtype=np.int64)
        self._base_bytes = os.fsencode(self.base) + b"/"
        self.on_error = on_error
        self.skips = skips or SkippedAtFirstTouch(f"file(s) under {self.base}")

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> Path:
        return self.base / self.paths[index].decode("utf-8", "surrogateescape")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, label = self._item(index)
        # Pillow's buffer is read-only: copied; OpenCV's is this item's own
        return (torch.from_numpy(pixels) if pixels.flags.writeable else torch.tensor(pixels),
                torch.scalar_tensor(label, dtype=torch.int64))

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The items of one batch (what a DataLoader worker asks for), equal to ``[self[i] for i in indices]``:
        decoded into one array, the tensors views of it — a tensor per item costs more than a small PNG's decode."""
        pixels = np.empty((len(indices), self.channels, self.size, self.size), dtype=np.uint8)
        labels = self.labels[indices]
        for row, index in enumerate(indices):
            try:  # the readable item straight into its row; an unreadable one fails or finds its substitute
                pixels[row] = self._decode(index)
            except DataError:
                pixels[row], labels[row] = self._item(index)
        return list(zip(torch.from_numpy(pixels).unbind(0), torch.from_numpy(labels).unbind(0)))

    def _item(self, index: int) -> tuple[np.ndarray, int]:
        """(pixels, label) of ``index``, or with ``on_error="skip"`` of the next readable item (class docstring)."""
        for at in _from(index, len(self)):
            try:
                return self._decode(at), int(self.labels[at])
            except DataError as exc:
                if self.on_error == "fail":
                    raise
                self.skips.found(str(exc))
        raise DataError(f"{self.base}: no readable images found")

    def _decode(self, index: int) -> np.ndarray:
        if self.resize is None:  # the path as bytes: no Path object per item
            return decode_image(self._base_bytes + self.paths[index], self.channels, self.size)
        return decode_center_crop(load_image(self.path(index)), self.size, self.resize)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageFileDataset:
        picked = np.asarray(indices, dtype=np.int64)
        return ImageFileDataset(self.base, self.paths[picked], self.labels[picked], self.channels, self.size,
                                self.resize, self.on_error, self.skips)


def _from(index: int, n: int) -> Iterator[int]:
    """``index``, then the indices after it, wrapping round: where a skipped item's substitute is looked for."""
    yield from range(index, n)
    yield from range(index)


def spread(n: int, count: int) -> np.ndarray:
    """``count`` evenly spaced indices of ``range(n)`` (all of them when ``n <= count``)."""
    if n <= count:
        return np.arange(n)
    return np.linspace(0, n - 1, count).round().astype(np.int64)


def channel_statistics(dataset: ImageFileDataset, sample: int = STATISTICS_SAMPLE) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of pixels / 255 over up to ``sample`` evenly spaced images — the same figures the
    in-memory path computes over the whole split when the folder holds no more images than that. Under torchrun each
    rank decodes only its share of the sample (``pixel_statistics``)."""
    return pixel_statistics(lambda index: dataset[index][0], len(dataset), dataset.channels, sample)


def pixel_statistics(pixels_of: Callable[[int], torch.Tensor], items: int, channels: int,
                     sample: int = STATISTICS_SAMPLE) -> tuple[list[float], list[float]]:
    """Per-channel mean and (unbiased) std of uint8 pixels / 255 over up to ``sample`` evenly spaced items of
    ``range(items)``; ``pixels_of(i)`` decodes item i's pixels, channels first ``(C, ...)``.

    Under torchrun each rank decodes only its contiguous share of the sample and the ranks' sums are gathered
    (``rows_over_ranks``). The sums are exact integers (of uint8 pixels), so every rank, and any world size, gets the
    same figures bit for bit."""
    rows = rows_over_ranks(spread(items, sample), lambda index: pixel_sums(pixels_of(index), channels))
    return statistics_of_sums([sum(column) for column in zip(*rows)] or [0] * (1 + 2 * channels), channels)


def pixel_sums(pixels: torch.Tensor, channels: int) -> list[int]:
    """Exact integer sums of uint8 ``pixels`` laid out channels first ``(C, ...)``: the pixels per channel, each
    channel's sum, then each channel's sum of squares — sums of several images add up to those of all of them."""
    pixels = pixels.reshape(channels, -1).to(torch.int64)
    return [pixels.shape[1], *pixels.sum(1).tolist(), *pixels.square().sum(1).tolist()]


def statistics_of_sums(counts: Sequence[int], channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and (unbiased) std of pixels / 255 from ``pixel_sums`` (added up over the images)."""
    n, totals, squares = max(counts[0], 1), counts[1 : 1 + channels], counts[1 + channels :]  # Python ints: exact
    mean = [total / n / 255 for total in totals]
    # the unbiased variance, as torch.std gives, from exact integers: (n Σx² − (Σx)²) / (n (n − 1))
    std = [math.sqrt((n * sq - total * total) / (n * max(n - 1, 1))) / 255 for total, sq in zip(totals, squares)]
    return mean, [max(s, 1e-6) for s in std]


def touch_sample(dataset: LabelledPixels, sample: int = STATISTICS_SAMPLE) -> None:
    """Decode up to ``sample`` evenly spaced items of a held-out split (this rank's share under torchrun), as the
    training statistics do for the training split: a folder's unreadable files are otherwise found at first touch,
    and in a small folder — every image decoded here — this reports them, or fails the run, before the run folder
    is made. The cost does not grow with the folder."""
    for index in rank_share(spread(len(dataset), sample)).tolist():
        dataset[index]


def rank_share(indices: np.ndarray) -> np.ndarray:
    """This process's contiguous share of ``indices`` under torchrun (the ranks' shares in rank order make up
    ``indices``; they differ in length by at most one); all of them without a process group."""
    rank, world = _process_group()
    return np.array_split(indices, world)[rank]


def rows_over_ranks(indices: np.ndarray, row: Callable[[int], Any],
                    stop: Callable[[Any], bool] | None = None) -> list[Any]:
    """``row(i)`` for every index of ``indices``, in their order: under torchrun each rank computes (decodes) only
    its ``rank_share`` and the ranks' rows are gathered, so every rank returns what one process computes. A
    collective: every rank of the group calls it, in the same order as its other collectives.

    ``stop(r)`` true: this rank computes no further rows of its share, whose places are None — for a caller that
    reads the rows in order and stops at the first such row (a check that fails on the first bad file): every row
    before it was computed, on its own rank or an earlier one.

    A row that raises ends its rank's share, and every rank raises the error of the first rank that failed — the
    error one process meets first — after the gather, so no rank waits in it for one that gave up."""
    rows: list[Any] = []
    failure: Exception | None = None
    share = rank_share(indices).tolist()
    try:
        for index in share:
            rows.append(row(index))
            if stop is not None and stop(rows[-1]):
                rows += [None] * (len(share) - len(rows))
                break
    except Exception as exc:  # noqa: BLE001 - raised below on every rank, once the others know of it
        failure = exc
    rank, world = _process_group()
    if world == 1:
        if failure is not None:
            raise failure
        return rows
    import torch.distributed as dist

    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (rows, _described(failure)))  # Python objects: exact ints, any backend
    failed = next((at for at, (_, described) in enumerate(gathered) if described is not None), None)
    if failed == rank:
        raise failure
    if failed is not None:
        kind, message = gathered[failed][1]
        raise kind(message) if kind is not None else RuntimeError(f"rank {failed} failed: {message}")
    return [r for part, _ in gathered for r in part]


def problems_over_ranks(indices: Sequence[int] | np.ndarray, problem: Callable[[int], Any], on_error: str
                        ) -> list[Any]:
    """``problem(i)`` — what is wrong with item i, None when nothing — for every index, through ``rows_over_ranks``
    (each rank checks its share, every rank gets every outcome in order). With ``on_error="fail"`` a rank stops at
    the first problem of its share: the caller stops at the first problem anyway."""
    stop = (lambda found: found is not None) if on_error == "fail" else None
    return rows_over_ranks(np.asarray(indices, dtype=np.int64), problem, stop)


def _described(failure: Exception | None) -> tuple[type[ModelforgeError] | None, str] | None:
    """A rank's failure as the others rebuild it: a ModelforgeError by its class and one-line message (every rank
    then stops with the same one line), anything else by its type and message."""
    if failure is None:
        return None
    if isinstance(failure, ModelforgeError):
        return type(failure), str(failure)
    return None, f"{type(failure).__name__}: {failure}"


def _process_group() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed group; (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
