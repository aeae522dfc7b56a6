"""A tiny captioned-image set on disk for the captioning tests: coloured squares left or right of a dark bar, with a
captions.csv naming colour and side (two captions per image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (60, 90, 240)}


def square_picture(colour: str, left: bool, size: int = 32) -> np.ndarray:
    pixels = np.full((size, size, 3), 30, dtype=np.uint8)
    pixels[4:size - 4, size // 2 - 1:size // 2 + 1] = 90
    x0 = 2 if left else size // 2 + 3
    pixels[10:22, x0:x0 + 10] = COLOURS[colour]
    return pixels


def caption_folder(root: Path, count: int = 24) -> Path:
    """``root/images/NNN.png`` and ``root/captions.csv``; returns the csv."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = ["image,caption"]
    for i in range(count):
        colour, left = list(COLOURS)[i % 3], bool(i // 3 % 2)
        Image.fromarray(square_picture(colour, left)).save(root / "images" / f"{i:03d}.png")
        side = "left" if left else "right"
        lines += [f"images/{i:03d}.png,a {colour} square on the {side}", f"images/{i:03d}.png,{colour} box {side}"]
    csv = root / "captions.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv
