"""Image loading and transforms in torch (no torchvision): resize, letterbox, center crop, normalize, flip, shift.

Images are float tensors (C, H, W) in [0, 1]; ``to_tensor`` makes one from a PIL image or a uint8/uint16/float
NumPy array. Transforms that move pixels also move what is attached to the image, held in a ``Sample``: boxes
(N, 4) in xyxy pixel coordinates (see ``modelforge.data.boxes``), their labels, and a mask ((H, W) class indices or
(K, H, W) stacked masks, resized with nearest neighbour so class indices stay exact). Every transform also accepts a
bare image tensor (or PIL image / array) and then returns a bare tensor.

Random transforms draw from ``generator`` when given, else from torch's global RNG (which DataLoader workers seed).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import torch
import torch.nn.functional as F

from modelforge.core.errors import DataError
from modelforge.data.boxes import clip_boxes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# a guard against decompression bombs: a tiny file that decodes into gigabytes; 64 MP covers any real photo
DEFAULT_MAX_PIXELS = 64_000_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_image(path: str | Path, mode: Literal["RGB", "L"] | None = "RGB", max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """Decode an image file fully with Pillow and return it converted to ``mode`` (``None`` keeps the file's mode,
    e.g. for palette masks whose pixel values are class indices).

    Raises DataError naming the file when it is missing, not an image, truncated/corrupt, or has more than
    ``max_pixels`` pixels (checked from the header, before decoding). Pixels are returned in stored orientation
    (EXIF rotation is not applied), the frame that COCO widths/heights and boxes refer to.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    try:
        with warnings.catch_warnings():
            # the explicit max_pixels check below replaces Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if max_pixels is not None and width * height > max_pixels:
                    raise DataError(
                        f"{path}: image of {width}x{height} = {width * height} pixels exceeds the limit of "
                        f"{max_pixels} (possible decompression bomb; raise max_pixels if the file is trusted)"
                    )
                img.load()  # decode now, so truncation surfaces here and not deep inside a batch
                if mode is not None and img.mode != mode:
                    return img.convert(mode)
                return img.copy()
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: refused by Pillow's decompression-bomb guard ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{path}: truncated or corrupt image ({exc.__class__.__name__}: {exc})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header without decoding the pixels; DataError naming the file if unreadable."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return img.size
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file Pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: unreadable image header ({exc.__class__.__name__}: {exc})") from None


def to_tensor(image: Any) -> torch.Tensor:
    """PIL image or NumPy array ((H, W) or (H, W, C); uint8, uint16, bool or float in [0, 1]) → float32 (C, H, W)."""
    if isinstance(image, torch.Tensor):
        return _float_image(image)
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"image array must be (H, W) or (H, W, C), got shape {array.shape}")
    if array.dtype == np.uint8:
        tensor = torch.from_numpy(array.astype(np.float32)).div_(255)  # astype copies: Pillow's arrays are read-only
    elif array.dtype == np.uint16:
        tensor = torch.from_numpy(array.astype(np.float32) / 65535)
    elif array.dtype == bool or np.issubdtype(array.dtype, np.floating):
        tensor = torch.from_numpy(np.array(array, dtype=np.float32))
    else:
        raise ValueError(f"unsupported image dtype {array.dtype}; expected uint8, uint16, bool or float")
    return tensor.permute(2, 0, 1).contiguous()


def mask_to_tensor(mask: Any) -> torch.Tensor:
    """A class-index mask (PIL mode L/P/I or an integer (H, W) array) → int64 (H, W)."""
    array = np.asarray(mask)
    if array.ndim != 2 or not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ValueError(f"a mask must be an integer (H, W) array, got {array.dtype} of shape {array.shape}")
    return torch.from_numpy(array.astype(np.int64))


def to_uint8_array(image: torch.Tensor) -> np.ndarray:
    """Float (C, H, W) in [0, 1] → uint8 (H, W, C) array (or (H, W) for one channel), e.g. to save with Pillow."""
    array = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return array[:, :, 0] if array.shape[2] == 1 else array


def _float_image(image: torch.Tensor) -> torch.Tensor:
    if image.ndim != 3:
        raise ValueError(f"image tensor must be (C, H, W), got shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image.float().div_(255)
    return image if image.is_floating_point() else image.float()


@dataclass
class Sample:
    """An image and what is attached to it; transforms return a new Sample and never modify their input."""

    image: torch.Tensor  # (C, H, W) float
    boxes: torch.Tensor | None = None  # (N, 4) xyxy pixels
    labels: torch.Tensor | None = None  # (N,)
    mask: torch.Tensor | None = None  # (H, W) class indices or (K, H, W)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)"""
        return int(self.image.shape[-2]), int(self.image.shape[-1])


ImageLike = Union[Sample, torch.Tensor, np.ndarray, Any]


def as_sample(item: ImageLike) -> Sample:
    if isinstance(item, Sample):
        return replace(item, image=_float_image(item.image), meta=dict(item.meta))
    return Sample(image=to_tensor(item))


def _resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    stacked = mask[None, None] if mask.ndim == 2 else mask[None]
    out = F.interpolate(stacked.float(), size=size, mode="nearest-exact").to(mask.dtype)
    return out[0, 0] if mask.ndim == 2 else out[0]


def _scale_boxes(boxes: torch.Tensor, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0) -> torch.Tensor:
    scale = boxes.new_tensor([sx, sy, sx, sy])
    shift = boxes.new_tensor([dx, dy, dx, dy])
    return boxes * scale + shift


def _keep_visible(sample: Sample, boxes: torch.Tensor) -> Sample:
    """Clip boxes to the image and drop those left with no area (with their labels)."""
    boxes = clip_boxes(boxes, sample.size)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    labels = sample.labels[keep] if sample.labels is not None else None
    return replace(sample, boxes=boxes[keep], labels=labels)


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a float (C, H, W) image to (height, width), antialiased when shrinking."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    # bilinear (and its antialias triangle filter) has non-negative weights, so values stay in the input range
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def _resize_sample(sample: Sample, size: tuple[int, int]) -> Sample:
    height, width = sample.size
    image = resize_image(sample.image, size)
    boxes = None if sample.boxes is None else _scale_boxes(sample.boxes, size[1] / width, size[0] / height)
    mask = None if sample.mask is None else _resize_mask(sample.mask, size)
    return replace(sample, image=image, boxes=boxes, mask=mask)


def _pad(sample: Sample, size: tuple[int, int], left: int, top: int, fill: float, mask_fill: int) -> Sample:
    """Place the sample at (left, top) on a canvas of ``size``; negative offsets crop."""
    height, width = sample.size
    right, bottom = size[1] - width - left, size[0] - height - top
    image = F.pad(sample.image, (left, right, top, bottom), value=fill)
    mask = None
    if sample.mask is not None:
        mask = F.pad(sample.mask, (left, right, top, bottom), value=mask_fill)
    out = replace(sample, image=image, mask=mask)
    if sample.boxes is not None:
        out = _keep_visible(out, _scale_boxes(sample.boxes, 1, 1, left, top))
    return out


def _as_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


class Transform:
    """Base class: subclasses implement ``apply(sample) → sample``; calling accepts a Sample or a bare image."""

    def apply(self, sample: Sample) -> Sample:
        raise NotImplementedError

    def __call__(self, item: ImageLike):
        out = self.apply(as_sample(item))
        return out if isinstance(item, Sample) else out.image

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "generator")
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]):
        self.transforms = list(transforms)

    def apply(self, sample: Sample) -> Sample:
        for transform in self.transforms:
            sample = transform.apply(sample) if isinstance(transform, Transform) else transform(sample)
        return sample


class Resize(Transform):
    """An int resizes the shorter side to it keeping the aspect ratio (ImageNet style); (height, width) stretches."""

    def __init__(self, size: int | Sequence[int]):
        self.size = size

    def apply(self, sample: Sample) -> Sample:
        if isinstance(self.size, int):
            height, width = sample.size
            scale = self.size / min(height, width)
            target = (max(1, round(height * scale)), max(1, round(width * scale)))
        else:
            target = _as_size(self.size)
        return _resize_sample(sample, target)


def letterbox_params(image_size: tuple[int, int], size: tuple[int, int]) -> tuple[float, int, int, tuple[int, int]]:
    """(scale, pad_left, pad_top, resized (h, w)) that fit ``image_size`` inside ``size`` keeping the aspect ratio."""
    height, width = image_size
    scale = min(size[0] / height, size[1] / width)
    resized = (max(1, round(height * scale)), max(1, round(width * scale)))
    return scale, (size[1] - resized[1]) // 2, (size[0] - resized[0]) // 2, resized


class Letterbox(Transform):
    """Resize to fit inside ``size`` keeping the aspect ratio, then pad the rest with ``fill`` (centred).

    Records ``meta["letterbox"] = (scale_x, scale_y, pad_left, pad_top)`` so predictions can be mapped back to the
    original image with ``unletterbox_boxes``.
    """

    def __init__(self, size: int | Sequence[int], fill: float = 0.5, mask_fill: int = 0):
        self.size, self.fill, self.mask_fill = _as_size(size), fill, mask_fill

    def apply(self, sample: Sample) -> Sample:
        height, width = sample.size
        _, left, top, resized = letterbox_params((height, width), self.size)
        out = _pad(_resize_sample(sample, resized), self.size, left, top, self.fill, self.mask_fill)
        out.meta["letterbox"] = (resized[1] / width, resized[0] / height, left, top)
        return out


def unletterbox_boxes(boxes: torch.Tensor, letterbox: tuple[float, float, int, int]) -> torch.Tensor:
    """Map xyxy boxes predicted on a letterboxed image back to the original image's pixel coordinates."""
    scale_x, scale_y, left, top = letterbox
    return _scale_boxes(boxes, 1 / scale_x, 1 / scale_y, -left / scale_x, -top / scale_y)


class CenterCrop(Transform):
    """Crop the centre (height, width); an image smaller than that is padded with ``fill``. Boxes are clipped and
    those left outside are dropped with their labels."""

    def __init__(self, size: int | Sequence[int], fill: float = 0.0, mask_fill: int = 0):
        self.size, self.fill, self.mask_fill = _as_size(size), fill, mask_fill

    def apply(self, sample: Sample) -> Sample:
        height, width = sample.size
        # the offsets are negative when cropping; floor division matches the usual "extra pixel on the right" rule
        left = (self.size[1] - width) // 2 if self.size[1] >= width else -((width - self.size[1]) // 2)
        top = (self.size[0] - height) // 2 if self.size[0] >= height else -((height - self.size[0]) // 2)
        return _pad(sample, self.size, left, top, self.fill, self.mask_fill)


class Normalize(Transform):
    """(image - mean) / std per channel; the defaults are ImageNet's RGB statistics."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean, self.std = tuple(mean), tuple(std)

    def apply(self, sample: Sample) -> Sample:
        channels = sample.image.shape[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"Normalize has {len(self.mean)} channel statistics for a {channels}-channel image")
        mean = torch.tensor(self.mean, dtype=sample.image.dtype)[:, None, None]
        std = torch.tensor(self.std, dtype=sample.image.dtype)[:, None, None]
        return replace(sample, image=(sample.image - mean) / std)


def _rand(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def hflip(sample: Sample) -> Sample:
    """Mirror left↔right: x becomes width - x, so a box [x1, x2] becomes [width - x2, width - x1]."""
    width = sample.size[1]
    boxes = None
    if sample.boxes is not None:
        boxes = torch.stack(
            [width - sample.boxes[:, 2], sample.boxes[:, 1], width - sample.boxes[:, 0], sample.boxes[:, 3]], dim=-1
        )
    mask = None if sample.mask is None else sample.mask.flip(-1)
    return replace(sample, image=sample.image.flip(-1), boxes=boxes, mask=mask)


class RandomHorizontalFlip(Transform):
    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        self.p, self.generator = p, generator

    def apply(self, sample: Sample) -> Sample:
        return hflip(sample) if _rand(self.generator) < self.p else sample


def shift(sample: Sample, dx: int, dy: int, fill: float = 0.0, mask_fill: int = 0) -> Sample:
    """Translate by whole pixels (positive = right/down); uncovered pixels get ``fill``, boxes are clipped."""
    height, width = sample.size
    # pad on the entering side, crop on the leaving side: a shift without interpolation keeps masks exact
    moved = _pad(sample, (height + abs(dy), width + abs(dx)), max(dx, 0), max(dy, 0), fill, mask_fill)
    return _pad(moved, (height, width), min(dx, 0), min(dy, 0), fill, mask_fill)


class RandomAffineShift(Transform):
    """Random translation by up to ``max_fraction`` of the width/height in each direction (whole pixels)."""

    def __init__(
        self, max_fraction: float = 0.1, fill: float = 0.0, mask_fill: int = 0, generator: torch.Generator | None = None
    ):
        self.max_fraction, self.fill, self.mask_fill, self.generator = max_fraction, fill, mask_fill, generator

    def apply(self, sample: Sample) -> Sample:
        height, width = sample.size
        max_dx, max_dy = math.floor(width * self.max_fraction), math.floor(height * self.max_fraction)
        dx = round((2 * _rand(self.generator) - 1) * max_dx)
        dy = round((2 * _rand(self.generator) - 1) * max_dy)
        return shift(sample, dx, dy, self.fill, self.mask_fill)


def imagenet_eval_transform(size: int = 224, resize: int = 256) -> Compose:
    """The standard ImageNet evaluation preprocessing: shorter side → 256, centre crop 224, ImageNet normalisation."""
    return Compose([Resize(resize), CenterCrop(size), Normalize()])
