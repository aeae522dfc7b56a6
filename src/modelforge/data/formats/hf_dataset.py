"""Local Hugging Face ``datasets`` as a data source: a ``save_to_disk`` folder, or Parquet / Arrow / JSON Lines files
read through ``load_dataset`` — Arrow tables memory-mapped from disk, so rows are read when they are used.

A ``save_to_disk`` folder is mapped as it is (no copy). Parquet and JSON Lines files are converted once into
``datasets``' Arrow cache (under the modelforge cache folder), then mapped; Arrow files are read in place. The
splits are the dataset's own (``validation``/``valid``/``dev`` are ``val``) — a folder of ``train-*.parquet`` and
``test-*.parquet`` gives two — or one ``train`` split the task holds val/test out of. ``rank_share`` is the part
of a split one of ``world_size`` processes reads (``datasets.distributed.split_dataset_by_node``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelforge.core.errors import DataError, MissingDependencyError

HINT = "pip install datasets (or `pip install modelforge[bigdata]`)"
SAVED_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")
BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".json": "json"}
SPLIT_NAMES = {"train": "train", "validation": "val", "valid": "val", "val": "val", "dev": "val", "test": "test"}


def _datasets() -> Any:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local data only: nothing is downloaded at run time
    try:
        import datasets
    except ImportError:
        raise MissingDependencyError(f"reading a Hugging Face dataset needs the datasets package: {HINT}") from None
    datasets.disable_progress_bars()
    return datasets


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in SAVED_MARKERS)


def data_files(path: Path) -> list[Path]:
    """The Parquet/Arrow/JSON Lines files of ``path`` (a file, or a folder searched recursively), sorted."""
    if path.is_file():
        return [path] if path.suffix.lower() in BUILDERS else []
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".parquet", ".arrow"))
    return found or sorted(p for p in path.rglob("*.jsonl") if p.is_file())


def holds_data_files(folder: Path) -> bool:
    """Whether ``folder`` holds Parquet/Arrow/JSON Lines files anywhere below it, as ``data_files`` finds them —
    answered without walking an image folder: the walk stops at the first image file (loose images make an image
    folder, not a dataset of tables), so detecting the format of 200,000 images reads a folder or two."""
    from modelforge.data.formats.image_folder import IMAGE_SUFFIX_TUPLE

    pending = [str(folder)]
    while pending:
        with os.scandir(pending.pop(0)) as entries:  # breadth first: a dataset's files sit near the top
            for entry in entries:
                name = entry.name.lower()
                if name.endswith((".parquet", ".arrow", ".jsonl")) and entry.is_file():
                    return True
                if name.endswith(IMAGE_SUFFIX_TUPLE):
                    return False
                if entry.is_dir():
                    pending.append(entry.path)
    return False


def dataset_files(path: Path) -> list[Path]:
    """Every file that makes up the dataset: what a cache key built from sizes and modification times covers. The
    token files built from it (``.modelforge-tokens/`` inside a save_to_disk folder) are not part of it."""
    if is_saved_dataset(path):
        from modelforge.data.token_file import FOLDER

        return sorted(p for p in path.rglob("*") if p.is_file() and FOLDER not in p.relative_to(path).parts)
    return data_files(path)


def open_hf_splits(path: Path, cache: Path | None = None) -> dict[str, Any]:
    """``{train|val|test: datasets.Dataset}`` of a local dataset (see the module docstring)."""
    datasets = _datasets()
    if is_saved_dataset(path):
        try:
            loaded = datasets.load_from_disk(str(path))
        except (OSError, ValueError, FileNotFoundError) as exc:
            raise DataError(f"{path}: not a readable save_to_disk folder ({str(exc)[:200]})") from None
    else:
        files = data_files(path)
        if not files:
            raise DataError(f"{path}: no save_to_disk dataset and no .parquet, .arrow or .jsonl files in it")
        builder = BUILDERS[files[0].suffix.lower()]
        options = {"data_files": str(files[0])} if path.is_file() else {"data_dir": str(path)}
        try:
            loaded = datasets.load_dataset(builder, cache_dir=str(cache) if cache else None, **options)
        except Exception as exc:  # datasets raises many kinds (DatasetGenerationError, ValueError, ArrowInvalid)
            raise DataError(f"{path}: datasets cannot read these {builder} files ({str(exc)[:200]})") from None
    return _named_splits(loaded, path)


def _named_splits(loaded: Any, path: Path) -> dict[str, Any]:
    if not hasattr(loaded, "keys"):  # one Dataset
        return {"train": loaded}
    splits: dict[str, Any] = {}
    for name in loaded:
        ours = SPLIT_NAMES.get(name.lower())
        if ours and ours not in splits:
            splits[ours] = loaded[name]
    if "train" not in splits:
        if len(loaded) != 1:
            raise DataError(f"{path}: no train split among {sorted(loaded)}; name one split train")
        splits = {"train": next(iter(loaded.values()))}
    return splits


def rank_share(dataset: Any, rank: int, world_size: int) -> Any:
    """The rows one of ``world_size`` processes reads (contiguous, disjoint; together all of them)."""
    if world_size <= 1:
        return dataset
    from datasets.distributed import split_dataset_by_node

    return split_dataset_by_node(dataset, rank=rank, world_size=world_size)


def columns_of(dataset: Any) -> list[str]:
    return list(dataset.column_names)


def iter_rows(dataset: Any, columns: list[str], batch_size: int = 1000) -> Iterator[dict[str, Any]]:
    """Rows holding only ``columns``, read a batch at a time from the memory-mapped table; a ``ClassLabel``
    column gives its label names, not integers."""
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise DataError(f"no column {missing[0]!r} in the dataset; its columns: {', '.join(dataset.column_names)}")
    names = {c: dataset.features[c].int2str for c in columns if hasattr(dataset.features[c], "int2str")}
    for batch in dataset.select_columns(columns).iter(batch_size=batch_size):
        for i in range(len(batch[columns[0]])):
            yield {c: names[c](batch[c][i]) if c in names else batch[c][i] for c in columns}
