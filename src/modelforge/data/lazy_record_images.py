"""Image classification items read one at a time from a record source: a row of a memory-mapped Hugging Face
dataset, or a member of a WebDataset tar shard found through its byte offset (data/formats/tar_index.py).

Both decode the stored bytes exactly as an image folder's files are decoded (``decode_image_bytes``), so the same
images give the same pixels from a folder, a dataset or shards. Items are a pure function of the index, as in
``ImageFileDataset``: the batches are the same with any number of DataLoader workers, and exact resume holds.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelforge.data.formats.image_folder import decode_image_bytes
from modelforge.data.lazy_images import LabelledPixels


class EncodedImageDataset(LabelledPixels):
    """``(uint8 (C, size, size) tensor, int64 label)`` per item; ``ids[i]`` is the item's position in the source."""

    loads_from_disk = True  # the trainer gives such datasets DataLoader workers by default (train.num_workers)

    def __init__(self, ids: np.ndarray, labels: np.ndarray, channels: int, size: int):
        if len(ids) != len(labels):
            raise ValueError(f"{type(self).__name__} needs as many labels as items")
        self.ids = np.asarray(ids, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.channels, self.size = channels, size

    def encoded(self, item: int) -> tuple[bytes, str]:
        """The stored image bytes of source item ``item`` and where they are (for messages)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        raw, where = self.encoded(int(self.ids[index]))
        pixels = decode_image_bytes(raw, where, self.channels, self.size)
        return torch.tensor(pixels), torch.tensor(self.labels[index])  # a copy: Pillow's buffer is read-only

    def subset(self, indices: Sequence[int] | np.ndarray) -> EncodedImageDataset:
        picked = np.asarray(indices, dtype=np.int64)
        part = copy.copy(self)  # shares the source (a memory map, or the shard index)
        part.ids, part.labels = self.ids[picked], self.labels[picked]
        return part



class ArrowImageDataset(EncodedImageDataset):
    """Rows of a Hugging Face dataset's image column (``Image(decode=False)`` or binary), read from its memory map
    when asked. Pickling the ``datasets.Dataset`` carries its Arrow file paths, not the data: a DataLoader worker
    maps the same files again."""

    def __init__(self, images: Any, column: str, where: str, ids: np.ndarray, labels: np.ndarray, channels: int,
                 size: int):
        super().__init__(ids, labels, channels, size)
        self.images, self.column, self.where = images, column, where

    def encoded(self, item: int) -> tuple[bytes, str]:
        from modelforge.data.formats.hf_images import image_bytes

        where = f"{self.where} row {item}"
        return image_bytes(self.images[item][self.column], where), where


class TarImageDataset(EncodedImageDataset):
    """Image members of WebDataset shards, each read with one seek and one read at the offset the shard index
    recorded (random access, so the trainer's batch plan can ask for any item)."""

    def __init__(self, shards: list[Path], shard: np.ndarray, offset: np.ndarray, size_bytes: np.ndarray,
                 names: np.ndarray, ids: np.ndarray, labels: np.ndarray, channels: int, size: int):
        super().__init__(ids, labels, channels, size)
        self.shards, self.shard, self.offset, self.size_bytes, self.names = shards, shard, offset, size_bytes, names

    def encoded(self, item: int) -> tuple[bytes, str]:
        shard = self.shards[int(self.shard[item])]
        with open(shard, "rb") as file:
            file.seek(int(self.offset[item]))
            raw = file.read(int(self.size_bytes[item]))
        return raw, f"{shard}: {self.names[item].decode('utf-8', 'surrogateescape')}"
