"""The image–text tasks' splits: the generated scenes-captions set, or the user's caption files held out by image.

Files: ``train/``, ``val/``, ``test/`` subfolders are read as they are; a split that is missing is held out of the
training images by a hash of each image's name (``data.val_fraction`` / ``data.test_fraction``), so every caption
of one image stays in one split. The found line says what was read and where each split came from.

``RetrievalSet`` is one split as the trainer reads it: the images in a pixel store (the user's files decoded per
item, DataLoader workers by default; the generated scenes held in memory) beside the encoded captions in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from modelforge.core.errors import ConfigError, DataError
from modelforge.data.caption_pixels import FilePixels, HeldPixels, ImagesOnAStore, stack_images
from modelforge.data.captions import CaptionedImages, hold_out_missing
from modelforge.data.found import files_found, split_folders_found


def _scenes(cfg: Any) -> tuple[dict[str, CaptionedImages], dict[str, Any]]:
    from modelforge.data.builtin.caption_scenes import CaptionSceneParams, caption_scenes

    params = CaptionSceneParams(num_train=cfg.scenes_train, num_val=cfg.scenes_val, num_test=cfg.scenes_test,
                                image_size=cfg.image_size, seed=cfg.scenes_seed, single_share=cfg.scenes_single_share)
    parts = caption_scenes(params)
    summary = {"source": "scenes-captions (generated)", "origins": {name: data.origin for name, data in parts.items()}}
    return parts, summary


def _held_out(parts: dict[str, CaptionedImages], cfg: Any, base: str) -> dict[str, CaptionedImages]:
    """Split val/test off train where the files gave none; a split left empty is a one-line error."""
    shares = {name: getattr(cfg, f"{name}_fraction") for name in ("val", "test")}
    held = hold_out_missing(parts, shares, cfg.split_seed, base)
    for name, data in held.items():
        if len(data) == 0:
            what = f"{shares[name]:.0%}" if name in shares else "val/test"
            raise DataError(f"{base}: holding out {what} for {name} leaves it empty ({len(parts['train'])} images); "
                            f"give more images or a {name}/ folder")
    return held


def _files(cfg: Any) -> tuple[dict[str, CaptionedImages], dict[str, Any]]:
    from modelforge.data.formats.image_captions import caption_file, read_caption_splits

    if not cfg.path:
        raise ConfigError("data.source=files needs data.path (captions.csv/.jsonl, captions_*.json or a folder)")
    read = read_caption_splits(cfg.path, cfg.images_dir, cfg.on_error, cfg.image_column, cfg.caption_column)
    whole, path = "all" in read, Path(cfg.path)
    file = caption_file(path) if whole and path.is_dir() else None  # the one captions file read from the folder
    name = f"{path.name}/{file.name}" if file is not None else path.name
    parts = {"train": read["all"]} if whole else dict(read)
    parts = _held_out(parts, cfg, name)
    sizes = {split: len(parts[split]) for split in ("train", "val", "test") if split in parts}
    what = f"{sum(d.num_captions for d in parts.values())} captions of {sum(sizes.values())} images in {name}"
    if whole:
        found = files_found(what, sizes, name, how=" by hash")
    else:
        found = split_folders_found(what, cfg.path, list(read), sizes)
    return parts, {"source": "files", "found": found}


def load_splits(cfg: Any) -> tuple[dict[str, CaptionedImages], dict[str, Any]]:
    """``({"train", "val"?, "test"?: CaptionedImages}, summary)``; ``data.limit`` keeps the first N of each split."""
    parts, summary = _scenes(cfg) if cfg.source == "scenes" else _files(cfg)
    if cfg.limit:
        parts = {name: data.limit(cfg.limit) for name, data in parts.items()}
    return parts, summary


class RetrievalSet(ImagesOnAStore):
    """Items ``(uint8 image (3, S, S), caption ids (K, L), caption lengths (K,), caption count[, the frozen text
    tower's pooled features (K, D)])``; ``get_batch`` gathers the same tuple batched (as ``collate_pairs`` joins
    the items)."""

    def __init__(self, store: HeldPixels | FilePixels, *text: torch.Tensor):
        if any(len(t) != len(store) for t in text):
            raise ValueError("RetrievalSet needs one row of caption tensors per image")
        self.store, self.text = store, text

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return (self.store.one(index), *(t[index] for t in self.text))

    def get_batch(self, indices: Any) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return (self.store.get(index), *(t[index] for t in self.text))


def collate_pairs(items: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """Items of ``RetrievalSet`` (from DataLoader workers) → the batch ``get_batch`` gives for the same indices."""
    columns = list(zip(*items))
    return (stack_images(columns[0]), *(torch.stack(column) for column in columns[1:]))
