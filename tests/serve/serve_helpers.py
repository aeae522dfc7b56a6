"""Helpers shared by the serve tests (a module of its own: importing from conftest is fragile)."""

import io

import numpy as np


def digit_png(index: int, size: int = 8) -> tuple[bytes, int]:
    """A scikit-learn digit as PNG bytes (white ink on black, as the model was trained) and its true label."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    image = Image.fromarray(np.uint8(np.clip(np.rint(digits.images[index] * 255 / 16), 0, 255)))
    if size != 8:
        image = image.resize((size, size), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), int(digits.target[index])
