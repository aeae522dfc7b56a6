"""``moving-digits``: generated clips of one MNIST digit that moves in one of 8 directions, rotates, or stays still.

Ten motion classes (the digit's identity is irrelevant): up, up-right, right, down-right, down, down-left, left,
up-left, rotating (either way, 8–20° a frame) and static. Each clip has T frames (16 by default) of 32×32 or 64×64
grayscale pixels; the digit is scaled to half the frame side and moves with sub-pixel steps (bilinear resampling),
covering 50–95 % of the free space over the clip. Train clips use MNIST's training digits, val/test its test digits.
Labels cycle through the classes, so every split is balanced.

Clips are uint8 arrays (N, T, S, S), cached as .npz per split; ``write_clips`` exports them as video files in the
``root/<class>/<clip>.avi`` layout that ``modelforge.data.formats.video.read_video_folder`` reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from modelforge.data.builtin.mnist import load_mnist
from modelforge.data.cache import cache_dir, load_arrays, save_arrays_atomic

log = logging.getLogger("modelforge.data")
MOTION_CLASSES = ("up", "up-right", "right", "down-right", "down", "down-left", "left", "up-left", "rotating", "static")
# unit steps in image coordinates (y grows downwards) for the 8 direction classes
_DIRECTIONS = [(0, -1), (1, -1), (1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1)]
SPLITS = ("train", "val", "test")
_VERSION = 1


@dataclass(frozen=True)
class ClipParams:
    num_train: int = 5000
    num_val: int = 500
    num_test: int = 500
    frames: int = 16
    size: Literal[32, 64] = 32
    noise: float = 0.0  # standard deviation of added Gaussian pixel noise, in grey levels
    seed: int = 0

    def key(self) -> str:
        text = json.dumps({**asdict(self), "version": _VERSION}, sort_keys=True)
        return f"{self.size}px-{self.frames}f-s{self.seed}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def _trajectory(rng: np.random.Generator, label: int, free: float, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left positions (T, 2) and rotation angles (T,) in degrees for one clip of class ``label``."""
    steps = np.arange(frames, dtype=np.float64)
    if label < 8:
        direction = np.array(_DIRECTIONS[label], dtype=np.float64)
        travel = rng.uniform(0.5, 0.95) * free  # along each moving axis, over the whole clip
        start = np.where(direction > 0, rng.uniform(0, free - travel, 2), rng.uniform(travel, free, 2))
        start = np.where(direction == 0, rng.uniform(0, free, 2), start)
        positions = start + direction * travel * steps[:, None] / max(frames - 1, 1)
        return positions, np.zeros(frames)
    position = np.tile(rng.uniform(0.2 * free, 0.8 * free, 2), (frames, 1))
    if label == 8:
        speed = rng.uniform(8, 20) * rng.choice([-1, 1])
        return position, rng.uniform(0, 360) + speed * steps
    return position, np.zeros(frames)


def render_clip(rng: np.random.Generator, digit: np.ndarray, label: int, params: ClipParams) -> np.ndarray:
    """One uint8 (T, S, S) clip of ``digit`` (a 28×28 uint8 image) performing motion class ``label``."""
    from PIL import Image

    size = params.size
    side = size // 2
    patch = Image.fromarray(digit).resize((side, side), Image.BILINEAR)
    positions, angles = _trajectory(rng, label, float(size - side), params.frames)
    frames = np.empty((params.frames, size, size), dtype=np.uint8)
    half = side / 2
    for t, ((x, y), angle) in enumerate(zip(positions, angles, strict=True)):
        # PIL's affine maps each output pixel back into the patch: undo the translation, then the rotation
        cos, sin = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        cx, cy = x + half, y + half
        coeffs = (cos, sin, half - cos * cx - sin * cy, -sin, cos, half + sin * cx - cos * cy)
        frame = patch.transform((size, size), Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=0)
        frames[t] = np.asarray(frame)
    if params.noise > 0:
        noisy = frames.astype(np.float32) + rng.standard_normal(frames.shape, dtype=np.float32) * params.noise
        frames = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return frames


def _generate(split: str, params: ClipParams) -> dict[str, np.ndarray]:
    mnist = load_mnist()
    half = len(mnist["test_images"]) // 2
    digits = {
        "train": mnist["train_images"],
        "val": mnist["test_images"][:half],
        "test": mnist["test_images"][half:],
    }[split]
    count = {"train": params.num_train, "val": params.num_val, "test": params.num_test}[split]
    clips = np.empty((count, params.frames, params.size, params.size), dtype=np.uint8)
    labels = np.arange(count, dtype=np.int64) % len(MOTION_CLASSES)
    code = SPLITS.index(split)
    for index in range(count):
        rng = np.random.default_rng([params.seed, code, index])
        clips[index] = render_clip(rng, digits[rng.integers(len(digits))], int(labels[index]), params)
    return {"clips": clips, "labels": labels}


def moving_digits(
    split: Literal["train", "val", "test"], params: ClipParams | None = None, **overrides
) -> dict[str, np.ndarray]:
    """``clips`` uint8 (N, T, S, S) and ``labels`` int64 (N,) indexing ``MOTION_CLASSES``; generated once, cached."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    params = replace(params or ClipParams(), **overrides)
    if params.size not in (32, 64) or params.frames < 2:
        raise ValueError(f"moving-digits needs size 32 or 64 and at least 2 frames, got {params.size}, {params.frames}")
    path = cache_dir("moving-digits", params.key()) / f"{split}.npz"
    cached = load_arrays(path)
    if cached is not None:
        return cached
    log.info("generating moving-digits %s into %s", split, path)
    arrays = _generate(split, params)
    save_arrays_atomic(path, **arrays)
    return arrays


def write_clips(root: str | Path, clips: np.ndarray, labels: np.ndarray, fps: float = 10.0, suffix: str = ".avi"):
    """Write clips as videos under ``root/<class>/clip_00000.avi``; returns ``root``.

    MJPG (the .avi default) is lossy; pass ``suffix=".mkv"`` for lossless FFV1.
    """
    from modelforge.data.formats.video import write_video

    root = Path(root)
    for index, (clip, label) in enumerate(zip(clips, labels, strict=True)):
        write_video(root / MOTION_CLASSES[int(label)] / f"clip_{index:05d}{suffix}", clip, fps=fps)
    return root
