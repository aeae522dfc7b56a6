"""Small image sets written three ways — an image folder, a Hugging Face ``save_to_disk`` folder and WebDataset tar
shards — from the same encoded files, so tests can compare what each source gives."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("dark", "light")


def encoded_images(count: int = 40, seed: int = 0) -> list[tuple[str, str, bytes]]:
    """(class, file name, encoded bytes): PNGs and JPEGs of a few sizes and modes, half of each class."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(count):
        label = CLASSES[i % 2]
        shape = (10 + i % 3, 10 + i % 4, 3)  # a few 10x10: already the size some tests decode to
        pixels = np.clip(rng.normal(60 + 130 * (i % 2), 30, shape), 0, 255).astype(np.uint8)
        image, suffix = Image.fromarray(pixels), ("png", "jpg")[i % 4 == 3]
        if i % 5 == 0:
            image = image.convert("L")  # a grayscale file among colour ones: converted on decode
        buffer = io.BytesIO()
        image.save(buffer, "PNG" if suffix == "png" else "JPEG")
        items.append((label, f"{i:04d}.{suffix}", buffer.getvalue()))
    return items


def write_folder(root: Path, items: list[tuple[str, str, bytes]]) -> Path:
    for label, name, raw in items:
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / name).write_bytes(raw)
    return root


def write_saved_dataset(root: Path, splits: dict[str, list[tuple[str, str, bytes]]]) -> Path:
    """A save_to_disk DatasetDict: an ``image`` column (datasets.Image) and a ClassLabel ``label`` whose names are
    deliberately not sorted (the task sorts them, as a folder's)."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["light", "dark"]),
                                  "name": datasets.Value("string")})
    parts = {split: datasets.Dataset.from_dict(
        {"image": [{"bytes": raw, "path": None} for _, _, raw in items],
         "label": [["light", "dark"].index(label) for label, _, _ in items], "name": [name for _, name, _ in items]},
        features=features) for split, items in splits.items()}
    datasets.DatasetDict(parts).save_to_disk(str(root))
    return root


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(root: Path, items: list[tuple[str, str, bytes]], count: int = 3, prefix: str = "shard",
                 label_ext: str = "cls") -> Path:
    """Samples ``KEY.png|jpg`` + ``KEY.cls`` (the class name), dealt round-robin into ``count`` shards."""
    root.mkdir(parents=True, exist_ok=True)
    for s in range(count):
        with tarfile.open(root / f"{prefix}-{s:03d}.tar", "w") as tar:
            for label, name, raw in items[s::count]:
                key, suffix = name.split(".")
                add_member(tar, f"{key}.{suffix}", raw)
                add_member(tar, f"{key}.{label_ext}", label.encode())
    return root
