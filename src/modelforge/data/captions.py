"""Images with captions: the one data structure of the image–text tasks (retrieval and captioning).

``CaptionedImages`` holds one split: each image is a uint8 (H, W, 3) array already in memory (the generated scenes)
or a path decoded on first use (the user's files), each with one or more captions, and ``origin`` says where the split
came from (a file, a folder, "split off captions.csv by hash", "generated, unseen colour–object pairings"). Readers
live in ``data/formats/image_captions.py`` (the user's files) and ``data/builtin/caption_scenes.py`` (the generated
set); tokenizers for the captions in ``data/caption_text.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelforge.core.errors import DataError
from modelforge.data.splits import split_by_hash

ImageItem = np.ndarray | Path


@dataclass
class CaptionedImages:
    """``images[i]`` (array or path) has the captions ``captions[i]`` (at least one each)."""

    images: list[ImageItem]
    captions: list[list[str]]
    origin: str
    names: list[str] = field(default_factory=list)  # a stable name per image (file name); hashed to split

    def __post_init__(self) -> None:
        if len(self.images) != len(self.captions):
            raise ValueError(f"{len(self.images)} images but {len(self.captions)} caption lists")
        if not self.names:
            self.names = [item.name if isinstance(item, Path) else f"{i:06d}" for i, item in enumerate(self.images)]
        empty = [self.names[i] for i, caps in enumerate(self.captions) if not caps]
        if empty:
            raise DataError(f"{self.origin}: image {empty[0]} has no caption ({len(empty)} such image(s))")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_captions(self) -> int:
        return sum(len(caps) for caps in self.captions)

    def pairs(self) -> list[tuple[int, str]]:
        """Every (image index, caption), image by image: what contrastive training and teacher forcing iterate."""
        return [(i, caption) for i, caps in enumerate(self.captions) for caption in caps]

    def all_captions(self) -> list[str]:
        return [caption for caps in self.captions for caption in caps]

    def image(self, index: int, size: int | None = None) -> np.ndarray:
        """Image ``index`` as uint8 (H, W, 3), resized to (size, size) when given; a bad file is a DataError."""
        item = self.images[index]
        return read_rgb(item, size) if isinstance(item, Path) else resize_rgb(item, size)

    def image_batch(self, indices: Sequence[int], size: int) -> np.ndarray:
        """The images at ``indices`` as one uint8 (N, 3, size, size) array (channels first, for a CNN)."""
        return np.stack([self.image(i, size).transpose(2, 0, 1) for i in indices])

    def subset(self, indices: Sequence[int], origin: str | None = None) -> CaptionedImages:
        return CaptionedImages([self.images[i] for i in indices], [list(self.captions[i]) for i in indices],
                               origin or self.origin, [self.names[i] for i in indices])

    def limit(self, count: int | None) -> CaptionedImages:
        """The first ``count`` images (all when None)."""
        return self if count is None or count >= len(self) else self.subset(range(count))


def resize_rgb(array: np.ndarray, size: int | None) -> np.ndarray:
    """A uint8 (H, W, 3) array (grayscale (H, W) is repeated to 3 channels), bilinearly resized when ``size``."""
    from PIL import Image

    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise DataError(f"an image must be (H, W) or (H, W, 3), got shape {tuple(array.shape)}")
    if size is None or array.shape[:2] == (size, size):
        return np.ascontiguousarray(array, dtype=np.uint8)
    return np.asarray(Image.fromarray(array.astype(np.uint8)).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def read_rgb(source: Path | bytes, size: int | None = None) -> np.ndarray:
    """An image file (or its bytes) → uint8 (H, W, 3), resized when ``size``; DataError naming it when unreadable."""
    import io

    from PIL import Image, UnidentifiedImageError

    where = "uploaded image" if isinstance(source, bytes) else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            img = img.convert("RGB")
            if size is not None:
                img = img.resize((size, size), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as exc:  # not an OSError: Pillow's guard against huge pixel counts
        raise DataError(f"{where}: refused by Pillow's decompression-bomb guard ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{where}: not a readable image ({exc.__class__.__name__}: {exc})") from None


def split_captioned(data: CaptionedImages, fractions: Mapping[str, float], seed: int,
                    base: str) -> dict[str, CaptionedImages]:
    """Cut one set into splits by a hash of each image's name, so all captions of an image stay in one split;
    every split but train is labelled as held out of ``base``."""
    parts = split_by_hash(data.names, fractions, seed)
    return {name: data.subset(idx, base if name == "train" else f"split off {base} by hash")
            for name, idx in parts.items()}


def hold_out_missing(parts: Mapping[str, CaptionedImages], shares: Mapping[str, float], seed: int,
                     base: str) -> dict[str, CaptionedImages]:
    """``parts`` with every split of ``shares`` it lacks (and whose share is above 0) cut off its training images
    (``split_captioned``): what a caption file or a train/ + val/ folder does not bring is held out of train."""
    missing = {name: share for name, share in shares.items() if name not in parts and share > 0}
    if not missing:
        return dict(parts)
    fractions = {"train": 1 - sum(missing.values()), **missing}
    return {**parts, **split_captioned(parts["train"], fractions, seed, base)}
