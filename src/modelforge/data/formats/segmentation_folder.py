"""Segmentation folders: every image has its mask as a PNG next to it.

Layout (one folder, or one per split)::

    root/
      classes.txt        optional: one class name per line; line i names class index i (line 0 = background)
      scan_001.jpg       the image (any Pillow format; other readers, e.g. DICOM, plug in via ``image_reader``)
      scan_001_mask.png  its mask: single channel (mode L, P or I), same width × height, pixel = class index

A mask is a class-index map, not a colour picture: a palette PNG (mode P) keeps the indices in its pixels and the
colours in its palette, so it is both exact and viewable; ``write_segmentation_folder`` writes masks that way.
Reading checks every pair before training: an image without a mask, a mask without an image, a mask whose size
differs from its image's, a colour (RGB) mask, and class indices ≥ the number of classes are each reported by path
and reason — skipped and counted (``on_error="skip"``) or raised as DataError (``on_error="fail"``). Under torchrun
each rank reads only its contiguous share of the pairs, and every rank goes on with the gathered outcomes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from modelforge.core.atomic import atomic_write_text
from modelforge.core.errors import DataError
from modelforge.data.lazy_images import problems_over_ranks
from modelforge.data.transforms import (
    IMAGE_SUFFIXES,
    Sample,
    Transform,
    image_size,
    load_image,
    mask_to_tensor,
    to_tensor,
)

log = logging.getLogger("modelforge.data")
MASK_SUFFIX = "_mask.png"
_MASK_MODES = ("L", "P", "I", "I;16", "1")
ImageReader = Callable[[Path], np.ndarray]


@dataclass
class SegmentationFolder:
    """Checked (image, mask) pairs of one folder; ``skipped`` lists (path, reason) of what was left out."""

    root: Path
    pairs: list[tuple[Path, Path]]
    class_names: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    image_reader: ImageReader | None = field(default=None, repr=False)

    def read_image(self, path: Path, mode: Literal["RGB", "L"] = "RGB") -> np.ndarray:
        if self.image_reader is not None:
            return self.image_reader(path)
        return np.asarray(load_image(path, mode))

    def arrays(self, mode: Literal["RGB", "L"] = "RGB") -> tuple[list[np.ndarray], list[np.ndarray]]:
        """All images ((H, W) or (H, W, C) arrays) and masks ((H, W) int64) in memory, in pair order."""
        images = [self.read_image(image, mode) for image, _ in self.pairs]
        masks = [read_mask(mask) for _, mask in self.pairs]
        return images, masks


def mask_path_for(image: Path) -> Path:
    return image.with_name(image.stem + MASK_SUFFIX)


def read_mask(path: Path) -> np.ndarray:
    """A class-index mask PNG → int64 (H, W); DataError naming the file when it is unreadable or has colour."""
    img = load_image(path, mode=None)
    if img.mode not in _MASK_MODES:
        raise DataError(f"{path}: a mask must be single-channel class indices (mode L, P or I), found mode {img.mode}")
    return np.asarray(img).astype(np.int64)


def read_class_names(root: Path) -> list[str] | None:
    path = root / "classes.txt"
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: lists no class names; write one name per line (line 1 = class 0) or delete it")
    return names


def _pair_problem(
    image: Path, mask: Path, reader: ImageReader | None, num_classes: int | None, check_values: bool
) -> tuple[str, str] | None:
    """(path, reason) of what is wrong with one image/mask pair, or None."""
    try:
        size = image_size(image) if reader is None else tuple(reader(image).shape[1::-1])
    except DataError as exc:
        return str(image), str(exc).removeprefix(f"{image}: ")
    if not mask.is_file():
        return str(image), f"has no mask (expected {mask.name} next to it)"
    try:
        mask_size = image_size(mask)
        values = read_mask(mask) if check_values else None
    except DataError as exc:
        return str(mask), str(exc).removeprefix(f"{mask}: ")
    if mask_size != size:
        return str(mask), f"mask is {mask_size[0]}x{mask_size[1]} but its image {image.name} is {size[0]}x{size[1]}"
    if values is not None and num_classes is not None and values.size and int(values.max()) >= num_classes:
        return str(mask), f"holds class index {int(values.max())} but there are only {num_classes} classes"
    return None


def _pair_problems(
    images: list[Path], reader: ImageReader | None, num_classes: int | None, check_values: bool, on_error: str
) -> list[tuple[str, str] | None]:
    """``_pair_problem`` of every image and its mask, in order. Under torchrun each rank reads only its contiguous
    share of the pairs and the outcomes are gathered (``rows_over_ranks``), so every rank keeps and reports what one
    process does; with ``on_error="fail"`` a rank stops at the first bad pair of its share (only the first counts)."""

    def problem(index: int) -> tuple[str, str] | None:
        return _pair_problem(images[index], mask_path_for(images[index]), reader, num_classes, check_values)

    return problems_over_ranks(range(len(images)), problem, on_error)


def read_segmentation_folder(
    root: str | Path,
    *,
    on_error: Literal["skip", "fail"] = "fail",
    num_classes: int | None = None,
    image_suffixes: Sequence[str] = IMAGE_SUFFIXES,
    image_reader: ImageReader | None = None,
    check_values: bool = True,
) -> SegmentationFolder:
    """List and check the image/mask pairs in ``root`` (sorted by name).

    ``num_classes`` defaults to the length of ``classes.txt`` when present; with ``check_values`` every mask is
    decoded to check its class indices. ``image_reader`` (path → array) replaces Pillow for other image formats.
    """
    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: segmentation folder does not exist or is not a directory")
    class_names = read_class_names(root)
    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    suffixes = {s.lower() for s in image_suffixes}
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    masks = {p for p in files if p.name.endswith(MASK_SUFFIX)}
    images = [p for p in files if p not in masks and p.suffix.lower() in suffixes]
    stems = {image.stem for image in images}
    problems = [
        (str(m), "mask without an image of the same name")
        for m in sorted(masks)
        if m.name[: -len(MASK_SUFFIX)] not in stems
    ]
    if problems and on_error == "fail":  # the first problem is a mask without an image: no pair need be read
        raise DataError(f"{problems[0][0]}: {problems[0][1]}")
    pairs = []
    for image, problem in zip(images, _pair_problems(images, image_reader, num_classes, check_values, on_error)):
        if problem:
            problems.append(problem)
        else:
            pairs.append((image, mask_path_for(image)))
    if problems and on_error == "fail":
        raise DataError(f"{problems[0][0]}: {problems[0][1]}")
    for where, reason in problems:
        log.warning("skipped %s: %s", where, reason)
    if problems:
        log.warning("%d file(s) under %s skipped (on_error=fail stops instead)", len(problems), root)
    if not pairs:
        raise DataError(f"{root}: no image with a matching {MASK_SUFFIX} mask found")
    return SegmentationFolder(root, pairs, class_names, problems, image_reader)


def default_palette() -> list[int]:
    """256 colours for class indices (black background, then well-separated hues), as a flat RGB list."""
    base = [(0, 0, 0), (255, 255, 255), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
            (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230)]  # fmt: skip
    colours = [base[i] if i < len(base) else ((i * 67) % 256, (i * 151) % 256, (i * 29) % 256) for i in range(256)]
    return [channel for colour in colours for channel in colour]


def write_mask(path: Path, mask: np.ndarray, palette: Sequence[int] | None = None) -> None:
    """Save an integer (H, W) class-index mask (indices 0..255) as an 8-bit palette PNG."""
    from PIL import Image

    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"a mask must be (H, W) with class indices 0..255, got shape {mask.shape}")
    colours = list(palette or default_palette())
    # always 256 entries: with a short palette Pillow writes a 1/2/4-bit PNG and larger indices are lost
    colours += default_palette()[len(colours) :]
    img = Image.fromarray(mask.astype(np.uint8))
    img.putpalette(colours[:768])
    img.save(path)  # putpalette turned the L image into mode P with the pixel values unchanged


def write_segmentation_folder(
    root: str | Path,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    image_format: Literal["png", "jpg"] = "png",
) -> Path:
    """Write uint8 images ((H, W) or (H, W, 3)) and their class-index masks in the layout above."""
    from PIL import Image

    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = list(names) if names is not None else [f"{i:05d}" for i in range(len(images))]
    for name, image, mask in zip(names, images, masks, strict=True):
        if image.shape[:2] != mask.shape:
            raise ValueError(f"image {name} is {image.shape[:2]} but its mask is {mask.shape}")
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(root / f"{name}.{image_format}")
        write_mask(root / f"{name}{MASK_SUFFIX}", mask)
    if class_names:
        atomic_write_text(root / "classes.txt", "\n".join(class_names) + "\n")
    return root


class SegmentationDataset(torch.utils.data.Dataset):
    """(image, mask) pairs of a checked folder as ``Sample``s: float (C, H, W) image and int64 (H, W) mask."""

    def __init__(
        self, folder: SegmentationFolder, transform: Transform | None = None, mode: Literal["RGB", "L"] = "RGB"
    ):
        self.folder, self.transform, self.mode = folder, transform, mode

    def __len__(self) -> int:
        return len(self.folder.pairs)

    def __getitem__(self, index: int) -> Sample:
        image_path, mask_path = self.folder.pairs[index]
        sample = Sample(
            image=to_tensor(self.folder.read_image(image_path, self.mode)),
            mask=mask_to_tensor(read_mask(mask_path)),
            meta={"path": str(image_path)},
        )
        return self.transform.apply(sample) if self.transform is not None else sample
