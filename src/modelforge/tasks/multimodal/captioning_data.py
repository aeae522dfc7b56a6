"""The image captioner's in-memory splits: images as one uint8 tensor, captions as padded [BOS] … [EOS] id rows.

A row is an image. In a training split a batch brings every caption of its images as teacher-forcing targets, each
with ``owner`` (its image's place in the batch), so the network encodes each image once and decodes all of its
captions against that memory; a held-out split's batch brings each image's first caption (the loss target) and
keeps all of its captions as the references the metrics score against. Batches are dicts gathered with one index
operation: ``images`` uint8 (B, 3, S, S), ``tgt`` (captions, longest row), ``owner`` (captions,), ``references``
(B lists of strings), ``split``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset


class CaptionDataset(Dataset):
    """``images`` (N, 3, S, S) uint8 and ``captions`` (N lists); ``tgt``/``tgt_lengths`` hold the encoded captions
    image by image, ``first``/``count`` say where each image's rows start and how many are used."""

    def __init__(self, split: str, images: torch.Tensor, captions: list[list[str]], tgt: torch.Tensor,
                 tgt_lengths: torch.Tensor, first: torch.Tensor, count: torch.Tensor):
        self.split, self.images, self.captions = split, images, captions
        self.tgt, self.tgt_lengths, self.first, self.count = tgt, tgt_lengths, first, count

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get_batch([index])

    def get_batch(self, indices: Any) -> dict[str, Any]:
        index = torch.as_tensor(indices, dtype=torch.long)
        counts = self.count[index]
        owner = torch.repeat_interleave(torch.arange(len(index)), counts)
        # each image's rows: first[i], first[i] + 1, … (count[i] of them)
        starts = torch.repeat_interleave(self.first[index], counts)
        offsets = torch.arange(len(owner)) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        rows = starts + offsets
        width = int(self.tgt_lengths[rows].max())
        return {"images": self.images[index], "tgt": self.tgt[rows, :width], "owner": owner,
                "references": [self.captions[i] for i in index.tolist()], "split": self.split}


def caption_dataset(split: str, images: torch.Tensor, captions: list[list[str]], encode: Any,
                    every_caption: bool) -> CaptionDataset:
    """A split's dataset; ``encode(texts) -> (ids, lengths)``; ``every_caption``: a batch decodes every caption of
    its images (training), else each image's first."""
    ids, lengths = encode([caption for caps in captions for caption in caps])
    sizes = torch.tensor([len(caps) for caps in captions], dtype=torch.long)
    first = sizes.cumsum(0) - sizes
    count = sizes if every_caption else torch.ones_like(sizes)
    return CaptionDataset(split, images, captions, ids, lengths, first, count)


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W), in [0, 1] units."""
    x = images.float().div(255).transpose(0, 1).flatten(1)
    return x.mean(dim=1).tolist(), x.std(dim=1).clamp(min=1e-3).tolist()
