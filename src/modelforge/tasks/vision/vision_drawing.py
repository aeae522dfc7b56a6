"""Pictures of dense predictions with Pillow: boxes drawn on images, class masks in colour, side-by-side panels.

Used by ``modelforge predict`` (the annotated picture saved next to the input), the run report's sample view and
the docs' sample figures, so what a user sees is drawn by one piece of code.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelforge.data.formats.segmentation_folder import default_palette

# well-separated box colours, cycled by class index
_BOX_COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40),
                (128, 0, 0)]  # fmt: skip


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = image.transpose(1, 2, 0)  # (C, H, W) → (H, W, C)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.dtype != np.uint8:
        image = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    return np.stack([image] * 3, axis=-1) if image.ndim == 2 else image


def draw_detections(image: np.ndarray, detections: Sequence[dict[str, Any]], scale: int = 1,
                    class_index: dict[str, int] | None = None):
    """A PIL image: ``image`` (uint8 (H, W[, C]) or float in [0, 1]) with each ``{label, score, box: [x, y, w, h]}``
    drawn as a rectangle and a "label score" tag; ``scale`` enlarges small images first so tags stay readable."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(_rgb(image))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(picture)
    for det in detections:
        x, y, w, h = (float(v) * scale for v in det["box"])
        key = class_index.get(str(det["label"]), 0) if class_index else zlib.crc32(str(det["label"]).encode())
        colour = _BOX_COLOURS[key % len(_BOX_COLOURS)]
        draw.rectangle((x, y, x + w, y + h), outline=colour, width=max(1, scale))
        tag = f"{det['label']} {det['score']:.2f}" if "score" in det else str(det["label"])
        left, top, right, bottom = draw.textbbox((x, y), tag)
        top_y = y - (bottom - top) - 2 if y - (bottom - top) - 2 >= 0 else y + 1
        draw.rectangle((x, top_y, x + (right - left) + 2, top_y + (bottom - top) + 2), fill=colour)
        draw.text((x + 1, top_y), tag, fill=(0, 0, 0) if sum(colour) > 380 else (255, 255, 255))
    return picture


def colour_mask(mask: np.ndarray) -> np.ndarray:
    """An (H, W) class-index mask as uint8 (H, W, 3) colours (the palette the mask PNGs use)."""
    palette = np.array(default_palette(), dtype=np.uint8).reshape(256, 3)
    return palette[np.clip(np.asarray(mask), 0, 255).astype(np.int64)]


def overlay_mask(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Colours of the non-background classes blended over the image (uint8 (H, W, 3))."""
    rgb, colours = _rgb(image).astype(np.float32), colour_mask(mask).astype(np.float32)
    blend = np.where((np.asarray(mask) > 0)[..., None], (1 - alpha) * rgb + alpha * colours, rgb)
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def panel_grid(rows: Sequence[Sequence[Any]], titles: Sequence[str] = (), scale: int = 2, gap: int = 4):
    """A PIL image of equally sized pictures (PIL images or arrays) in rows, with optional column titles on top."""
    from PIL import Image, ImageDraw

    pictures = [[p if isinstance(p, Image.Image) else Image.fromarray(_rgb(p)) for p in row] for row in rows]
    cell_w = max(p.width for row in pictures for p in row) * scale
    cell_h = max(p.height for row in pictures for p in row) * scale
    header = 14 if titles else 0
    columns = max(len(row) for row in pictures)
    canvas = Image.new("RGB", (columns * (cell_w + gap) + gap, header + len(pictures) * (cell_h + gap) + gap),
                       (255, 255, 255))  # fmt: skip
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(titles):
        draw.text((gap + c * (cell_w + gap), 1), title, fill=(0, 0, 0))
    for r, row in enumerate(pictures):
        for c, picture in enumerate(row):
            resized = picture.resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(resized, (gap + c * (cell_w + gap), header + gap + r * (cell_h + gap)))
    return canvas


def png_bytes(picture: Any) -> bytes:
    """A PIL image as PNG bytes (optimised: these pictures go into reports and docs)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
