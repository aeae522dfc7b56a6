"""Image classification data from a record source (records.py): a local Hugging Face dataset or WebDataset shards,
indexed without decoding a pixel, read per item by the datasets of data/lazy_record_images.py.

``index_image_records`` gives, per split of the source (its own train/val/test, names normalised as for the text
tasks), the items' positions in the source and their labels. The classes are the training split's label names
sorted — numerically when every name is an integer (``.cls`` members, int columns), else as text, as an image
folder's class folders are. Bad images (failing an image folder's header check), and samples or rows without an
image or a label, are skipped with a count or stop the run (``data.on_error``), as in a folder.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelforge.core.errors import DataError
from modelforge.data.formats.image_folder import report_skipped

log = logging.getLogger("modelforge.data")
_INTEGER = re.compile(r"-?\d+")


@dataclass
class ImageRecords:
    format: str
    parts: dict[str, tuple[np.ndarray, np.ndarray]]  # split → (positions in the source, label indices)
    classes: list[str]
    image_column: str | None
    label_column: str | None
    skipped: int
    make: Any  # (positions, labels, channels, size) → an EncodedImageDataset over this source


def class_order(names: set[str]) -> list[str]:
    """Label names sorted: by value when all are integers (``2`` before ``10``), else as text."""
    if names and all(_INTEGER.fullmatch(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _encode(named: dict[str, tuple[list[int], list[str]]], where: str) -> tuple[dict, list[str]]:
    classes = class_order(set(named["train"][1]))
    if not classes:
        raise DataError(f"{where}: no readable images found")
    index = {name: i for i, name in enumerate(classes)}
    parts = {}
    for split, (ids, labels) in named.items():
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise DataError(f"{where} ({split}): label {unknown[0]!r} is not among the training classes {classes}")
        parts[split] = (np.asarray(ids, dtype=np.int64), np.asarray([index[y] for y in labels], dtype=np.int64))
    return parts, classes


def index_image_records(path: str, format: str, image_column: str | None = None, label_column: str | None = None,
                        on_error: str = "skip") -> ImageRecords:
    """The index of ``path`` read as ``format`` (``hf`` or ``webdataset``); see the module docstring."""
    if format == "hf":
        return _index_hf(path, image_column, label_column, on_error)
    return _index_shards(path, image_column, label_column, on_error)


def _index_hf(path: str, image_column: str | None, label_column: str | None, on_error: str) -> ImageRecords:
    import datasets

    from modelforge.data.cache import cache_dir
    from modelforge.data.formats.hf_dataset import open_hf_splits
    from modelforge.data.formats.hf_images import image_column_of, label_column_of, raw_images
    from modelforge.data.lazy_record_images import ArrowImageDataset

    splits = open_hf_splits(Path(path).expanduser(), cache_dir("hf_datasets"))
    image_column = image_column_of(splits["train"], image_column, path)
    label_column = label_column_of(splits["train"], label_column, image_column, path)
    named, skipped, start = {}, [], 0
    for split, dataset in splits.items():
        rows = _labelled_rows(dataset, split, image_column, label_column, f"{path} ({split})", on_error, skipped)
        if rows is not None:
            named[split] = ([start + row for row in rows[0]], rows[1])
        start += len(dataset)  # the concatenated source numbers every split's rows, used or not
    report_skipped(skipped, f"image(s) of {path}")
    parts, classes = _encode(named, path)
    source = datasets.concatenate_datasets([raw_images(d, image_column) for d in splits.values()])

    def make(ids: np.ndarray, labels: np.ndarray, channels: int, size: int) -> ArrowImageDataset:
        return ArrowImageDataset(source, image_column, path, ids, labels, channels, size)

    return ImageRecords("hf", parts, classes, image_column, label_column, len(skipped), make)


def _labelled_rows(dataset: Any, split: str, image_column: str, label_column: str, where: str, on_error: str,
                   skipped: list[tuple[str, str]]) -> tuple[list[int], list[str]] | None:
    """(rows, labels) of one split whose image passes the header check and that have a label; the others skipped
    (added to ``skipped``) or failing. None for a held-out split without a single label (the Hub's test splits of
    labels -1), which is then not used: it says nothing about accuracy."""
    from modelforge.data.formats.hf_images import check_images, raw_images, read_labels

    labels = list(read_labels(dataset, label_column))
    if split != "train" and all(label is None for label in labels):
        log.warning("%s: no labels in this split: not used", where)
        return None
    rows, kept = [], []
    for row, (problem, label) in enumerate(zip(check_images(raw_images(dataset, image_column), image_column, where),
                                               labels, strict=True)):
        problem = problem or (None if label is not None else f"{where} row {row}: no label")
        if problem:
            if on_error == "fail":
                raise DataError(problem)
            skipped.append((f"{where} row {row}", problem))
            continue
        rows.append(row)
        kept.append(label)
    return rows, kept


def _index_shards(path: str, image_column: str | None, label_column: str | None, on_error: str) -> ImageRecords:
    from modelforge.data.formats.tar_index import index_tar_images
    from modelforge.data.formats.webdataset_shards import shard_paths, split_shards
    from modelforge.data.lazy_record_images import TarImageDataset

    by_split = split_shards(shard_paths(path))
    shards = [shard for group in by_split.values() for shard in group]
    index = index_tar_images(shards, image_column, label_column, on_error)
    report_skipped(index.skipped, f"sample(s) of {path}")
    split_of = np.asarray([split for split, group in by_split.items() for _ in group])
    named = {}
    for split in by_split:
        ids = np.flatnonzero(split_of[index.shard] == split) if len(index.shard) else np.zeros(0, dtype=np.int64)
        named[split] = (ids.tolist(), [index.labels[i] for i in ids])
    parts, classes = _encode(named, path)

    def make(ids: np.ndarray, labels: np.ndarray, channels: int, size: int) -> TarImageDataset:
        return TarImageDataset(index.shards, index.shard, index.offset, index.size, index.names, ids, labels,
                               channels, size)

    return ImageRecords("webdataset", parts, classes, image_column or index.image_column,
                        label_column or index.label_column, len(index.skipped), make)
