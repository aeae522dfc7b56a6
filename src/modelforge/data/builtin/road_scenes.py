"""``road-scenes``: generated driving scenes with a per-pixel class mask (not real camera footage).

Classes: 0 background (grass, roadside buildings), 1 sky, 2 road, 3 lane marking, 4 vehicle. Each scene has a
horizon at a random height, a sky gradient with soft clouds, a skyline of buildings, grass, a road in perspective
towards a random vanishing point, solid edge lines and dashed lane dividers whose dashes shrink with distance, and
0–4 vehicles (body, windscreen, wheels, shadow) sized by their depth and drawn far to near. The image and the mask
are drawn with the same polygons, so the mask is exact; noise and blur are then added to the image only.

On disk (under ``cache_dir("road-scenes")/<params-key>/``) each split is a segmentation folder: ``00000.png`` next
to ``00000_mask.png`` (palette PNG of class indices) and ``classes.txt``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from modelforge.core.atomic import atomic_directory
from modelforge.data.cache import cache_dir
from modelforge.data.formats.segmentation_folder import read_segmentation_folder, write_segmentation_folder

log = logging.getLogger("modelforge.data")
CLASS_NAMES = ("background", "sky", "road", "lane", "vehicle")
BACKGROUND, SKY, ROAD, LANE, VEHICLE = range(5)
SPLITS = ("train", "val", "test")
_VERSION = 1


@dataclass(frozen=True)
class RoadParams:
    num_train: int = 1000
    num_val: int = 150
    num_test: int = 150
    height: int = 96
    width: int = 128
    max_vehicles: int = 4
    seed: int = 0

    def key(self) -> str:
        text = json.dumps({**asdict(self), "version": _VERSION}, sort_keys=True)
        return f"{self.height}x{self.width}-s{self.seed}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


class _Canvas:
    """Draws every shape on the picture and on the class mask at once, so the two always agree."""

    def __init__(self, height: int, width: int):
        from PIL import Image, ImageDraw

        self.image = Image.new("RGB", (width, height))
        self.mask = Image.new("L", (width, height))
        self._draw_image, self._draw_mask = ImageDraw.Draw(self.image), ImageDraw.Draw(self.mask)

    def polygon(self, points: list[tuple[float, float]], colour: tuple[int, ...], label: int | None) -> None:
        self._draw_image.polygon(points, fill=colour)
        if label is not None:  # None: a picture-only detail (a shadow) that keeps the class beneath it
            self._draw_mask.polygon(points, fill=label)

    def ellipse(self, box: tuple[float, float, float, float], colour: tuple[int, ...], label: int | None) -> None:
        self._draw_image.ellipse(box, fill=colour)
        if label is not None:
            self._draw_mask.ellipse(box, fill=label)

    def rectangle(self, box: tuple[float, float, float, float], colour: tuple[int, ...], label: int | None) -> None:
        x1, y1, x2, y2 = box
        self.polygon([(x1, y1), (x2, y1), (x2, y2), (x1, y2)], colour, label)


def _colour(rng: np.random.Generator, low: tuple[int, int, int], high: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(rng.integers(lo, hi + 1)) for lo, hi in zip(low, high, strict=True))


def _sky_and_ground(canvas: _Canvas, rng: np.random.Generator, horizon: float, params: RoadParams) -> None:
    height, width = params.height, params.width
    top = np.array(_colour(rng, (40, 90, 170), (110, 160, 235)))
    bottom = np.array(_colour(rng, (150, 180, 210), (215, 230, 250)))
    for y in range(int(np.ceil(horizon))):
        shade = top + (bottom - top) * (y / max(horizon, 1))
        canvas.rectangle((0, y, width, y + 1), tuple(int(v) for v in shade), SKY)
    for _ in range(rng.integers(0, 4)):  # clouds are sky
        cx, cy = rng.uniform(0, width), rng.uniform(0, horizon * 0.7)
        rx, ry = rng.uniform(6, 20), rng.uniform(2, 6)
        canvas.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), _colour(rng, (225,) * 3, (250,) * 3), SKY)
    x = 0.0
    while x < width:  # a skyline of buildings and trees standing on the horizon: background, not sky
        w, h = rng.uniform(4, 16), rng.uniform(0, horizon * 0.35)
        if rng.uniform() < 0.6:
            canvas.rectangle((x, horizon - h, x + w, horizon + 1), _colour(rng, (60, 60, 60), (140, 130, 120)), 0)
        x += w
    canvas.rectangle((0, horizon, width, height), _colour(rng, (50, 100, 30), (90, 150, 60)), BACKGROUND)


def _road(canvas: _Canvas, rng: np.random.Generator, horizon: float, params: RoadParams) -> dict[str, float]:
    """Draws the road and its markings; returns its geometry for placing vehicles."""
    height, width = params.height, params.width
    geo = {
        "vx": width * rng.uniform(0.35, 0.65),
        "left": width * rng.uniform(-0.35, 0.12),
        "right": width * rng.uniform(0.88, 1.35),
        "top_half": rng.uniform(0.5, 2.0),
    }
    vx, left, right, top_half = geo["vx"], geo["left"], geo["right"], geo["top_half"]
    grey = int(rng.integers(70, 126))  # asphalt is grey with at most a faint tint
    asphalt = tuple(int(np.clip(grey + rng.integers(-6, 7), 0, 255)) for _ in range(3))
    canvas.polygon([(vx - top_half, horizon), (vx + top_half, horizon), (right, height), (left, height)], asphalt, ROAD)
    lanes = int(rng.integers(2, 4))
    line_colour = _colour(rng, (215, 215, 200), (255, 255, 240))
    mark_width = (right - left) * rng.uniform(0.015, 0.025)
    for k in range(lanes + 1):
        frac = 0.03 + 0.94 * k / lanes
        dashed = 0 < k < lanes
        _lane_line(canvas, rng, horizon, geo, frac, mark_width, dashed, line_colour, params)
    geo["lanes"] = lanes
    return geo


def _lane_line(
    canvas: _Canvas,
    rng: np.random.Generator,
    horizon: float,
    geo: dict[str, float],
    frac: float,
    mark_width: float,
    dashed: bool,
    colour: tuple[int, int, int],
    params: RoadParams,
) -> None:
    """One marking from the vanishing point to the bottom edge; dashes are equally long on the ground, so on the
    picture they shrink towards the horizon (t = near_depth / depth)."""
    height = params.height
    bottom_x = geo["left"] + (geo["right"] - geo["left"]) * frac
    top_x = geo["vx"] - geo["top_half"] + 2 * geo["top_half"] * frac

    def corners(t1: float, t2: float) -> list[tuple[float, float]]:
        out = []
        for t, side in ((t1, -1), (t2, -1), (t2, 1), (t1, 1)):
            x = top_x + (bottom_x - top_x) * t + side * mark_width * t / 2
            out.append((x, horizon + (height - horizon) * t))
        return out

    if not dashed:
        canvas.polygon(corners(0.02, 1.0), colour, LANE)
        return
    depth = rng.uniform(1.0, 2.0)  # in units of the nearest visible depth
    while depth < 40:
        canvas.polygon(corners(1 / (depth + 0.8), min(1.0, 1 / depth)), colour, LANE)
        depth += 2.0


def _vehicles(canvas: _Canvas, rng: np.random.Generator, horizon: float, geo: dict, params: RoadParams) -> None:
    height = params.height
    cars = []
    for _ in range(int(rng.integers(0, params.max_vehicles + 1))):
        t = rng.uniform(0.12, 0.95)  # depth as the fraction of the way from the horizon to the bottom edge
        lane = int(rng.integers(geo["lanes"]))
        if any(lane == other_lane and abs(t - other_t) < 0.25 for other_t, other_lane, _, _ in cars):
            continue  # no two cars in one spot
        frac = 0.03 + 0.94 * (lane + 0.5) / geo["lanes"]
        left = geo["vx"] - geo["top_half"] + (geo["left"] - geo["vx"] + geo["top_half"]) * t
        right = geo["vx"] + geo["top_half"] + (geo["right"] - geo["vx"] - geo["top_half"]) * t
        cars.append((t, lane, left + (right - left) * frac, (right - left) / geo["lanes"] * rng.uniform(0.6, 0.85)))
    for t, _, cx, w in sorted(cars):  # far (small t) first, so nearer cars hide them
        base = horizon + (height - horizon) * t
        h = w * rng.uniform(0.6, 0.85)
        body = _colour(rng, (20, 20, 20), (235, 235, 235))
        canvas.rectangle((cx - w * 0.55, base - h * 0.08, cx + w * 0.55, base + h * 0.06), (35, 35, 35), None)
        canvas.rectangle((cx - w / 2, base - h, cx + w / 2, base), body, VEHICLE)
        canvas.rectangle((cx - w * 0.38, base - h * 0.92, cx + w * 0.38, base - h * 0.55), (40, 50, 70), VEHICLE)
        for side in (-1, 1):  # wheels peek out under the body
            wx = cx + side * w * 0.32
            canvas.rectangle((wx - w * 0.1, base - h * 0.05, wx + w * 0.1, base + h * 0.08), (15, 15, 15), VEHICLE)
        for side in (-1, 1):  # rear lights: still vehicle
            lx = cx + side * w * 0.38
            canvas.rectangle((lx - w * 0.07, base - h * 0.42, lx + w * 0.07, base - h * 0.3), (200, 30, 30), VEHICLE)


def render_road_scene(rng: np.random.Generator, params: RoadParams) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 (H, W, 3) picture and its uint8 (H, W) class mask."""
    from PIL import ImageFilter

    canvas = _Canvas(params.height, params.width)
    horizon = params.height * rng.uniform(0.32, 0.5)
    _sky_and_ground(canvas, rng, horizon, params)
    geo = _road(canvas, rng, horizon, params)
    _vehicles(canvas, rng, horizon, geo, params)
    image = canvas.image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.6)))
    pixels = np.asarray(image, dtype=np.float32) * np.float32(rng.uniform(0.75, 1.15))  # exposure
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(rng.uniform(2, 9))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8), np.asarray(canvas.mask, dtype=np.uint8)


def road_scenes(params: RoadParams | None = None, **overrides) -> Path:
    """Generate (or find in the cache) the dataset; returns the folder holding ``train/``, ``val/``, ``test/``."""
    params = replace(params or RoadParams(), **overrides)
    root = cache_dir("road-scenes") / params.key()
    if (root / "test" / "classes.txt").is_file():
        return root
    log.info("generating road-scenes into %s", root)
    counts = {"train": params.num_train, "val": params.num_val, "test": params.num_test}
    with atomic_directory(root) as tmp:
        for code, split in enumerate(SPLITS):
            rngs = (np.random.default_rng([params.seed, code, i]) for i in range(counts[split]))
            pairs = [render_road_scene(rng, params) for rng in rngs]
            write_segmentation_folder(
                tmp / split, [p[0] for p in pairs], [p[1] for p in pairs], class_names=CLASS_NAMES
            )
    return root


def load_road_scenes(
    split: Literal["train", "val", "test"], params: RoadParams | None = None, **overrides
) -> dict[str, np.ndarray]:
    """``images`` uint8 (N, H, W, 3) and ``masks`` uint8 (N, H, W) class indices, read back from the PNG folder."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    folder = read_segmentation_folder(road_scenes(params, **overrides) / split, on_error="fail")
    images, masks = folder.arrays("RGB")
    return {"images": np.stack(images), "masks": np.stack(masks).astype(np.uint8)}
