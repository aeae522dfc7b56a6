"""Image folders in the ImageNet layout: ``root/<class>/<image>``, or ``root/{train,val,test}/<class>/<image>``.

Images are decoded once with Pillow, converted to grayscale or RGB, resized and kept in memory as uint8 tensors, so
a bad file is found before training starts: it is skipped with a counted warning or fails the run, by configuration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from modelforge.core.errors import DataError

log = logging.getLogger("modelforge.data")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class ImageSet:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def decode_image(path: Path, channels: int, size: int) -> np.ndarray:
    """One image file → (C, size, size) uint8; DataError naming the file when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            img = img.resize((size, size), Image.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as exc:  # not an OSError: Pillow's guard against huge pixel counts
        raise DataError(f"{path}: refused by Pillow's decompression-bomb guard ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def class_dirs(root: Path) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DataError(f"{root}: no class folders found; expected {root}/<class>/<image files>")
    return dirs


def read_image_folder(
    root: Path,
    channels: int,
    size: int,
    classes: list[str] | None = None,
    on_error: Literal["skip", "fail"] = "skip",
) -> ImageSet:
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    dirs = class_dirs(root)
    classes = classes or [d.name for d in dirs]
    index = {name: i for i, name in enumerate(classes)}
    images, labels, skipped = [], [], []
    for directory in dirs:
        if directory.name not in index:
            raise DataError(f"{directory}: class {directory.name!r} is not among the training classes {classes}")
        for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")):
            try:
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    raise DataError(f"{path}: not an image file (suffix {path.suffix or 'none'})")
                images.append(decode_image(path, channels, size))
                labels.append(index[directory.name])
            except DataError as exc:
                if on_error == "fail":
                    raise
                skipped.append((str(path), str(exc)))
    for _path, reason in skipped:
        log.warning("skipped %s", reason)
    if skipped:
        log.warning("%d file(s) under %s skipped (set data.on_error=fail to stop instead)", len(skipped), root)
    if not images:
        raise DataError(f"{root}: no readable images found")
    return ImageSet(np.stack(images), np.asarray(labels, dtype=np.int64), classes, skipped)
