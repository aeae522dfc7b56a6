"""The image–text tasks' pixels: held in memory (the generated scenes) or read from the user's files per item.

Both stores answer ``one(index)`` — a uint8 (3, S, S) tensor — and ``get(indices)`` — (n, 3, S, S) — so the caption
and retrieval datasets above them do not care which they hold. ``FilePixels`` keeps only the image paths (a bytes
array, which forked DataLoader workers share without copy-on-write) and decodes with ``decode_image``: the same
Pillow convert-to-RGB and bilinear resize as ``CaptionedImages.image``, so its pixels equal the in-memory path's.
An item is a pure function of its index (nothing random happens here), so batches are the same with any number of
workers. Every batch of images is laid out channels-last in memory (``stack_images``), as the in-memory path's
tensor always was: the values do not depend on it, but float reductions and convolutions over them do in their last
bits, so one layout whichever way a batch is gathered keeps runs with and without workers bit-identical. A file
whose header passed the check while indexing but whose pixels do not decode stops the run at its first use with the
one-line ``DataError`` naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from modelforge.data.captions import CaptionedImages
from modelforge.data.formats.image_folder import decode_image

Indices = Sequence[int] | torch.Tensor | np.ndarray


class HeldPixels:
    """Images already decoded into one uint8 (N, 3, S, S) tensor."""

    loads_from_disk = False

    def __init__(self, images: torch.Tensor):
        self.images = images.contiguous(memory_format=torch.channels_last)

    def __len__(self) -> int:
        return len(self.images)

    def one(self, index: int) -> torch.Tensor:
        return self.images[index]

    def get(self, indices: Indices) -> torch.Tensor:
        return self.images[torch.as_tensor(indices, dtype=torch.long)]


class FilePixels:
    """Image files decoded and resized to (3, size, size) uint8 when asked."""

    loads_from_disk = True  # the trainer gives datasets over such images DataLoader workers by default

    def __init__(self, paths: Sequence[Path], size: int):
        self.paths = np.asarray([str(p).encode("utf-8", "surrogateescape") for p in paths], dtype=np.bytes_)
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> Path:
        return Path(self.paths[index].decode("utf-8", "surrogateescape"))

    def one(self, index: int) -> torch.Tensor:
        return torch.tensor(decode_image(self.path(index), 3, self.size))  # a copy: Pillow's buffer is read-only

    def get(self, indices: Indices) -> torch.Tensor:
        picked = torch.as_tensor(indices, dtype=torch.long).tolist()
        if not picked:
            return torch.zeros(0, 3, self.size, self.size, dtype=torch.uint8)
        return stack_images([self.one(i) for i in picked])


def stack_images(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """(3, S, S) images → one (n, 3, S, S) batch, channels-last in memory like every batch of these stores."""
    return torch.stack(list(images)).contiguous(memory_format=torch.channels_last)


def caption_pixels(data: CaptionedImages, size: int) -> HeldPixels | FilePixels:
    """The split's images as a store: read per item when they are files, else decoded into memory now."""
    if data.images and all(isinstance(item, Path) for item in data.images):
        return FilePixels(data.images, size)
    if not data.images:
        return HeldPixels(torch.zeros(0, 3, size, size, dtype=torch.uint8))
    return HeldPixels(torch.from_numpy(data.image_batch(range(len(data)), size)))


class ImagesOnAStore(torch.utils.data.Dataset):
    """A caption split whose images sit in ``self.store`` (HeldPixels or FilePixels): it is read from disk when the
    store is, and ``pixels(indices)`` gives the images as uint8 (n, 3, S, S)."""

    store: HeldPixels | FilePixels

    @property
    def loads_from_disk(self) -> bool:  # the trainer gives workers to a split read from files (training/batches.py)
        return self.store.loads_from_disk

    def pixels(self, indices: Sequence[int]) -> torch.Tensor:
        return self.store.get(indices)
