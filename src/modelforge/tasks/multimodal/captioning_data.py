"""The image captioner's splits: images in a pixel store (held in memory, or the user's files decoded per item),
captions as padded [BOS] … [EOS] id rows in memory.

A row is an image. In a training split a batch brings every caption of its images as teacher-forcing targets, each
with ``owner`` (its image's place in the batch), so the network encodes each image once and decodes all of its
captions against that memory; a held-out split's batch brings each image's first caption (the loss target) and
keeps all of its captions as the references the metrics score against. Batches are dicts: ``images`` uint8
(B, 3, S, S), ``tgt`` (captions, longest row), ``owner`` (captions,), ``references`` (B lists of strings),
``split``. ``get_batch`` gathers one with index operations (the trainer's path without workers); DataLoader
workers fetch items and ``collate_captions`` joins them into the same batch.
"""

from __future__ import annotations

from typing import Any

import torch

from modelforge.data.caption_pixels import FilePixels, HeldPixels, ImagesOnAStore, stack_images
from modelforge.data.lazy_images import STATISTICS_SAMPLE, pixel_statistics, pixel_sums, statistics_of_sums


class CaptionDataset(ImagesOnAStore):
    """``store`` holds the N images, ``captions`` their N caption lists; ``tgt``/``tgt_lengths`` hold the encoded
    captions image by image, ``first``/``count`` say where each image's rows start and how many are used."""

    def __init__(self, split: str, store: HeldPixels | FilePixels, captions: list[list[str]], tgt: torch.Tensor,
                 tgt_lengths: torch.Tensor, first: torch.Tensor, count: torch.Tensor):
        self.split, self.store, self.captions = split, store, captions
        self.tgt, self.tgt_lengths, self.first, self.count = tgt, tgt_lengths, first, count

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One image with its caption rows (full width; ``collate_captions`` trims a batch to its longest)."""
        rows = slice(int(self.first[index]), int(self.first[index] + self.count[index]))
        return {"image": self.store.one(index), "tgt": self.tgt[rows], "lengths": self.tgt_lengths[rows],
                "references": self.captions[index], "split": self.split}

    def get_batch(self, indices: Any) -> dict[str, Any]:
        index = torch.as_tensor(indices, dtype=torch.long)
        counts = self.count[index]
        owner = torch.repeat_interleave(torch.arange(len(index)), counts)
        # each image's rows: first[i], first[i] + 1, … (count[i] of them)
        starts = torch.repeat_interleave(self.first[index], counts)
        offsets = torch.arange(len(owner)) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        rows = starts + offsets
        width = int(self.tgt_lengths[rows].max())
        return {"images": self.store.get(index), "tgt": self.tgt[rows, :width], "owner": owner,
                "references": [self.captions[i] for i in index.tolist()], "split": self.split}


def collate_captions(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Items of ``CaptionDataset`` → the batch ``get_batch`` gives for the same indices."""
    counts = torch.tensor([len(item["tgt"]) for item in items])
    width = int(max(int(item["lengths"].max()) for item in items))
    return {"images": stack_images([item["image"] for item in items]),
            "tgt": torch.cat([item["tgt"] for item in items])[:, :width],
            "owner": torch.repeat_interleave(torch.arange(len(items)), counts),
            "references": [item["references"] for item in items], "split": items[0]["split"]}


def caption_dataset(split: str, store: HeldPixels | FilePixels, captions: list[list[str]], encode: Any,
                    every_caption: bool) -> CaptionDataset:
    """A split's dataset; ``encode(texts) -> (ids, lengths)``; ``every_caption``: a batch decodes every caption of
    its images (training), else each image's first."""
    ids, lengths = encode([caption for caps in captions for caption in caps])
    sizes = torch.tensor([len(caps) for caps in captions], dtype=torch.long)
    first = sizes.cumsum(0) - sizes
    count = sizes if every_caption else torch.ones_like(sizes)
    return CaptionDataset(split, store, captions, ids, lengths, first, count)


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and (unbiased) standard deviation of uint8 images (N, C, H, W), in [0, 1] units, from exact
    integer sums (``lazy_images.pixel_sums``): the figures ``training_stats`` gives for the same images read as
    files, on any number of ranks."""
    channels = images.shape[1]
    chunks = (pixel_sums(images[at : at + 256].transpose(0, 1), channels) for at in range(0, len(images), 256))
    counts = [sum(column) for column in zip(*chunks)] or [0] * (1 + 2 * channels)  # int64 copies a chunk at a time
    return _floored(statistics_of_sums(counts, channels))


def training_stats(store: HeldPixels | FilePixels) -> tuple[list[float], list[float]]:
    """``channel_stats`` of the training images: all of them in memory, else a spread sample of STATISTICS_SAMPLE
    files (every file of a smaller split, so the figures equal the in-memory path's). Under torchrun each rank
    decodes only its share of the sample and the exact sums are gathered (``lazy_images.pixel_statistics``)."""
    if isinstance(store, HeldPixels):
        return channel_stats(store.images)
    return _floored(pixel_statistics(store.one, len(store), 3, STATISTICS_SAMPLE))


def _floored(stats: tuple[list[float], list[float]]) -> tuple[list[float], list[float]]:
    """The captioner's floor on a channel's std (a flat channel is not blown up by the standardisation)."""
    mean, std = stats
    return mean, [max(s, 1e-3) for s in std]
