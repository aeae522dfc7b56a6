"""An index of the images in WebDataset tar shards, for reading any one of them by position.

The trainer's batch plan is random (a function of seed, epoch and index), so a sample must be readable on its own,
not only in shard order. ``index_tar_images`` walks each shard's tar headers once with the standard ``tarfile``
module — which seeks over member data without reading it — and keeps per sample the shard, byte offset and size of
its image member, plus its label (the small ``.cls``/``.txt``/``.json`` member, read while walking). A sample is
the run of consecutive members sharing a key: the name up to the first dot of its last path part (webdataset's
rule: ``a/0001.seg.png`` → key ``a/0001``, extension ``seg.png``). Each shard's index is saved beside it and
reused while the shard is unchanged (tar_index_cache.py), so the headers are walked once, not on every run.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np

from modelforge.core.errors import DataError
from modelforge.data.formats.image_folder import IMAGE_SUFFIXES, check_image_head
from modelforge.data.formats.tar_index_cache import ShardIndex, cached_shard_index

IMAGE_EXTENSIONS = tuple(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
LABEL_EXTENSIONS = ("cls", "txt", "json")  # the label member, in order of preference
JSON_LABEL_FIELDS = ("label", "labels", "cls")
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


@dataclass
class TarImageIndex:
    """Per sample of all shards, in shard order: where its image is and its label text. Numpy arrays, so forked
    DataLoader workers share them without copying."""

    shards: list[Path]
    shard: np.ndarray  # (N,) int32: position in ``shards``
    offset: np.ndarray  # (N,) int64: first byte of the image member's data
    size: np.ndarray  # (N,) int64: its length in bytes
    names: np.ndarray  # (N,) bytes: the image member's name (for messages)
    labels: list[str]
    skipped: list[tuple[str, str]]
    image_column: str | None  # the image extension every sample used (None when they differ)
    label_column: str | None  # the label member's extension or .json field every sample used


@dataclass
class _Member:
    name: str
    ext: str
    offset: int
    size: int


def _members(tar: tarfile.TarFile) -> Iterator[_Member]:
    """The regular files of an open tar, in order, without reading their data."""
    while True:
        info = tar.next()
        if info is None:
            return
        tar.members = []  # tarfile keeps every header it has seen: a million-member shard would hold them all
        match = _KEY_EXT.match(info.name)
        if info.isfile() and match:
            yield _Member(info.name, match.group(2).lower(), info.offset_data, info.size)


def _samples(shard: Path) -> Iterator[tuple[str, list[_Member]]]:
    """(key, members) per sample of one shard."""
    try:
        with tarfile.open(shard, mode="r:") as tar:
            key, group = None, []
            for member in _members(tar):
                member_key = _KEY_EXT.match(member.name).group(1)
                if member_key != key and group:
                    yield key, group
                    group = []
                key = member_key
                group.append(member)
            if group:
                yield key, group
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"{shard}: not a readable tar shard ({exc.__class__.__name__}: {exc})") from None


def _read(file: BinaryIO, member: _Member, limit: int | None = None) -> bytes:
    file.seek(member.offset)
    return file.read(member.size if limit is None else min(limit, member.size))


def _label(file: BinaryIO, members: dict[str, _Member], label_column: str | None, where: str) -> tuple[str, str]:
    label, source = _label_text(file, members, label_column, where)
    if not label:
        raise DataError(f"{where}: the label is empty")
    return label, source


def _label_text(file: BinaryIO, members: dict[str, _Member], label_column: str | None, where: str
                ) -> tuple[str, str]:
    """(the sample's label text, where it came from): member ``label_column`` (or a field so named of its .json),
    else the first of .cls/.txt, else a label/labels/cls field of its .json."""
    if label_column and label_column in members:
        return _text(_read(file, members[label_column]), where, label_column), label_column
    if not label_column:
        for ext in LABEL_EXTENSIONS[:2]:
            if ext in members:
                return _text(_read(file, members[ext]), where, ext), ext
    if "json" in members:
        try:
            fields = json.loads(_read(file, members["json"]))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{where}: bad .json member ({exc})") from None
        for name in [label_column] if label_column else JSON_LABEL_FIELDS:
            if isinstance(fields, dict) and fields.get(name) is not None:
                return str(fields[name]).strip(), name
    wanted = f"a .{label_column} member or .json field {label_column!r}" if label_column else \
        "a .cls, .txt or .json label member"
    raise DataError(f"{where}: no label: the sample has {', '.join('.' + e for e in sorted(members))}, not {wanted}")


def _text(raw: bytes, where: str, ext: str) -> str:
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise DataError(f"{where}: member .{ext} is not UTF-8 text") from None


def _image_member(members: dict[str, _Member], image_column: str | None, where: str) -> _Member:
    if image_column:
        if image_column not in members:
            raise DataError(f"{where}: no .{image_column} member (data.image_column); it has "
                            f"{', '.join('.' + e for e in sorted(members))}")
        return members[image_column]
    images = [members[e] for e in members if e.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS]  # seg.png is an image too
    if len(images) != 1:
        raise DataError(f"{where}: {'no' if not images else 'more than one'} image member (.png, .jpg, .webp, …) in "
                        f"{', '.join('.' + e for e in sorted(members))}; set data.image_column to its extension")
    return images[0]


def index_tar_images(shards: list[Path], image_column: str | None = None, label_column: str | None = None,
                     on_error: str = "skip") -> TarImageIndex:
    """Index every sample of ``shards`` (see the module docstring), each shard's index read from its saved entry
    when the shard is unchanged (tar_index_cache.py). A sample whose image fails the header check of an image
    folder's files, or that has no image or no label, is skipped and counted (``on_error=skip``) or stops the run
    with a one-line DataError naming shard and member (``fail``; a saved entry's first skipped sample is that
    error)."""
    rules = {"image_column": image_column, "label_column": label_column, "images": IMAGE_EXTENSIONS,
             "labels": LABEL_EXTENSIONS, "json_fields": JSON_LABEL_FIELDS}
    parts = []
    for shard in shards:
        part = cached_shard_index(shard, rules, partial(index_shard, shard, image_column, label_column, on_error))
        if on_error == "fail" and part.skipped:
            raise DataError(part.skipped[0][1])
        parts.append(part)
    counts = [len(part.labels) for part in parts]
    image_sources = {ext for part in parts for ext in part.image_sources}
    label_sources = {source for part in parts for source in part.label_sources}
    return TarImageIndex(
        shards, np.repeat(np.arange(len(shards), dtype=np.int32), counts),
        _joined([part.offset for part in parts], np.int64), _joined([part.size for part in parts], np.int64),
        _joined([part.names for part in parts], np.bytes_), [y for part in parts for y in part.labels],
        [s for part in parts for s in part.skipped], _the_one(image_sources), _the_one(label_sources))


def _joined(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)


def index_shard(shard: Path, image_column: str | None, label_column: str | None, on_error: str) -> ShardIndex:
    """Walk one shard's tar headers: its usable samples and the skipped ones (``on_error=fail`` raises instead)."""
    offsets, sizes, names, labels, skipped = [], [], [], [], []
    image_sources, label_sources = set(), set()
    with open(shard, "rb") as file:  # a second handle: reading label and image heads leaves tarfile's alone
        for key, group in _samples(shard):
            members = {m.ext: m for m in group}
            where = f"{shard}: {key}"
            try:
                image = _image_member(members, image_column, where)
                where = f"{shard}: {image.name}"
                check_image_head(_read(file, image, 32), partial(_read, file, image), where)
                label, label_source = _label(file, members, label_column, f"{shard}: {key}")
            except DataError as exc:
                if on_error == "fail":
                    raise
                skipped.append((where, str(exc)))
                continue
            offsets.append(image.offset)
            sizes.append(image.size)
            names.append(image.name.encode("utf-8", "surrogateescape"))
            labels.append(label)
            image_sources.add(image.ext)
            label_sources.add(label_source)
    return ShardIndex(np.asarray(offsets, dtype=np.int64), np.asarray(sizes, dtype=np.int64),
                      np.asarray(names, dtype=np.bytes_), labels, skipped, sorted(image_sources),
                      sorted(label_sources))


def _the_one(values: set[str]) -> str | None:
    return next(iter(values)) if len(values) == 1 else None

