"""``scenes-digits``: a generated object-detection dataset written as a real COCO dataset on disk.

Each RGB image (128×128 by default) holds 1–5 objects pasted at random scales and positions on a cluttered
background (colour gradient, noise, thin lines, soft blobs). Objects are MNIST digits (classes "0".."9") and,
optionally, three simple shapes ("circle", "square", "triangle"). Train scenes use MNIST's training digits, val and
test scenes its test digits, so no digit image is shared between training and evaluation.

On disk (under ``cache_dir("scenes-digits")/<params-key>/``, built once per parameter set)::

    train/instances.json   COCO instances: images, annotations (bbox [x, y, w, h], area), categories (ids 1..13)
    train/images/000000.jpg ...
    val/...  test/...

Everything is generated (not real photographs) and deterministic for a given seed and parameters.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from modelforge.core.atomic import atomic_directory
from modelforge.data.builtin.mnist import load_mnist
from modelforge.data.cache import cache_dir
from modelforge.data.formats.coco import CocoAnnotation, CocoCategory, CocoDataset, CocoImage, write_coco

log = logging.getLogger("modelforge.data")
SHAPES = ("circle", "square", "triangle")
SPLITS = ("train", "val", "test")
_VERSION = 1  # bump when the rendering changes, so cached datasets are rebuilt


@dataclass(frozen=True)
class SceneParams:
    num_train: int = 4000
    num_val: int = 500
    num_test: int = 500
    image_size: int = 128
    min_objects: int = 1
    max_objects: int = 5
    min_scale: float = 0.14  # object size as a fraction of the image side
    max_scale: float = 0.38
    shapes: bool = True
    seed: int = 0

    def key(self) -> str:
        text = json.dumps({**asdict(self), "version": _VERSION}, sort_keys=True)
        return f"{self.image_size}px-s{self.seed}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"

    def class_names(self) -> list[str]:
        return [str(d) for d in range(10)] + (list(SHAPES) if self.shapes else [])


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """A cluttered float32 RGB background in [0, 255] and its mean luminance."""
    from PIL import Image, ImageDraw, ImageFilter

    ramp = np.linspace(0, 1, size, dtype=np.float32)
    slope = rng.uniform(-50, 50, (2, 3)).astype(np.float32)
    gradient = ramp[None, :, None] * slope[0] + ramp[:, None, None] * slope[1]
    base = Image.fromarray(np.clip(rng.uniform(40, 215, 3).astype(np.float32) + gradient, 0, 255).astype(np.uint8))
    blobs = Image.new("RGB", (size, size))
    alpha = Image.new("L", (size, size))
    draw_b, draw_a = ImageDraw.Draw(blobs), ImageDraw.Draw(alpha)
    for _ in range(rng.integers(2, 6)):
        cx, cy, rx, ry = rng.uniform(0, size, 2).tolist() + rng.uniform(size * 0.06, size * 0.25, 2).tolist()
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        draw_b.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw_a.ellipse(box, fill=int(rng.integers(60, 140)))
    # blurred, half-transparent blobs are clutter; crisp objects are what the detector must find
    radius = size / 40
    base.paste(blobs.filter(ImageFilter.GaussianBlur(radius)), mask=alpha.filter(ImageFilter.GaussianBlur(radius)))
    draw = ImageDraw.Draw(base)
    for _ in range(rng.integers(2, 7)):
        xy = rng.uniform(-0.2 * size, 1.2 * size, 4).tolist()
        draw.line(xy, fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=int(rng.integers(1, 3)))
    noise = rng.standard_normal((size, size, 3), dtype=np.float32) * np.float32(rng.uniform(4, 14))
    image = np.asarray(base, dtype=np.float32) + noise
    return image, float(image.mean())


def _shape_alpha(kind: str, side: int) -> np.ndarray:
    """An antialiased (side, side) alpha mask in [0, 1] of a filled shape, drawn at 4× and reduced."""
    from PIL import Image, ImageDraw

    big = 4 * side
    canvas = Image.new("L", (big, big))
    draw = ImageDraw.Draw(canvas)
    if kind == "circle":
        draw.ellipse((0, 0, big - 1, big - 1), fill=255)
    elif kind == "square":
        draw.rectangle((0, 0, big - 1, big - 1), fill=255)
    else:
        draw.polygon([(big / 2, 0), (big - 1, big - 1), (0, big - 1)], fill=255)
    return np.asarray(canvas.resize((side, side), Image.BOX), dtype=np.float32) / 255


def _digit_alpha(digit: np.ndarray, side: int) -> np.ndarray:
    """A digit cropped to its ink and scaled so that its longer side is ``side``; alpha in [0, 1]."""
    from PIL import Image

    rows, cols = np.nonzero(digit > 30)
    crop = digit[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = side / max(crop.shape)
    height, width = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    return np.asarray(Image.fromarray(crop).resize((width, height), Image.BILINEAR), dtype=np.float32) / 255


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area else 0.0


def _object_colour(rng: np.random.Generator, background_luma: float) -> np.ndarray:
    """A saturated colour whose brightness is far from the background's, so every object stays visible."""
    colour = rng.uniform(0, 1, 3)
    colour = colour / max(colour.max(), 1e-6)
    return colour * rng.uniform(20, 70) if background_luma > 128 else 185 + colour * rng.uniform(40, 70)


def render_scene(
    rng: np.random.Generator, digits: np.ndarray, labels: np.ndarray, params: SceneParams
) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """One uint8 (S, S, 3) scene and its objects as (category id, [x, y, w, h]); category ids start at 1."""
    size = params.image_size
    image, luma = _background(rng, size)
    num_classes = len(params.class_names())
    objects: list[tuple[int, list[float]]] = []
    placed: list[tuple[int, int, int, int]] = []
    for _ in range(int(rng.integers(params.min_objects, params.max_objects + 1))):
        label = int(rng.integers(num_classes))
        side = max(6, round(size * rng.uniform(params.min_scale, params.max_scale)))
        if label < 10:
            pool = np.flatnonzero(labels == label)
            alpha = _digit_alpha(digits[pool[rng.integers(len(pool))]], side)
        else:
            alpha = _shape_alpha(SHAPES[label - 10], side)
        height, width = alpha.shape
        for _attempt in range(30):  # find a spot that does not hide an earlier object much
            x, y = int(rng.integers(0, size - width + 1)), int(rng.integers(0, size - height + 1))
            if all(_iou((x, y, x + width, y + height), other) <= 0.15 for other in placed):
                break
        else:
            continue
        region = image[y : y + height, x : x + width]
        region[:] = region * (1 - alpha[..., None]) + _object_colour(rng, luma) * alpha[..., None]
        rows, cols = np.nonzero(alpha > 0.25)
        box = (x + int(cols.min()), y + int(rows.min()), x + int(cols.max()) + 1, y + int(rows.max()) + 1)
        placed.append(box)
        objects.append((label + 1, [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), objects


def _write_split(root: Path, split: str, count: int, digits: np.ndarray, labels: np.ndarray, params: SceneParams):
    from PIL import Image

    (root / split / "images").mkdir(parents=True)
    split_code = SPLITS.index(split)
    images, ann_id = [], 1
    for index in range(count):
        # one generator per image: any image can be regenerated alone, independent of the split sizes
        rng = np.random.default_rng([params.seed, split_code, index])
        pixels, objects = render_scene(rng, digits, labels, params)
        name = f"{index:06d}.jpg"
        Image.fromarray(pixels).save(root / split / "images" / name, quality=92)
        image = CocoImage(index + 1, name, params.image_size, params.image_size)
        for category_id, bbox in objects:
            image.annotations.append(CocoAnnotation(ann_id, image.id, category_id, tuple(bbox), bbox[2] * bbox[3]))
            ann_id += 1
        images.append(image)
    categories = [
        CocoCategory(i + 1, name, "digit" if i < 10 else "shape") for i, name in enumerate(params.class_names())
    ]
    info = {"description": f"scenes-digits {split} (generated; MNIST digits and shapes on clutter)", **asdict(params)}
    write_coco(CocoDataset(images, categories, info=info), root / split / "instances.json")


def mnist_glyph_sources() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The digits each split of a generated scene set draws from: MNIST's training digits for train, the two halves
    of its test digits for val and test (no glyph is seen in two splits)."""
    mnist = load_mnist()
    half = len(mnist["test_images"]) // 2
    return {
        "train": (mnist["train_images"], mnist["train_labels"]),
        "val": (mnist["test_images"][:half], mnist["test_labels"][:half]),
        "test": (mnist["test_images"][half:], mnist["test_labels"][half:]),
    }


def cached_glyph_splits(name: str, params: Any, finished: str, write_split: Callable[..., None]) -> Path:
    """The generated scene set ``name`` for ``params``: ``cache_dir(name)/<params key>``, written there once (all
    splits at once, atomically) unless ``test/<finished>`` shows it is already there. ``write_split(folder, split,
    count, glyphs, labels, params)`` draws ``params.num_<split>`` scenes from that split's MNIST glyphs."""
    root = cache_dir(name) / params.key()
    if (root / "test" / finished).is_file():
        return root
    log.info("generating %s into %s", name, root)
    sources = mnist_glyph_sources()
    counts = {"train": params.num_train, "val": params.num_val, "test": params.num_test}
    with atomic_directory(root) as tmp:
        for split in SPLITS:
            write_split(tmp, split, counts[split], *sources[split], params)
    return root


def scenes_digits(params: SceneParams | None = None, **overrides) -> Path:
    """Generate (or find in the cache) the dataset; returns the folder holding ``train/``, ``val/``, ``test/``."""
    params = replace(params or SceneParams(), **overrides)
    if not 1 <= params.min_objects <= params.max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {params.min_objects}, {params.max_objects}")
    return cached_glyph_splits("scenes-digits", params, "instances.json", _write_split)
