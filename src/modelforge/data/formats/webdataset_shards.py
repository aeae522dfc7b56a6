"""WebDataset tar shards as a data source: samples are the files of a tar that share a key (``0001.txt``,
``0001.cls``), read shard by shard with ``webdataset``, never the whole set at once.

``data.path`` is a folder of ``*.tar`` shards, one shard, or a brace pattern (``shards/train-{000..009}.tar``).
Shards whose names start with ``train``, ``val``/``validation``/``valid``/``dev`` or ``test`` make those splits;
otherwise every shard is training data the task holds val/test out of. A sample's columns are its file extensions
(``txt``, ``cls``, ``en``, ``es``, …) decoded as UTF-8 text, plus the fields of a ``json`` member. ``rank_shards``
is what one of ``world_size`` processes reads: every ``world_size``-th shard from its rank on (webdataset's
``split_by_node``), so ranks read disjoint shards.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelforge.core.errors import DataError, MissingDependencyError

HINT = "pip install webdataset (or `pip install modelforge[bigdata]`)"
_PREFIX = re.compile(r"^(train|validation|valid|val|dev|test)(?=[-_.\d]|$)", re.IGNORECASE)
_SPLITS = {"train": "train", "validation": "val", "valid": "val", "val": "val", "dev": "val", "test": "test"}


def _webdataset() -> Any:
    try:
        import webdataset
    except ImportError:
        raise MissingDependencyError(f"reading WebDataset shards needs the webdataset package: {HINT}") from None
    return webdataset


def shard_paths(path: str) -> list[Path]:
    """The shards ``path`` names (a folder's ``*.tar``, sorted; a file; a brace pattern), each checked to exist."""
    if "{" in path:
        try:
            from braceexpand import braceexpand  # installed with webdataset
        except ImportError:
            raise MissingDependencyError(f"expanding the shard pattern {path} needs webdataset: {HINT}") from None
        shards = [Path(p).expanduser() for p in braceexpand(path)]
    else:
        root = Path(path).expanduser()
        shards = sorted(root.glob("*.tar")) if root.is_dir() else [root]
    if not shards:
        raise DataError(f"{path}: no .tar shards in this folder")
    missing = [p for p in shards if not p.is_file()]
    if missing:
        raise DataError(f"{missing[0]}: shard not found ({len(missing)} of {len(shards)} missing); check data.path")
    return shards


def is_shard_source(path: str) -> bool:
    if "{" in path and ".tar" in path:
        return True
    root = Path(path).expanduser()
    return root.suffix == ".tar" or (root.is_dir() and any(root.glob("*.tar")))


def split_shards(shards: list[Path]) -> dict[str, list[Path]]:
    """Shards grouped by the split their name starts with; all in ``train`` when none is named so."""
    named: dict[str, list[Path]] = {}
    for shard in shards:
        match = _PREFIX.match(shard.name)
        named.setdefault(_SPLITS[match.group(1).lower()] if match else "", []).append(shard)
    if "" in named:
        if len(named) > 1:
            raise DataError(f"{named[''][0]}: some shards are named by split (train-*, val-*, test-*) and this one is "
                            "not; name every shard by its split, or none")
        return {"train": named[""]}
    if "train" not in named:
        raise DataError(f"{shards[0].parent}: shards for {sorted(named)} but none named train-*")
    return named


def rank_shards(shards: list[Path], rank: int, world_size: int) -> list[Path]:
    """Shards ``rank``, ``rank + world_size``, …: a disjoint share per process (every shard read by exactly one)."""
    if world_size <= 1:
        return shards
    if len(shards) < world_size:
        raise DataError(f"{len(shards)} shard(s) for {world_size} processes: write at least one shard per process "
                        "so that each reads its own share")
    return shards[rank::world_size]


def _decoded(sample: dict[str, Any], shard: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, value in sample.items():
        if name.startswith("__"):
            continue
        if not isinstance(value, bytes):
            row[name] = value
            continue
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{shard}: sample {sample.get('__key__')!r}: member .{name} is not UTF-8 text") from None
        if name == "json":
            try:
                fields = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"{shard}: sample {sample.get('__key__')!r}: bad .json member ({exc})") from None
            row.update(fields if isinstance(fields, dict) else {"json": fields})
        else:
            row[name] = text
    return row


def iter_samples(shards: list[Path]) -> Iterator[dict[str, Any]]:
    """Every sample of ``shards`` in order, as ``{column: value}`` with text members decoded."""
    wds = _webdataset()
    for shard in shards:  # one WebDataset per shard: the error names the shard, and the order is fixed
        pipeline = wds.WebDataset(str(shard), shardshuffle=False, nodesplitter=None, workersplitter=None,
                                  empty_check=False)
        try:
            for sample in pipeline:
                yield _decoded(sample, str(shard))
        except (OSError, ValueError) as exc:
            raise DataError(f"{shard}: not a readable tar shard ({str(exc)[:200]})") from None


def columns_of(shards: list[Path]) -> list[str]:
    """The columns of the first sample."""
    for row in iter_samples(shards[:1]):
        return list(row)
    raise DataError(f"{shards[0]}: the shard holds no samples")
