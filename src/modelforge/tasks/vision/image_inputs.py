"""Raw image inputs → arrays: at their original size for the dense vision tasks (detection, segmentation), or
converted and resized for the fixed-size ones (``resized_from_bytes``).

``modelforge predict`` passes file paths; the server passes the (size-checked) uploaded bytes, or a base64 string
from JSON. DICOM files (``.dcm``) are read with pydicom, so a segmentation model trained on scans predicts on scans.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modelforge.core.errors import DataError


def image_decode_errors() -> tuple[type[BaseException], ...]:
    """What Pillow raises for a corrupt or hostile file, besides ``OSError``: ``SyntaxError`` (bad PNG chunks),
    ``EOFError`` (truncation), ``ValueError`` (e.g. a tile outside a GIF frame of width 0), ``struct.error`` (short
    headers), ``zlib.error`` and ``DecompressionBombError`` (over Pillow's own pixel guard)."""
    import struct
    import zlib

    from PIL import Image

    return OSError, SyntaxError, EOFError, ValueError, struct.error, zlib.error, Image.DecompressionBombError


def _from_bytes(raw: bytes, mode: Literal["RGB", "L"]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if raw[128:132] == b"DICM":  # the DICOM preamble is 128 bytes, then the magic
        return _dicom_bytes(raw)
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            return np.asarray(img.convert(mode), dtype=np.uint8)
    except (UnidentifiedImageError, *image_decode_errors()) as exc:
        raise DataError(f"input is not a readable image ({exc.__class__.__name__}: {exc})") from None


def _dicom_bytes(raw: bytes) -> np.ndarray:
    import tempfile

    from modelforge.data.builtin.phantoms import read_dicom

    with tempfile.NamedTemporaryFile(suffix=".dcm") as handle:
        handle.write(raw)
        handle.flush()
        return read_dicom(handle.name)


def read_image_input(item: Any, mode: Literal["RGB", "L"] = "RGB") -> np.ndarray:
    """A path, bytes, base64 string or array → (H, W, 3) uint8 for RGB, (H, W) for L (DICOM: its stored values).

    DataError with the reason for anything else (a missing file, a corrupt image, text that is not base64).
    """
    from modelforge.data.transforms import load_image

    if isinstance(item, np.ndarray):
        return item
    if isinstance(item, Path) or (isinstance(item, str) and len(item) < 4096 and Path(item).suffix):
        path = Path(item)
        if path.suffix.lower() == ".dcm":
            from modelforge.data.builtin.phantoms import read_dicom

            return read_dicom(path)
        if not path.is_file():
            raise DataError(f"{path}: no such image file")
        return np.asarray(load_image(path, mode), dtype=np.uint8)
    if isinstance(item, (bytes, bytearray)):
        return _from_bytes(bytes(item), mode)
    if isinstance(item, str):
        try:
            raw = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise DataError(f"cannot read image input {item[:60]!r}: give an image path, bytes or base64") from None
        return _from_bytes(raw, mode)
    raise DataError(f"cannot read image input of type {type(item).__name__}: give an image path, bytes or base64")


def resized_from_bytes(raw: bytes, channels: int, size: int) -> np.ndarray:
    """Encoded image bytes → uint8 (channels, size, size), converted to grey or RGB and resized bilinearly: what
    the fixed-size image tasks (classification, autoencoding) feed their networks."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as img:
            img = img.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except image_decode_errors() as exc:
        raise DataError(f"input is not a readable image ({exc.__class__.__name__}: {exc})") from None
    return array[None] if channels == 1 else array.transpose(2, 0, 1)
