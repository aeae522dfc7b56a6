"""Segmentation image/mask pairs read from disk item by item (the user's folders of ``NAME`` + ``NAME_mask.png``,
pictures or DICOM scans, and COCO images with polygon annotations): the checked pair list in memory, each image and
mask decoded (a COCO mask painted) and resized in ``__getitem__`` — the same float image in [0, 1] and uint8 class
map that the in-memory path builds with ``pair_tensors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from modelforge.core.errors import DataError
from modelforge.data.formats.segmentation_folder import read_mask
from modelforge.data.transforms import load_image


def pair_tensors(image: np.ndarray, mask: np.ndarray, value_max: float, size: tuple[int, int] | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """One pair → float (C, H, W) image in [0, 1] and int64 (H, W) mask, resized to ``size`` when given (the mask
    by nearest neighbour, so class indices stay exact)."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float32))
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    dtype = np.asarray(image).dtype
    # 8-bit pictures, integer scans (DICOM) up to value_max, floats already in [0, 1] (generated phantoms)
    integer_scan = np.issubdtype(dtype, np.integer) or x.max() > 1
    scale = 255.0 if dtype == np.uint8 else value_max if integer_scan else 1.0
    x = x / scale
    y = torch.from_numpy(np.asarray(mask, dtype=np.int64))
    if size is not None and tuple(x.shape[-2:]) != size:
        x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        y = F.interpolate(y[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
    return x.clamp(0, 1), y


class SegmentationFileSet(Dataset):
    """``(float (C, S, S) image, uint8 (S, S) mask)`` per item, decoded from the pair's files when asked.

    Images are pictures (Pillow) or DICOM scans (``.dcm``, scaled by ``value_max``, the folder's largest stored value);
    masks are ``NAME_mask.png`` files, or with ``coco`` the COCO image records whose polygons are painted per item.
    """

    loads_from_disk = True  # the trainer gives such datasets DataLoader workers by default (train.num_workers)

    def __init__(self, pairs: Sequence[tuple[Path, Any]], mode: Literal["RGB", "L"], size: tuple[int, int],
                 value_max: float = 255.0, coco: Any = None):
        # bytes arrays, not lists of Path objects: forked workers share them without copy-on-write
        self.images = np.asarray([str(i).encode("utf-8", "surrogateescape") for i, _ in pairs], dtype=np.bytes_)
        if coco is None:
            self.masks = np.asarray([str(m).encode("utf-8", "surrogateescape") for _, m in pairs], dtype=np.bytes_)
        else:
            self.masks = [record for _, record in pairs]
        self.mode, self.size, self.value_max, self.coco = mode, size, value_max, coco

    def __len__(self) -> int:
        return len(self.images)

    def _image(self, index: int) -> np.ndarray:
        path = Path(self.images[index].decode("utf-8", "surrogateescape"))
        if path.suffix.lower() == ".dcm":
            from modelforge.data.builtin.phantoms import read_dicom

            return read_dicom(path)
        return np.asarray(load_image(path, self.mode))

    def _mask(self, index: int) -> np.ndarray:
        if self.coco is not None:
            from modelforge.data.formats.coco import semantic_mask

            return semantic_mask(self.coco, self.masks[index])
        return read_mask(Path(self.masks[index].decode("utf-8", "surrogateescape")))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = pair_tensors(self._image(index), self._mask(index), self.value_max, self.size)
        if self.mode == "RGB" and x.shape[0] == 1:  # a grayscale scan for a 3-channel model
            x = x.expand(3, -1, -1).contiguous()
        return x, y.to(torch.uint8)

    def get_batch(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self[int(i)] for i in indices]
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


@dataclass
class PairStatistics:
    """What the training images and masks say for normalisation and the summary: channels, (H, W), per-channel mean
    and std of the pixels, and the pixels of each class index (``class_pixels[k]``; the array ends at the highest
    class seen)."""

    channels: int
    image_size: list[int]
    mean: list[float]
    std: list[float]
    class_pixels: np.ndarray

    @classmethod
    def of_tensors(cls, images: torch.Tensor, masks: torch.Tensor) -> PairStatistics:
        """Over a whole split held in memory: float (N, C, H, W) images, (N, H, W) masks."""
        return cls(int(images.shape[1]), list(images.shape[-2:]), images.mean(dim=(0, 2, 3)).tolist(),
                   images.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist(), np.bincount(masks.flatten().numpy()))

    @classmethod
    def of_sample(cls, dataset: SegmentationFileSet, sample: int) -> PairStatistics:
        """Over up to ``sample`` evenly spaced pairs read from disk; under torchrun each rank decodes only its share
        (lazy_images.rows_over_ranks) and every rank adds the gathered per-pair sums up in the sample's order, so
        all ranks, and any world size, get the same figures bit for bit."""
        from modelforge.data.lazy_images import rows_over_ranks, spread

        def sums(index: int) -> list[Any]:  # (C, H, W), each channel's sum and sum of squares, pixels per class
            x, y = dataset[index]
            x = x.double()
            return [list(x.shape), x.sum((1, 2)).tolist(), x.square().sum((1, 2)).tolist(),
                    np.bincount(y.flatten().numpy()).tolist()]

        rows = rows_over_ranks(spread(len(dataset), sample), sums)
        if len({tuple(shape) for shape, *_ in rows}) > 1:
            raise DataError(f"the training images decode to several shapes {sorted({tuple(r[0]) for r in rows})[:3]}"
                            f"; set data.channels")
        (channels, *size), n = rows[0][0], sum(shape[1] * shape[2] for shape, *_ in rows)
        totals, squares = [0.0] * channels, [0.0] * channels
        class_pixels = np.zeros(max(len(r[3]) for r in rows), dtype=np.int64)
        for _, row_totals, row_squares, row_classes in rows:  # in the sample's order: the same sums on every rank
            totals = [a + b for a, b in zip(totals, row_totals, strict=True)]
            squares = [a + b for a, b in zip(squares, row_squares, strict=True)]
            class_pixels[: len(row_classes)] += row_classes
        mean = [total / n for total in totals]
        # the unbiased variance, as torch.std gives: (Σx² − (Σx)²/n) / (n − 1)
        std = [max(float(np.sqrt(max(sq - total * total / n, 0.0) / max(n - 1, 1))), 1e-6)
               for total, sq in zip(totals, squares, strict=True)]
        return cls(channels, size, mean, std, class_pixels)
