"""The image captioner's in-memory splits: images as one uint8 tensor, captions as padded [BOS] … [EOS] id rows.

A training split has one row per (image, caption) pair, so every caption of an image is a teacher-forcing target
once per epoch; a held-out split has one row per image (its first caption is the loss target) and keeps all of the
image's captions as the references the metrics score against. Batches are dicts gathered with one index operation:
``images`` uint8 (B, 3, S, S), ``tgt`` (B, longest row), ``references`` (B lists of strings), ``split``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset


class CaptionDataset(Dataset):
    """``images`` (N, 3, S, S) uint8 and ``captions`` (N lists) per image; ``rows`` pick (image, target ids)."""

    def __init__(self, split: str, images: torch.Tensor, captions: list[list[str]], image_index: torch.Tensor,
                 tgt: torch.Tensor, tgt_lengths: torch.Tensor):
        self.split, self.images, self.captions = split, images, captions
        self.image_index, self.tgt, self.tgt_lengths = image_index, tgt, tgt_lengths

    def __len__(self) -> int:
        return len(self.image_index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get_batch([index])

    def get_batch(self, indices: Any) -> dict[str, Any]:
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.image_index[index]
        width = int(self.tgt_lengths[index].max())
        return {"images": self.images[images], "tgt": self.tgt[index, :width],
                "references": [self.captions[i] for i in images.tolist()], "split": self.split}


def caption_dataset(split: str, images: torch.Tensor, captions: list[list[str]], encode: Any,
                    every_caption: bool) -> CaptionDataset:
    """A split's dataset; ``encode(texts) -> (ids, lengths)``; ``every_caption``: one row per caption (training),
    else one per image with its first caption as the target."""
    if every_caption:
        owners = [i for i, caps in enumerate(captions) for _ in caps]
        texts = [caption for caps in captions for caption in caps]
    else:
        owners = list(range(len(captions)))
        texts = [caps[0] for caps in captions]
    ids, lengths = encode(texts)
    return CaptionDataset(split, images, captions, torch.tensor(owners, dtype=torch.long), ids, lengths)


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W), in [0, 1] units."""
    x = images.float().div(255).transpose(0, 1).flatten(1)
    return x.mean(dim=1).tolist(), x.std(dim=1).clamp(min=1e-3).tolist()
