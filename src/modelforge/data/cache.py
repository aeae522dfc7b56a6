"""The on-disk cache for prepared tensors: ``$MODELFORGE_CACHE`` or ``~/.cache/modelforge``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("MODELFORGE_CACHE", Path.home() / ".cache" / "modelforge"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_arrays_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write an .npz next to ``path`` and rename it into place, so a killed process leaves no half file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):
        return None  # a corrupt cache entry is rebuilt, not trusted
